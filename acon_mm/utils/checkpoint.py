"""Safe checkpoint loading for mmengine on torch >= 2.6.

mmengine 0.10.7 loads checkpoints with a bare ``torch.load(filename,
map_location)``. Since torch 2.6 that means ``weights_only=True``, which refuses
the few non-tensor objects an mmengine checkpoint carries (the message hub's
``HistoryBuffer`` holding numpy arrays), so ``--resume`` fails with
``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``.

acon-mm keeps ``weights_only=True`` and allow-lists exactly those types
(:data:`MMENGINE_CHECKPOINT_GLOBALS`). Every load through mmengine's
``CheckpointLoader`` (``--resume``, ``load_from``, ``init_cfg`` Pretrained,
``tools/test.py``) goes through :func:`safe_torch_load`; a checkpoint holding
anything else is refused with :class:`UnsafeCheckpointError`, naming the file
and the offending global, and none of its code runs.
"""
import os
import pickle
import re
from typing import Any, List, Optional

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'UnsafeCheckpointError', 'safe_torch_load',
    'install_safe_checkpoint_loading'
]


def _numpy_globals() -> List[Any]:
    """The numpy reconstructors and dtypes that pickled numpy arrays/scalars use."""
    try:  # numpy >= 1.25 / 2.x
        from numpy._core.multiarray import _reconstruct, scalar  # type: ignore
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore
    found = [np.ndarray, np.dtype, _reconstruct, scalar]
    # dtype classes (numpy >= 1.25 pickles e.g. numpy.dtypes.Float64DType)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [
            getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')
            and isinstance(getattr(dtypes, n), type)
        ]
    return found


#: Exactly what an mmengine 0.10 checkpoint holds besides tensors and builtins:
#: the message hub's ``HistoryBuffer`` and the numpy arrays/scalars it stores.
MMENGINE_CHECKPOINT_GLOBALS: List[Any] = [HistoryBuffer] + _numpy_globals()


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds an object that is not allow-listed; it was not loaded."""


_GLOBAL_RE = re.compile(r'(?:Unsupported global|unsupported GLOBAL|global) ?:? ?'
                        r'(?:GLOBAL )?([\w.]+)')


def safe_torch_load(filename: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(filename, weights_only=True)`` with mmengine's types allowed.

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        UnsafeCheckpointError: the file holds a global outside the allow-list
            (a pickled payload); the message names the file and the global.
    """
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    try:
        with torch.serialization.safe_globals(MMENGINE_CHECKPOINT_GLOBALS):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        msg = str(err)
        m = re.search(r'Unsupported global: GLOBAL ([\w.]+)', msg) or \
            _GLOBAL_RE.search(msg)
        culprit = m.group(1) if m else 'an object outside the allow-list'
        raise UnsafeCheckpointError(
            f'refusing to load checkpoint {filename!r}: it holds {culprit}, '
            'which is not a tensor or one of the types an mmengine checkpoint '
            'contains (weights_only=True; nothing from the file was executed). '
            'If you trust this file, re-save its tensors with plain '
            '`torch.save(state_dict)`.') from None


def _load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)


def install_safe_checkpoint_loading() -> None:
    """Make mmengine's local checkpoint loader use :func:`safe_torch_load`."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)
