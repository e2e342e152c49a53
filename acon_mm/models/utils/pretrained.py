"""Check a ``Pretrained`` checkpoint against a backbone before mmengine loads it.

mmengine loads ``init_cfg=dict(type='Pretrained', checkpoint=...)`` with
``strict=False``: tensors of the wrong shape and keys of another network are
only logged, so a ResNet-101 checkpoint silently half-initialises a ResNet-50.
The acon-mm backbones call :func:`check_pretrained_keys` first and refuse such a
checkpoint with the file, the offending keys and (for converted official
weights) the network the checkpoint was converted for.
"""
import os
from typing import Any, Dict

import torch.nn as nn

from ...utils.io import format_keys, strip_module_prefix

__all__ = ['CONVERTER', 'pretrained_path', 'check_pretrained_keys']

#: the script that converts the official ImageNet checkpoints
CONVERTER = 'tools/model_converters/acon_official_to_mm.py'


def pretrained_path(init_cfg: Any):
    """The local checkpoint path of a prefix-less ``Pretrained`` init_cfg, else None."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    for cfg in cfgs:
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' \
                and cfg.get('prefix') is None:
            path = cfg.get('checkpoint')
            if isinstance(path, str) and '://' not in path:
                return path
    return None


def check_pretrained_keys(module: nn.Module, path: str, where: str) -> None:
    """Raise if checkpoint ``path`` does not fit ``module`` key for key.

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
            f'exist. Convert the official ImageNet weights with `python '
            f'{CONVERTER} OFFICIAL.pth {path}`, or set init_cfg=None to train '
            'from scratch.')
    ckpt = _load_checkpoint(path, map_location='cpu')
    meta: Dict[str, Any] = {}
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        sd = ckpt['state_dict']
        meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    else:
        sd = ckpt
    sd = strip_module_prefix(sd)
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f'{k}: checkpoint {tuple(sd[k].shape)} vs backbone {tuple(own[k].shape)}'
        for k in own if k in sd and hasattr(sd[k], 'shape')
        and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if mismatched:
        problems.append(f'shape mismatches ({format_keys(mismatched, 8)})')
    if missing:
        problems.append(f'missing keys ({format_keys(missing, 8)})')
    if unexpected:
        problems.append(f'unexpected keys ({format_keys(unexpected, 8)})')
    hint = ''
    if meta.get('arch'):
        hint = (f' The checkpoint was converted for {meta["arch"]}, i.e. '
                f'backbone={meta.get("backbone")}.')
    elif any(k.startswith(('fc.', 'classifier.')) for k in unexpected):
        hint = (' It looks like an unconverted ImageNet checkpoint: convert it '
                f'with `python {CONVERTER} SRC DST`.')
    raise ValueError(
        f'{where}: the Pretrained checkpoint {path!r} does not fit this '
        f'backbone: ' + '; '.join(problems) + '.' + hint +
        ' Pass strict_pretrained=False to load the matching tensors anyway.')
