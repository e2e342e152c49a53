"""mmseg's ``CityscapesDataset`` that names bad label maps and missing files."""
from typing import Any, Callable, Dict, List

import numpy as np
from mmengine.registry import DATASETS
from mmseg.datasets import CityscapesDataset

from .pipeline_guard import GuardedPipelineMixin
from .validation import DataValidationError, check_seg_map, format_problems, iter_missing

__all__ = ['ValidatedCityscapesDataset']


@DATASETS.register_module()
class ValidatedCityscapesDataset(GuardedPipelineMixin, CityscapesDataset):
    """``CityscapesDataset`` that checks its files and label maps.

    At construction: no image found under ``data_prefix.img_path``, or an
    image without its ``*_gtFine_labelTrainIds.png``, raises
    :class:`~acon_mm.datasets.DataValidationError` naming the directory or
    the files. With ``scan_labels=True`` every label map is also read and
    checked there (values, size), before the first iteration.

    While training, every label map is checked when its sample is loaded
    (right after ``LoadAnnotations``): values outside the train ids
    ``0..18`` and the ignore index 255, or a label map whose size differs
    from its image's, raise :class:`~acon_mm.datasets.DataSampleError`
    naming the label file, the image and the bad values. Any other exception
    in a transform is re-raised naming the sample's files and the transform.

    Args:
        scan_labels (bool): read and check every label map at construction
            (one pass over the label files). Defaults to False.
        **kwargs: everything :class:`mmseg.datasets.CityscapesDataset` takes.
    """

    def __init__(self, *args, scan_labels: bool = False, **kwargs) -> None:
        self.scan_labels = scan_labels
        super().__init__(*args, **kwargs)

    @property
    def num_classes(self) -> int:
        return len(self.metainfo['classes'])

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        img_dir = self.data_prefix.get('img_path', '')
        if not data_list:
            raise DataValidationError(
                f'no images ending in {self.img_suffix!r} found under '
                f'{img_dir} (ann_file={self.ann_file!r}); check data_root and '
                'data_prefix')
        missing = iter_missing(
            (f'image {d["img_path"]}', d['img_path']) for d in data_list)
        missing += iter_missing(
            (f'label of {d["img_path"]}', d['seg_map_path'])
            for d in data_list if d.get('seg_map_path'))
        if missing:
            raise DataValidationError(format_problems(
                f'Cityscapes files missing (labels must be '
                f'*{self.seg_map_suffix}, written by cityscapesscripts\' '
                'createTrainIdLabelImgs.py)', missing))
        if self.scan_labels:
            self._scan(data_list)
        return data_list

    def _scan(self, data_list: List[dict]) -> None:
        from PIL import Image
        problems = []
        for d in data_list:
            if not d.get('seg_map_path') or '://' in d['seg_map_path']:
                continue
            with Image.open(d['img_path']) as im:
                w, h = im.size
            seg = np.asarray(Image.open(d['seg_map_path']))
            try:
                check_seg_map(seg, d['seg_map_path'], self.num_classes,
                              self.ignore_index, (h, w), d['img_path'])
            except DataValidationError as err:
                problems.append(str(err))
        if problems:
            raise DataValidationError(
                format_problems('bad Cityscapes label maps', problems))

    def check_sample(self, transform: Callable, results: Dict[str, Any],
                     data_info: Dict[str, Any]) -> None:
        if 'gt_seg_map' not in results or results.get('_acon_seg_checked'):
            return
        results['_acon_seg_checked'] = True
        img = results.get('img')
        # right after LoadAnnotations the image has its loaded size
        img_shape = img.shape[:2] if img is not None and \
            tuple(results.get('ori_shape', img.shape[:2])[:2]) == \
            tuple(img.shape[:2]) else None
        check_seg_map(results['gt_seg_map'], results.get('seg_map_path'),
                      self.num_classes, self.ignore_index, img_shape,
                      results.get('img_path'))
