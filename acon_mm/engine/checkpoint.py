"""Checkpoint loading and resuming, made safe.

* :func:`install_safe_checkpoint_loading` (a patch, installed by
  :mod:`acon_mm.patches` only): every local load of mmengine's
  ``CheckpointLoader`` (``--resume``, ``load_from``, ``init_cfg`` Pretrained,
  ``tools/test.py``) goes through :func:`acon_mm.utils.safe_torch_load`
  (``weights_only=True`` with exactly mmengine's own types allowed): torch >= 2.6
  refuses mmengine's checkpoints otherwise, and a plain ``weights_only=False``
  would run whatever a planted checkpoint pickles.
* :func:`find_latest_checkpoint`: what ``tools/train.py --resume`` resumes from
  (it sets ``cfg.load_from`` to it, so mmengine's own lookup is not used). Unlike
  mmengine's function of the same name it never returns a missing or truncated
  file. Writing is atomic in :class:`acon_mm.engine.hooks.AconCheckpointHook`.
"""
import os
import re
from typing import Any, Optional

from mmengine.runner.checkpoint import CheckpointLoader

from ..utils.io import safe_torch_load

__all__ = [
    'install_safe_checkpoint_loading', 'is_complete_checkpoint',
    'find_latest_checkpoint'
]


def _load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)


def install_safe_checkpoint_loading() -> None:
    """Make mmengine's local checkpoint loader use :func:`safe_torch_load`."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)


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
