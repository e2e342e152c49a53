"""CIFAR-10 read without executing anything its files contain.

The "python version" of CIFAR-10 (``cifar-10-batches-py/``) is a set of
pickles, and :func:`pickle.load` on a pickle runs whatever callable it names:
mmpretrain's and torchvision's CIFAR readers load them with plain
:mod:`pickle`. Here they are read by :class:`CifarUnpickler`, which resolves
only the few globals a numpy array needs (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``_codecs.encode``); any other global (e.g.
``os.system`` in a planted file) is refused *when it is looked up*, before it
can be called, with the file and the global named
(:class:`~acon_mm.datasets.DataValidationError`). The "binary version"
(``cifar-10-batches-bin/``: records of 1 label byte + 3072 pixel bytes) needs
no unpickling at all.

:class:`ValidatedCIFAR10` (registered in mmengine's root ``DATASETS``, so
mmpretrain configs find it) reads either version under ``data_root``; it
never downloads (no network at run time), and it checks shapes and labels with
the file named. The samples (``img``: HWC uint8 RGB, ``gt_label``) are what
mmpretrain's CIFAR pipelines expect. :func:`write_cifar` writes both versions
(the generated search data, tests).
"""
import io
import os
import os.path as osp
import pickle
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from .validation import DataValidationError

__all__ = ['CifarUnpickler', 'load_cifar_pickle', 'read_cifar', 'write_cifar',
           'ValidatedCIFAR10', 'CIFAR10_CLASSES']

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                   'horse', 'ship', 'truck')

PY_FOLDER, BIN_FOLDER = 'cifar-10-batches-py', 'cifar-10-batches-bin'
TRAIN_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_BATCHES = ('test_batch', )

#: the only globals a CIFAR pickle may name
ALLOWED_GLOBALS = frozenset({
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('_codecs', 'encode'),
})


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file, path: str):
        super().__init__(file, encoding='latin1')
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataValidationError(
                f'{self.path}: refused to unpickle: it names the global '
                f'{module}.{name}, which a CIFAR batch never needs (only numpy '
                f'arrays, dicts, lists, strings and numbers); nothing of the '
                f'file was run. Is it really CIFAR-10 from '
                f'https://www.cs.toronto.edu/~kriz/cifar.html?')
        return super().find_class(module, name)


def load_cifar_pickle(path: str):
    """Read one CIFAR pickle (:class:`CifarUnpickler`)."""
    with open(path, 'rb') as f:
        data = f.read()
    try:
        return CifarUnpickler(io.BytesIO(data), path).load()
    except DataValidationError:
        raise
    except Exception as e:  # truncated, not a pickle, ...
        raise DataValidationError(f'{path}: not a readable CIFAR pickle '
                                  f'({type(e).__name__}: {e})') from None


def _batch_from_pickle(path: str) -> Tuple[np.ndarray, List[int]]:
    entry = load_cifar_pickle(path)
    if not isinstance(entry, dict):
        raise DataValidationError(f'{path}: a CIFAR batch is a dict, got '
                                  f'{type(entry).__name__}')
    entry = {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if 'data' not in entry or ('labels' not in entry and 'fine_labels' not in entry):
        raise DataValidationError(f'{path}: a CIFAR batch has the keys "data" and '
                                  f'"labels", got {sorted(entry)}')
    data = entry['data']
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 \
            or data.dtype != np.uint8:
        raise DataValidationError(
            f'{path}: "data" must be a uint8 array of shape (N, 3072), got '
            f'{getattr(data, "dtype", type(data).__name__)} '
            f'{getattr(data, "shape", "")}')
    labels = list(entry.get('labels', entry.get('fine_labels')))
    return data, labels


def _batch_from_binary(path: str) -> Tuple[np.ndarray, List[int]]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DataValidationError(f'{path}: {raw.size} bytes is not a whole number '
                                  f'of 3073-byte CIFAR-10 records')
    rec = raw.reshape(-1, 3073)
    return rec[:, 1:], rec[:, 0].astype(int).tolist()


def read_cifar(root: str, split: str = 'train',
               num_classes: int = 10) -> Tuple[np.ndarray, List[int], str]:
    """``(images (N, 32, 32, 3) uint8 RGB, labels, version folder)`` of a
    split (``'train'`` or ``'test'``) under ``root`` (the python version if
    both are there)."""
    if split not in ('train', 'test'):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = TRAIN_BATCHES if split == 'train' else TEST_BATCHES
    py, binary = osp.join(root, PY_FOLDER), osp.join(root, BIN_FOLDER)
    if osp.isdir(py):
        folder, paths, read = py, [osp.join(py, n) for n in names], _batch_from_pickle
    elif osp.isdir(binary):
        folder, read = binary, _batch_from_binary
        paths = [osp.join(binary, n + '.bin') for n in names]
    else:
        raise DataValidationError(
            f'{root}: no CIFAR-10 here: expected {PY_FOLDER}/ (the python version) or '
            f'{BIN_FOLDER}/ (the binary version), as extracted from '
            f'https://www.cs.toronto.edu/~kriz/cifar.html (nothing is downloaded), '
            f'or generate a set with tools/misc/make_demo_data.py')
    missing = [p for p in paths if not osp.isfile(p)]
    if missing:
        raise DataValidationError(f'{folder}: the {split} split needs {missing}')
    images, labels = [], []
    for p in paths:
        d, lab = read(p)
        if len(lab) != len(d):
            raise DataValidationError(f'{p}: {len(d)} images but {len(lab)} labels')
        bad = [v for v in lab if not 0 <= int(v) < num_classes]
        if bad:
            raise DataValidationError(f'{p}: label {bad[0]} is outside 0..{num_classes - 1}')
        images.append(d)
        labels += [int(v) for v in lab]
    imgs = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(imgs), labels, folder


def write_cifar(root: str, split: str, images: np.ndarray, labels: Sequence[int],
                version: str = 'python') -> List[str]:
    """Write ``images`` ((N, 32, 32, 3) uint8 RGB) and ``labels`` as CIFAR-10's
    ``version`` (``'python'`` or ``'binary'``); the train split is cut into its
    five batches. Returns the files written."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) != len(labels):
        raise ValueError(f'images must be (N, 32, 32, 3) with N labels, got '
                         f'{images.shape} and {len(labels)} labels')
    names = TRAIN_BATCHES if split == 'train' else TEST_BATCHES
    folder = osp.join(root, PY_FOLDER if version == 'python' else BIN_FOLDER)
    os.makedirs(folder, exist_ok=True)
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    written = []
    for i, (name, part) in enumerate(zip(names, np.array_split(np.arange(len(images)),
                                                                len(names)))):
        lab = [int(labels[j]) for j in part]
        if version == 'python':
            path = osp.join(folder, name)
            entry = {'batch_label': f'{split} batch {i + 1}', 'labels': lab,
                     'data': flat[part], 'filenames': [f'{j}.png' for j in part]}
            with open(path + '.tmp', 'wb') as f:
                pickle.dump(entry, f, protocol=2)
        elif version == 'binary':
            path = osp.join(folder, name + '.bin')
            rec = np.concatenate([np.asarray(lab, np.uint8)[:, None], flat[part]], 1)
            rec.tofile(path + '.tmp')
        else:
            raise ValueError(f"version must be 'python' or 'binary', got {version!r}")
        os.replace(path + '.tmp', path)
        written.append(path)
    if version == 'python':
        meta = osp.join(folder, 'batches.meta')
        with open(meta, 'wb') as f:
            pickle.dump({'label_names': list(CIFAR10_CLASSES)}, f, protocol=2)
        written.append(meta)
    return written


@DATASETS.register_module()
class ValidatedCIFAR10(BaseDataset):
    """CIFAR-10 (either version) under ``data_root``, read safely.

    Args:
        data_root (str): the folder holding ``cifar-10-batches-py/`` or
            ``cifar-10-batches-bin/``.
        split (str): ``'train'`` or ``'test'``.
        **kwargs: of :class:`mmengine.dataset.BaseDataset` (``pipeline``,
            ``indices``, ``test_mode``, ...).
    """
    METAINFO = {'classes': CIFAR10_CLASSES}

    def __init__(self, data_root: str = '', split: str = 'train',
                 metainfo: Optional[dict] = None, **kwargs):
        if not data_root:
            raise DataValidationError('ValidatedCIFAR10 needs data_root (the folder of '
                                      f'{PY_FOLDER}/ or {BIN_FOLDER}/)')
        self.split = split
        kwargs.setdefault('test_mode', split == 'test')
        super().__init__(data_root=data_root, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        imgs, labels, _ = read_cifar(self.data_root, self.split,
                                     num_classes=len(self.metainfo['classes']))
        return [{'img': img, 'gt_label': lab} for img, lab in zip(imgs, labels)]
