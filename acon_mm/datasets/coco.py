"""mmdet's ``CocoDataset`` that checks its annotation file and names bad data."""
import os.path as osp
from typing import Any, Callable, Dict, List

from mmdet.datasets import CocoDataset
from mmengine.fileio import get as fileio_get
from mmengine.logging import print_log
from mmengine.registry import DATASETS

from .pipeline_guard import GuardedPipelineMixin
from .validation import DataValidationError, check_coco, format_problems

__all__ = ['ValidatedCocoDataset']

BAD_BOX_POLICIES = ('error', 'warn', 'ignore')


def how_to_set_classes(names: List[str]) -> str:
    """The fix for a config whose classes are not those of its data."""
    return (f'Set the classes of the data set in the config: '
            f'metainfo=dict(classes={tuple(names)!r}) in '
            'train_dataloader.dataset, val_dataloader.dataset and '
            'test_dataloader.dataset, and model.bbox_head.num_classes='
            f'{len(names)} (see configs/demo/retinanet_r18-aconc_fpn_demo.py)')


def check_coco_classes(ann_file: str, names: List[str], classes: List[str]) -> None:
    """Refuse classes of which none is a category of the COCO file.

    Args:
        ann_file (str): the annotation file, for the message.
        names (list[str]): its categories' names.
        classes (list[str]): the config's ``metainfo.classes`` (or the dataset
            type's default, COCO's 80).

    Raises:
        DataValidationError: naming the file, its categories, the config's
            classes and how to set them. Classes some of which are missing
            from the file only get a warning.
    """
    if not classes:
        return
    common = [c for c in classes if c in names]
    shown = classes if len(classes) <= 12 else classes[:12] + ['...']
    if not common:
        raise DataValidationError(
            f'{ann_file}: none of the {len(classes)} classes of the '
            f'config ({shown}) is a category of this file; its categories '
            f'are {names}. Every image would be dropped (training) or '
            f'scored against nothing (evaluation). ' + how_to_set_classes(names))
    missing = [c for c in classes if c not in names]
    if missing:
        print_log(f'{ann_file}: classes of the config that are not '
                  f'categories of this file (no annotation will have '
                  f'them): {missing}', logger='current', level=30)


@DATASETS.register_module()
class ValidatedCocoDataset(GuardedPipelineMixin, CocoDataset):
    """``CocoDataset`` that checks its data before training reaches it.

    At construction (before the first iteration) the annotation file is parsed
    once and checked (:func:`acon_mm.datasets.check_coco`): a file that does
    not parse (named with line and column), a missing ``images`` /
    ``annotations`` / ``categories``, an annotation whose ``category_id`` is
    not in ``categories`` or whose ``image_id`` is not in ``images``, a
    duplicate id, and missing image files raise
    :class:`~acon_mm.datasets.DataValidationError` naming the file and every
    culprit. Boxes with non-positive size or outside their image are reported
    with their annotation id, image id and file name according to
    ``bad_box`` (stock mmdet drops such boxes silently).

    The config's classes (``metainfo['classes']``, COCO's 80 by default) are
    checked against the file's ``categories``: none in common (e.g. a COCO
    config on a data set of other classes) raises
    :class:`~acon_mm.datasets.DataValidationError` naming the file, its
    categories, the config's classes and how to set ``metainfo``; so does a
    training set that is empty after mmdet's filtering (``filter_cfg``), where
    mmengine would otherwise die in numpy (``need at least one array to
    concatenate``). Classes missing from the file are logged.

    While training, a sample whose image size differs from the size the
    annotation file gives, or any exception in a transform, is raised as
    :class:`~acon_mm.datasets.DataSampleError` naming the image, its
    annotation ids and the transform.

    Args:
        bad_box (str): ``'error'`` raise, ``'warn'`` (default) log every bad
            box once and leave it to mmdet (which drops it), ``'ignore'``.
        check_files (bool): check that every image file exists at
            construction. Defaults to True.
        box_tolerance (float): pixels a box may extend beyond its image.
        **kwargs: everything :class:`mmdet.datasets.CocoDataset` takes.
    """

    def __init__(self, *args, bad_box: str = 'warn', check_files: bool = True,
                 box_tolerance: float = 1.0, **kwargs) -> None:
        if bad_box not in BAD_BOX_POLICIES:
            raise ValueError(f'ValidatedCocoDataset: bad_box={bad_box!r}; '
                             f'expected one of {BAD_BOX_POLICIES}')
        self.bad_box = bad_box
        self.check_files = check_files
        self.box_tolerance = box_tolerance
        self.box_problems: List[str] = []
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        content = fileio_get(self.ann_file, backend_args=self.backend_args)
        data, boxes = check_coco(
            self.ann_file,
            img_prefix=self.data_prefix.get('img', None),
            check_files=self.check_files,
            box_tolerance=self.box_tolerance,
            content=content)
        self.box_problems = boxes
        if boxes and self.bad_box != 'ignore':
            msg = format_problems(
                f'bad boxes in {self.ann_file} (mmdet drops boxes with '
                'non-positive size or no overlap with their image)', boxes)
            if self.bad_box == 'error':
                raise DataValidationError(msg)
            print_log(msg, logger='current', level=30)

        api = self.COCOAPI

        def from_parsed(_path: str) -> Any:
            coco = api(None)
            coco.dataset = data
            coco.createIndex()
            # mmdet's COCO wrapper aliases these in __init__
            coco.img_ann_map = coco.imgToAnns
            coco.cat_img_map = coco.catToImgs
            return coco

        self._check_classes(data)
        self.COCOAPI = from_parsed  # the file is parsed once, above
        try:
            return super().load_data_list()
        finally:
            del self.COCOAPI

    def _check_classes(self, data: Dict[str, Any]) -> None:
        """Refuse a config whose classes are not in the file's categories."""
        check_coco_classes(self.ann_file, [c.get('name') for c in data.get('categories', [])],
                           list(self.metainfo.get('classes') or ()))

    def filter_data(self) -> List[dict]:
        """mmdet's filtering; an empty result is refused with the reason."""
        kept = super().filter_data()
        if not kept and self.data_list:
            classes = list(self.metainfo.get('classes') or ())
            raise DataValidationError(
                f'{self.ann_file}: all {len(self.data_list)} images were '
                f'dropped by filter_cfg={self.filter_cfg} (images without an '
                f'annotation of the config\'s classes {classes[:12]}'
                f'{"..." if len(classes) > 12 else ""} or smaller than '
                'min_size). Check that the annotations use these classes, or '
                'set metainfo=dict(classes=...) to the categories of the file.')
        return kept

    def parse_data_info(self, raw_data_info: dict) -> Dict[str, Any]:
        data_info = super().parse_data_info(raw_data_info)
        if isinstance(data_info, dict):
            data_info['ann_ids'] = [
                a.get('id') for a in raw_data_info['raw_ann_info']]
        return data_info

    def check_sample(self, transform: Callable, results: Dict[str, Any],
                     data_info: Dict[str, Any]) -> None:
        if 'img' in results and not results.get('_acon_size_checked'):
            results['_acon_size_checked'] = True
            h, w = results['img'].shape[:2]
            eh, ew = data_info.get('height'), data_info.get('width')
            # only right after loading: later transforms resize on purpose
            if results.get('ori_shape', (h, w))[:2] == (h, w) and \
                    eh is not None and (h, w) != (eh, ew):
                raise DataValidationError(
                    f'image {results.get("img_path")} is {w}x{h} (WxH) but '
                    f'{osp.basename(str(self.ann_file))} says {ew}x{eh} for '
                    f'image id {data_info.get("img_id")}; its boxes would be '
                    'misplaced')
