"""An ImageNet-layout classification data set that names bad data.

mmpretrain's ``ImageNet``/``CustomDataset`` take the classes of a folder-layout
split from the folders it finds: a validation folder that misses one class
silently shifts every later label by one, and an unreadable image surfaces as
an anonymous error in a worker. :class:`ValidatedImageNet` reads the same two
layouts and refuses, at construction, with the file or folder named:

* folder layout (``ann_file=''``): ``<data_prefix>/<class>/<image>``; with
  ``metainfo=dict(classes=...)`` each class folder must exist and hold an
  image and no other folder may be there (labels are the index in
  ``classes``, so train and val agree); without it the sorted folders are the
  classes and ``num_classes`` (if given) must match their number;
* annotation-file layout (ImageNet's ``meta/train.txt``): one ``path label``
  per line; a malformed line or a label outside ``0..num_classes-1`` is named
  with file and line, and (``check_files``) missing images are listed.

While training, an image that cannot be decoded (or any failure in a
transform) is raised as :class:`~acon_mm.datasets.DataSampleError` naming the
image (:class:`~acon_mm.datasets.pipeline_guard.GuardedPipelineMixin`).

It depends on mmengine alone; the samples (``img_path``, ``gt_label``) are what
mmpretrain's transforms and ``PackInputs`` expect.
"""
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from .pipeline_guard import GuardedPipelineMixin
from .validation import DataValidationError, format_problems

__all__ = ['ValidatedImageNet', 'IMAGE_EXTENSIONS']

#: image file extensions of a folder-layout split (lower case)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                    '.tiff', '.webp')


@DATASETS.register_module()
class ValidatedImageNet(GuardedPipelineMixin, BaseDataset):
    """ImageNet-layout classification data set that checks itself (see module doc).

    Args:
        ann_file (str): ``path label`` list (relative to ``data_root``), or
            ``''`` for the folder layout.
        metainfo (dict, optional): ``dict(classes=(...))``; in the folder
            layout it fixes the class order (set it for val so that labels
            agree with train).
        data_root (str): root of the data set.
        data_prefix (str | dict): images folder (``'train'``) or
            ``dict(img_path='train')``.
        num_classes (int, optional): the number of classes the model
            predicts; labels and class folders are checked against it.
        check_files (bool): in the annotation-file layout, check that every
            listed image exists. Default: True.
        extensions (Sequence[str]): image extensions of the folder layout.
        **kwargs: everything :class:`mmengine.dataset.BaseDataset` takes
            (``pipeline``, ``test_mode``, ...).
    """

    def __init__(self, ann_file: str = '', metainfo: Optional[dict] = None,
                 data_root: str = '', data_prefix: Union[str, dict] = '',
                 num_classes: Optional[int] = None, check_files: bool = True,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, **kwargs):
        if isinstance(data_prefix, str):
            data_prefix = dict(img_path=data_prefix)
        self.num_classes = num_classes
        self.check_files = check_files
        self.extensions = tuple(e.lower() for e in extensions)
        super().__init__(ann_file=ann_file, metainfo=metainfo,
                         data_root=data_root, data_prefix=data_prefix,
                         **kwargs)

    @property
    def img_prefix(self) -> str:
        return self.data_prefix.get('img_path', '') or self.data_root

    def _classes(self) -> Optional[List[str]]:
        classes = self._metainfo.get('classes')
        return list(classes) if classes else None

    def load_data_list(self) -> List[dict]:
        if self.ann_file and not osp.isdir(self.ann_file):
            data = self._from_ann_file()
        else:
            data = self._from_folders()
        if not data:
            raise DataValidationError(
                f'{type(self).__name__}: no images found in '
                f'{self.ann_file or self.img_prefix}')
        return data

    # -- annotation-file layout ------------------------------------------
    def _from_ann_file(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise DataValidationError(
                f'annotation file not found: {self.ann_file} (absolute: '
                f'{osp.abspath(self.ann_file)}); check data_root and ann_file')
        classes = self._classes()
        n = len(classes) if classes else self.num_classes
        problems, data, missing = [], [], []
        with open(self.ann_file) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.rsplit(' ', 1)
                if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                    problems.append(f'line {lineno}: {line!r} is not '
                                    '"<image path> <integer label>"')
                    continue
                label = int(parts[1])
                if label < 0 or (n is not None and label >= n):
                    problems.append(f'line {lineno}: label {label} of '
                                    f'{parts[0]} is outside 0..{n - 1 if n else "?"}')
                    continue
                path = osp.join(self.img_prefix, parts[0])
                if self.check_files and not osp.isfile(path):
                    missing.append(f'line {lineno}: {path}')
                data.append(dict(img_path=path, gt_label=label))
        if problems:
            raise DataValidationError(format_problems(
                f'bad annotation file {self.ann_file}', problems))
        if missing:
            raise DataValidationError(format_problems(
                f'images listed in {self.ann_file} do not exist', missing))
        return data

    # -- folder layout ----------------------------------------------------
    def _from_folders(self) -> List[dict]:
        root = self.img_prefix
        if not osp.isdir(root):
            raise DataValidationError(
                f'image folder not found: {root} (absolute: '
                f'{osp.abspath(root)}); check data_root and data_prefix')
        folders = sorted(d for d in os.listdir(root)
                         if osp.isdir(osp.join(root, d)))
        classes = self._classes()
        if classes is None:
            classes = folders
            self._metainfo['classes'] = tuple(folders)
        missing = [c for c in classes if c not in folders]
        extra = [d for d in folders if d not in classes]
        problems = []
        if missing:
            problems.append(f'class folders missing: {missing} (labels would '
                            'shift if the classes were taken from the folders)')
        if extra:
            problems.append(f'folders that are not classes: {extra}')
        if self.num_classes is not None and len(classes) != self.num_classes:
            problems.append(f'{len(classes)} classes but the model predicts '
                            f'num_classes={self.num_classes}')
        data = []
        for label, cls in enumerate(classes):
            if cls not in folders:
                continue
            files = []
            for dirpath, _, names in os.walk(osp.join(root, cls)):
                files += [osp.join(dirpath, f) for f in names
                          if f.lower().endswith(self.extensions)]
            if not files:
                problems.append(f'class folder {osp.join(root, cls)} holds no '
                                f'image ({", ".join(self.extensions)})')
            data += [dict(img_path=p, gt_label=label) for p in sorted(files)]
        if problems:
            raise DataValidationError(format_problems(
                f'bad ImageNet-layout folder {root}', problems))
        return data

    def get_cat_ids(self, idx: int) -> List[int]:
        """The label of sample ``idx`` (as mmpretrain's datasets)."""
        return [int(self.get_data_info(idx)['gt_label'])]
