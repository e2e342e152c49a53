"""Refuse a trained checkpoint that does not fit the model it is loaded into.

mmengine's runner loads ``load_from`` with ``strict=False``: a checkpoint of another
depth, or a backbone-only file, is logged as "missing keys in source state_dict" and
the evaluation then reports a number for a model that is mostly random (bbox mAP
0.0, exit status 0). Every acon-mm tool that loads a *trained* model
(``tools/test.py``, ``tools/analysis_tools/analyze_acon.py`` and the other analysis
tools through :func:`acon_mm.analysis.load_model`) calls
:func:`check_checkpoint_fits` first: any missing key, unexpected key or shape
mismatch is an error that names the checkpoint, the config and the counts. A
backbone-only file (converted official ImageNet weights, or the backbone of a
detector) is recognised as such, with the fix: it initialises a backbone
(``init_cfg``), it is not a model to evaluate.

(Initial weights are checked by :func:`check_pretrained_keys` instead: that is the
backbone's ``Pretrained`` ``init_cfg``, whose keys are the backbone's.)
"""
from typing import Any, Dict

import torch.nn as nn

from ...utils.io import state_dict_mismatches, strip_module_prefix

__all__ = ['CheckpointMismatchError', 'check_checkpoint_fits']

#: a state dict whose keys are at least this fraction of the model's backbone's
#: keys (without the ``backbone.`` prefix) is taken for a backbone-only file
_BACKBONE_SHARE = 0.9


class CheckpointMismatchError(KeyError):
    """A checkpoint that does not fit the model (a :class:`KeyError`, printed
    without the quotes ``KeyError`` adds)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def _backbone_only(model: nn.Module, state_dict: Dict[str, Any]) -> int:
    """How many keys of ``state_dict`` are keys of ``model.backbone`` as they are
    (no ``backbone.`` prefix), if that is nearly all of them; else 0."""
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, nn.Module) or not state_dict:
        return 0
    if any(k.startswith('backbone.') for k in state_dict):
        return 0
    keys = set(backbone.state_dict())
    hits = sum(k in keys for k in state_dict)
    return hits if hits >= _BACKBONE_SHARE * len(state_dict) else 0


def check_checkpoint_fits(model: nn.Module, state_dict: Dict[str, Any],
                          checkpoint: str, config: str = 'the config') -> None:
    """Raise unless ``state_dict`` has exactly ``model``'s keys and shapes.

    Args:
        model (nn.Module): the model the checkpoint is for (unwrapped from DDP).
        state_dict (dict): the checkpoint's ``state_dict`` (a ``module.`` prefix
            is ignored, as mmengine ignores it).
        checkpoint (str): the checkpoint's path, for the message.
        config (str): the config's path, for the message.

    Raises:
        CheckpointMismatchError: with the checkpoint, the config, the number of
            keys of each and every kind of mismatch with up to 10 keys; for a
            backbone-only file, the ``init_cfg`` it belongs in.
    """
    state_dict = strip_module_prefix(state_dict)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems, _ = state_dict_mismatches(expected, state_dict, what='model')
    if not problems:
        return
    sizes = (f'the model has {len(expected)} keys, the checkpoint '
             f'{len(state_dict)}')
    hits = _backbone_only(model, state_dict)
    if hits:
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint!r} is a backbone-only checkpoint: {hits} of its '
            f'{len(state_dict)} keys are keys of the backbone of {config} and it has no '
            f'neck or head ({sizes}). It initialises a backbone, it is not a model to '
            'evaluate: set model.backbone.init_cfg=dict(type=\'Pretrained\', '
            f'checkpoint=\'{checkpoint}\') in the config and train, then give this tool '
            'a checkpoint the training wrote (work_dirs/<config>/iter_*.pth or '
            'epoch_*.pth).')
    raise CheckpointMismatchError(
        f'checkpoint {checkpoint!r} does not fit the model of {config} ({sizes}): '
        + '; '.join(problems) + '. Use the config that trained it (its work dir '
        'holds a copy) and no --cfg-options that change the model.')
