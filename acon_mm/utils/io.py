"""Checkpoint files: load them safely, write them atomically.

Loading. mmengine 0.10.7 loads checkpoints with a bare ``torch.load(filename,
map_location)``. Since torch 2.6 that means ``weights_only=True``, which refuses
the few non-tensor objects an mmengine checkpoint carries (the message hub's
``HistoryBuffer`` holding numpy arrays), so ``--resume`` fails with
``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``.
acon-mm keeps ``weights_only=True`` and allow-lists exactly those types
(:data:`MMENGINE_CHECKPOINT_GLOBALS`) in :func:`safe_torch_load`; a checkpoint
holding anything else is refused with :class:`UnsafeCheckpointError`, naming
the file and the offending global, and none of its code runs.
(:func:`acon_mm.engine.checkpoint.install_safe_checkpoint_loading` routes every load of
mmengine's ``CheckpointLoader`` through it.)

Writing. :func:`atomic_write` writes a hidden temporary file in the same
directory, flushes and fsyncs it, ``os.replace``-s it onto the final name and
fsyncs the directory, so a reader sees either the old file or the complete new
one, never a part. :func:`atomic_save` does the same for ``torch.save``.

Helpers shared by every place that reads state dicts:
:func:`strip_module_prefix` and :func:`format_keys`.
"""
import io
import os
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'UnsafeCheckpointError', 'safe_torch_load',
    'ATOMIC_TMP_PREFIX', 'atomic_write', 'atomic_tmp_path', 'atomic_commit',
    'atomic_save', 'strip_module_prefix',
    'format_keys', 'state_dict_mismatches'
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


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as an mmengine checkpoint uses it, and nothing more.

    ``HistoryBuffer.__getstate__`` stores its statistics methods
    (``HistoryBuffer.min``, ``.max``, ``.current``, ``.mean``); pickle
    protocol 2 (``torch.save``'s) writes such a nested function as
    ``getattr(HistoryBuffer, 'min')``. A plain allow-listed ``getattr`` would
    let a crafted file reach any attribute of any allowed object, so this
    stand-in (registered under the name ``builtins.getattr`` for
    :func:`safe_torch_load` only) allows exactly those lookups.
    """
    allowed = set(HistoryBuffer._statistics_methods) | {
        'min', 'max', 'current', 'mean'}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr applied to '
        f'{getattr(obj, "__qualname__", type(obj).__name__)}.{name} '
        '(only HistoryBuffer statistics methods are allowed)')


#: Exactly what an mmengine 0.10 checkpoint holds besides tensors and builtins:
#: the message hub's ``HistoryBuffer`` (with its statistics methods, pickled as
#: ``getattr(HistoryBuffer, name)``) and the numpy arrays/scalars it stores.
MMENGINE_CHECKPOINT_GLOBALS: List[Any] = [
    HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')
] + _numpy_globals()


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
        if m and '.' not in culprit:  # torch drops the 'builtins.' prefix
            culprit = f'builtins.{culprit}'
        raise UnsafeCheckpointError(
            f'refusing to load checkpoint {filename!r}: it holds {culprit}, '
            'which is not a tensor or one of the types an mmengine checkpoint '
            'contains (weights_only=True; nothing from the file was executed). '
            'If you trust this file, re-save its tensors with plain '
            '`torch.save(state_dict)`.') from None


#: Prefix of the temporary files :func:`atomic_write` writes aside.
ATOMIC_TMP_PREFIX = '.acon_tmp.'


def atomic_write(path: str, data: Any, mode: str = 'wb') -> None:
    """Write ``data`` to ``path`` atomically (write aside, fsync, rename).

    Args:
        path (str): destination file; its directory is created if missing.
        data (bytes | str): the content.
        mode (str): ``'wb'`` for bytes, ``'w'`` for text (UTF-8).

    A kill at any moment leaves ``path`` either as it was before the call or
    complete. A leftover temporary file (``.acon_tmp.<name>.<pid>``) in the
    same directory is harmless: it is never taken for a checkpoint and the
    next save of the same name removes it.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = atomic_tmp_path(path)
    try:
        with open(tmp, mode, **({} if 'b' in mode else
                                {'encoding': 'utf-8'})) as f:
            f.write(data)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    atomic_commit(tmp, path)


def atomic_tmp_path(path: str) -> str:
    """The temporary file :func:`atomic_write` writes ``path`` aside in
    (``.acon_tmp.<name>.<pid>`` in the same directory)."""
    dirname, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(dirname, f'{ATOMIC_TMP_PREFIX}{name}.{os.getpid()}')


def atomic_commit(tmp: str, path: str) -> None:
    """Flush the complete file ``tmp`` to disk and rename it to ``path``.

    The second half of :func:`atomic_write`, for files another writer produced
    (e.g. mmengine's ``save_checkpoint`` writing to :func:`atomic_tmp_path`):
    fsync, rename (atomic on POSIX), fsync the directory, and remove stale
    temporaries of the same name left by killed processes.
    """
    path = os.fspath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    try:
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(dirname)
    prefix = f'{ATOMIC_TMP_PREFIX}{os.path.basename(path)}.'
    for name in os.listdir(dirname):
        if name.startswith(prefix):
            try:
                os.remove(os.path.join(dirname, name))
            except OSError:  # pragma: no cover - another process' file
                pass


def _fsync_dir(dirname: str) -> None:
    """Persist a rename (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` written atomically (see :func:`atomic_write`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue(), 'wb')


def strip_module_prefix(state_dict: Dict[str, Any],
                        prefix: str = 'module.') -> 'OrderedDict[str, Any]':
    """``state_dict`` with a leading ``prefix`` (``nn.DataParallel``'s) removed
    from every key that has it."""
    n = len(prefix)
    return OrderedDict((k[n:] if k.startswith(prefix) else k, v)
                       for k, v in state_dict.items())


def format_keys(keys: Sequence[str], limit: int = 10) -> str:
    """``'N: 'a', 'b' ... and M more'`` for error messages."""
    keys = list(keys)
    shown = ', '.join(repr(k) for k in keys[:limit])
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return f'{len(keys)}: {shown}{more}'


def state_dict_mismatches(expected: Dict[str, Sequence[int]], actual: Dict[str, Any],
                          limit: int = 10, what: str = 'backbone'
                          ) -> Tuple[List[str], List[str]]:
    """Compare a state dict with the ``{key: shape}`` a model expects
    (``what`` names the model in the shape mismatches).

    Returns:
        tuple: ``(problems, unexpected)``: ``problems`` are ready-to-join phrases
        (``'shape mismatches (...)'``, ``'missing keys (...)'``,
        ``'unexpected keys (...)'``, each listing up to ``limit`` keys; empty
        when everything matches) and ``unexpected`` the keys the model lacks
        (for the caller's hints).
    """
    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    mismatched = [
        f'{k}: checkpoint {tuple(actual[k].shape)} vs {what} {tuple(expected[k])}'
        for k in expected if k in actual and hasattr(actual[k], 'shape')
        and tuple(actual[k].shape) != tuple(expected[k])
    ]
    problems = []
    for what, keys in (('shape mismatches', mismatched), ('missing keys', missing),
                       ('unexpected keys', unexpected)):
        if keys:
            problems.append(f'{what} ({format_keys(keys, limit)})')
    return problems, unexpected
