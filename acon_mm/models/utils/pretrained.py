"""Check a ``Pretrained`` checkpoint against a backbone before mmengine loads it.

mmengine loads ``init_cfg=dict(type='Pretrained', checkpoint=...)`` with
``strict=False``: tensors of the wrong shape and keys of another network are
only logged, so a ResNet-101 checkpoint silently half-initialises a ResNet-50.
The acon-mm backbones call :func:`check_pretrained_keys` first and refuse such a
checkpoint with the file, the offending keys and (for converted official
weights) the network the checkpoint was converted for.

A ``Pretrained`` init_cfg with ``prefix`` (e.g. ``prefix='backbone.'`` for a
checkpoint written by an ImageNet classification config of
``configs/imagenet/``, an mmpretrain ``ImageClassifier``) is checked on the
keys under that prefix, as mmengine loads it.
"""
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import torch.nn as nn

from ...utils.io import format_keys, state_dict_mismatches, strip_module_prefix

__all__ = ['CONVERTER', 'OFFICIAL_WEIGHTS', 'pretrained_path', 'pretrained_spec',
           'check_pretrained_keys']

#: the script that converts the official ImageNet checkpoints
CONVERTER = 'tools/model_converters/acon_official_to_mm.py'
#: where the official ImageNet checkpoints come from (nothing in acon-mm downloads them)
OFFICIAL_WEIGHTS = ('the "Trained Models" section of the official repository\'s README, '
                    'https://github.com/nmaac/acon (OneDrive or BaiduYun link)')


def pretrained_spec(init_cfg: Any) -> Tuple[Optional[str], Optional[str]]:
    """``(local path, prefix)`` of the first ``Pretrained`` init_cfg, else ``(None, None)``.

    ``prefix`` is ``None`` when the init_cfg has none; URLs (``'://'``) are not
    local and give ``(None, None)``.
    """
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    for cfg in cfgs:
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            path = cfg.get('checkpoint')
            if isinstance(path, str) and '://' not in path:
                return path, cfg.get('prefix')
    return None, None


def pretrained_path(init_cfg: Any) -> Optional[str]:
    """The local checkpoint path of a ``Pretrained`` init_cfg (prefixed or not), else None."""
    return pretrained_spec(init_cfg)[0]


def _select_prefix(sd: Dict[str, Any], prefix: str, path: str,
                   where: str) -> Dict[str, Any]:
    """The entries of ``sd`` under ``prefix``, the prefix stripped (as mmengine)."""
    if not prefix.endswith('.'):
        prefix += '.'
    sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not sub:
        heads = sorted({k.split('.', 1)[0] + '.' for k in sd})
        raise ValueError(
            f'{where}: the Pretrained checkpoint {path!r} has no key starting '
            f'with prefix={prefix!r} (init_cfg); its keys start with '
            f'{format_keys(heads, 8)}. A backbone-only checkpoint (e.g. from '
            f'{CONVERTER}) loads without prefix; a classifier checkpoint of '
            "configs/imagenet/ with prefix='backbone.'.")
    return sub


def check_pretrained_keys(module: nn.Module, path: str, where: str,
                          prefix: Optional[str] = None,
                          absent_ok: Sequence[str] = (),
                          unexpected_ok: Sequence[str] = ()) -> None:
    """Raise if checkpoint ``path`` does not fit ``module`` key for key.

    Args:
        module: the backbone.
        path: the checkpoint file.
        where: the backbone, described for messages.
        prefix: compare only the keys under ``prefix`` (stripped), as
            mmengine's ``Pretrained(prefix=...)`` loads them. ``None`` takes
            the prefix of ``module.init_cfg``'s ``Pretrained`` entry for
            ``path`` (if any).
        absent_ok: key prefixes of ``module`` the checkpoint may lack (modules
            added to the plain network: DCN offsets, plugins).
        unexpected_ok: checkpoint keys ``module`` may lack (not loaded).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says how to
            produce it from the official weights).
        ValueError: missing, unexpected or mis-shaped tensors, all named.
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{where}: the Pretrained checkpoint {path!r} (init_cfg) does not '
            f'exist. Convert the official ImageNet weights (from {OFFICIAL_WEIGHTS}) '
            f'with `python {CONVERTER} OFFICIAL.pth {path}`, or set init_cfg=None to '
            'train from scratch.')
    ckpt = _load_checkpoint(path, map_location='cpu')
    meta: Dict[str, Any] = {}
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        sd = ckpt['state_dict']
        meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    else:
        sd = ckpt
    if prefix is None:
        spec_path, spec_prefix = pretrained_spec(getattr(module, 'init_cfg',
                                                         None))
        if spec_path is not None and os.path.expanduser(spec_path) == path:
            prefix = spec_prefix
    if prefix:
        sd = _select_prefix(sd, prefix, path, where)
    sd = strip_module_prefix(sd)
    own = {k: v for k, v in module.state_dict().items()
           if k in sd or not k.startswith(tuple(absent_ok))}
    sd = {k: v for k, v in sd.items() if k in own or k not in set(unexpected_ok)}
    problems, unexpected = state_dict_mismatches(
        {k: tuple(v.shape) for k, v in own.items()}, sd, limit=8)
    if not problems:
        return
    hint = ''
    if prefix:
        hint = (f' (Keys compared: those under prefix={prefix!r}, prefix '
                'stripped.)')
    if meta.get('arch') and isinstance(meta.get('backbone'), dict):
        hint += (f' The checkpoint was converted for {meta["arch"]}, i.e. '
                 f'backbone={meta.get("backbone")}.')
    elif any(k.startswith(('fc.', 'classifier.')) for k in unexpected):
        hint += (' It looks like an unconverted ImageNet checkpoint: convert '
                 f'it with `python {CONVERTER} SRC DST`.')
    elif not prefix and any(k.startswith('backbone.') for k in unexpected):
        hint += (' It looks like a classifier/detector checkpoint (keys '
                 "'backbone.*'): add prefix='backbone.' to the init_cfg.")
    raise ValueError(
        f'{where}: the Pretrained checkpoint {path!r} does not fit this '
        f'backbone: ' + '; '.join(problems) + '.' + hint +
        ' Pass strict_pretrained=False to load the matching tensors anyway.')
