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


def _load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)


def install_safe_checkpoint_loading() -> None:
    """Make mmengine's local checkpoint loader use :func:`safe_torch_load`."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)


# ---------------------------------------------------------------------------
# Atomic checkpoint writing and a resume that never picks a broken file
# ---------------------------------------------------------------------------
#
# mmengine writes a checkpoint with ``torch.save`` into memory and then
# ``LocalBackend.put(bytes, path)``, which opens ``path`` for writing and
# writes it in place; ``CheckpointHook`` then writes the ``last_checkpoint``
# pointer with a plain ``open(..., 'w')``. A process killed during either write
# leaves a truncated file under its final name. acon-mm routes both through
# :func:`atomic_write` (write a hidden temporary file in the same directory,
# flush + fsync, ``os.replace`` onto the final name, fsync the directory), so
# a reader sees either the old file or the complete new one, never a part.

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
    dirname = os.path.dirname(os.path.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    tmp = os.path.join(
        dirname, f'{ATOMIC_TMP_PREFIX}{os.path.basename(path)}.{os.getpid()}')
    try:
        with open(tmp, mode, **({} if 'b' in mode else
                                {'encoding': 'utf-8'})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(dirname)
    # stale temporaries of the same name from killed processes
    for name in os.listdir(dirname):
        if name.startswith(f'{ATOMIC_TMP_PREFIX}{os.path.basename(path)}.'):
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


def is_complete_checkpoint(filename: str) -> bool:
    """Whether ``filename`` is a whole ``torch.save`` file (cheap check).

    A torch >= 1.6 checkpoint is a zip archive; a truncated one lacks the
    central directory at its end, which :func:`zipfile.is_zipfile` checks
    without reading the tensors. Legacy (non-zip) files are accepted if they
    are not empty.
    """
    import zipfile
    if not os.path.isfile(filename) or os.path.getsize(filename) == 0:
        return False
    if zipfile.is_zipfile(filename):
        try:
            with zipfile.ZipFile(filename) as zf:
                return any(n.endswith('data.pkl') for n in zf.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    with open(filename, 'rb') as f:
        head = f.read(2)
    # legacy torch.save: a pickle stream (protocol 2+ starts with 0x80)
    return head[:1] == b'\x80'


_CKPT_RE = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def find_latest_checkpoint(path: str) -> Optional[str]:
    """The newest complete checkpoint in the work dir ``path``, or None.

    Reads the ``last_checkpoint`` pointer as mmengine does; if the pointer is
    missing, empty, or names a file that is gone or incomplete (an older
    mmengine, a kill between saving and pointing, ``max_keep_ckpts`` having
    removed it), falls back to the complete ``iter_N.pth`` / ``epoch_N.pth``
    in ``path`` with the largest ``N``, and says so.
    """
    from mmengine.logging import print_log
    pointer = os.path.join(path, 'last_checkpoint')
    named = None
    if os.path.exists(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
        if named and '://' in named:  # remote backends: trust mmengine
            return named
        if named and is_complete_checkpoint(named):
            return named
    candidates = []
    if os.path.isdir(path):
        for name in os.listdir(path):
            m = _CKPT_RE.match(name)
            if m:
                candidates.append((int(m.group(1)), os.path.join(path, name)))
    for _, cand in sorted(candidates, reverse=True):
        if is_complete_checkpoint(cand):
            if named:
                print_log(
                    f'last_checkpoint in {path} names {named!r}, which is '
                    f'missing or incomplete; resuming from {cand} instead',
                    logger='current', level=30)
            return cand
    if named:
        print_log(f'last_checkpoint in {path} names {named!r}, which is '
                  'missing or incomplete, and no other complete checkpoint '
                  'was found', logger='current', level=30)
    else:
        print_log('Did not find last_checkpoint to be resumed.',
                  logger='current')
    return None


def _atomic_put(self, obj: bytes, filepath: Any) -> None:
    """``LocalBackend.put`` written aside and renamed (see :func:`atomic_write`)."""
    atomic_write(os.fspath(filepath), obj, 'wb')


def _atomic_put_text(self, obj: str, filepath: Any,
                     encoding: str = 'utf-8') -> None:
    atomic_write(os.fspath(filepath), obj.encode(encoding), 'wb')


def install_atomic_checkpoint_saving() -> None:
    """Make mmengine's local file writes atomic and its resume robust.

    * ``mmengine.fileio.LocalBackend.put`` / ``put_text`` (used by
      ``save_checkpoint`` for every local checkpoint) write aside and rename.
    * ``find_latest_checkpoint`` (used by ``Runner`` for ``resume=True``)
      is replaced by :func:`find_latest_checkpoint`, which never returns a
      missing or truncated file.

    The ``last_checkpoint`` pointer itself is written atomically by
    :class:`acon_mm.hooks.CheckpointHook`.
    """
    from mmengine.fileio.backends import LocalBackend
    import mmengine.runner.checkpoint as mm_ckpt
    import mmengine.runner.runner as mm_runner
    import mmengine.runner as mm_runner_pkg
    LocalBackend.put = _atomic_put
    LocalBackend.put_text = _atomic_put_text
    for mod in (mm_ckpt, mm_runner, mm_runner_pkg):
        mod.find_latest_checkpoint = find_latest_checkpoint
    try:
        import mmengine.runner._flexible_runner as mm_flex
        mm_flex.find_latest_checkpoint = find_latest_checkpoint
    except ImportError:  # pragma: no cover
        pass
