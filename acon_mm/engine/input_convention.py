"""The input convention of pretrained weights against a config's preprocessing.

Weights only mean something for the pixels they were trained on. The official
ACON networks take raw **BGR 0..255** pixels (no mean, no std; the official
``ToBGRTensor``), while mmdet's, mmseg's and mmpretrain's stock configs
normalise RGB with the ImageNet mean/std: features of converted weights fed
that way are silently wrong, and fine-tuning starts from a damaged network.

The converter records the convention in the checkpoint
(``meta['input_convention']``, see
:data:`acon_mm.models.official_ckpt.OFFICIAL_INPUT_CONVENTION`); checkpoints
written by an mmengine Runner (e.g. by ``configs/imagenet/*``) carry their
config text in ``meta['cfg']``, whose ``data_preprocessor`` is the convention.
:func:`check_input_convention` compares each local ``Pretrained`` checkpoint
of a config (and, for ``tools/test.py``, the checkpoint under test) with the
config's ``data_preprocessor`` and raises :class:`InputConventionError` naming
the file, both conventions and the config key to set, before anything is
built. A checkpoint that records no convention loads with a warning naming it.

A convention is a dict ``channel_order`` (``'bgr'``/``'rgb'``: the order of the
tensor the network sees), ``value_range`` (255: mmcv decodes 8-bit pixels and
no acon-mm pipeline rescales them), ``mean`` and ``std`` (per channel of that
tensor; the network sees ``(x - mean) / std``).
"""
import logging
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..models.official_ckpt import INPUT_CONVENTION_KEY, OFFICIAL_INPUT_CONVENTION
from ..utils.config import walk_dicts
from ..utils.io import safe_torch_load

__all__ = [
    'InputConventionError', 'preprocessor_convention', 'config_convention',
    'checkpoint_convention', 'conventions_match', 'check_input_convention',
    'format_convention'
]

#: tolerance when comparing mean/std values
_ATOL = 1e-3


class InputConventionError(ValueError):
    """A config feeds pretrained weights pixels they were not trained on."""


def _flt(values: Optional[Sequence[float]], default: float) -> List[float]:
    if values is None:
        return [default] * 3
    return [float(v) for v in values]


def preprocessor_convention(dp: Optional[dict]) -> Dict[str, Any]:
    """The convention a ``data_preprocessor`` config feeds the network.

    mmcv's ``LoadImageFromFile`` decodes BGR (also with the pillow backend), so
    the tensor is RGB after ``bgr_to_rgb=True`` (mmdet, mmseg), ``to_rgb=True``
    (mmpretrain) or ``rgb_to_bgr=True`` (a swap either way), BGR otherwise.
    ``mean``/``std`` of ``None`` (or a missing preprocessor) mean no
    normalisation.

    Args:
        dp (dict | None): e.g. ``dict(type='DetDataPreprocessor', mean=...,
            std=..., bgr_to_rgb=True)``.
    """
    dp = dict(dp or {})
    swapped = bool(dp.get('bgr_to_rgb') or dp.get('to_rgb')
                   or dp.get('rgb_to_bgr'))
    return dict(channel_order='rgb' if swapped else 'bgr', value_range=255,
                mean=_flt(dp.get('mean'), 0.0), std=_flt(dp.get('std'), 1.0))


def config_convention(cfg: Config) -> Tuple[Dict[str, Any], str]:
    """``(convention, config key)`` of the preprocessing ``cfg`` runs.

    ``model.data_preprocessor`` wins; mmengine's Runner falls back to a
    top-level ``data_preprocessor`` (mmpretrain's configs), and so does this.
    """
    model = cfg.get('model') or {}
    if isinstance(model, dict) and model.get('data_preprocessor') is not None:
        return (preprocessor_convention(model['data_preprocessor']),
                'model.data_preprocessor')
    if cfg.get('data_preprocessor') is not None:
        return (preprocessor_convention(cfg['data_preprocessor']),
                'data_preprocessor')
    return preprocessor_convention(None), 'model.data_preprocessor'


def format_convention(conv: Dict[str, Any]) -> str:
    """e.g. ``BGR 0..255, mean=[0, 0, 0], std=[1, 1, 1]``."""

    def nums(v):
        return '[' + ', '.join(f'{x:g}' for x in v) + ']'

    return (f'{str(conv.get("channel_order", "?")).upper()} '
            f'0..{conv.get("value_range", "?")}, mean={nums(conv["mean"])}, '
            f'std={nums(conv["std"])}')


def conventions_match(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Same channel order and value range, mean/std within 1e-3."""
    if str(a.get('channel_order')).lower() != str(b.get('channel_order')).lower():
        return False
    if float(a.get('value_range', 255)) != float(b.get('value_range', 255)):
        return False
    for key in ('mean', 'std'):
        va, vb = list(a[key]), list(b[key])
        if len(va) != len(vb) or any(abs(float(x) - float(y)) > _ATOL
                                     for x, y in zip(va, vb)):
            return False
    return True


def checkpoint_convention(path: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(convention or None, where it came from)`` of checkpoint ``path``.

    ``meta['input_convention']`` (written by the converter) wins; otherwise the
    ``data_preprocessor`` of the config an mmengine Runner saved in
    ``meta['cfg']``; otherwise ``None``.
    """
    ckpt = safe_torch_load(path, map_location='cpu')
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict):
        return None, 'no meta'
    conv = meta.get(INPUT_CONVENTION_KEY)
    if isinstance(conv, dict) and {'mean', 'std', 'channel_order'} <= set(conv):
        return dict(conv), f"meta['{INPUT_CONVENTION_KEY}']"
    text = meta.get('cfg')
    if isinstance(text, str) and 'data_preprocessor' in text:
        try:
            saved = Config.fromstring(text, '.py')
        except Exception:  # an unparsable saved config records nothing
            return None, "meta['cfg'] (could not be parsed)"
        conv, key = config_convention(saved)
        return conv, f"the {key} of the config saved in meta['cfg']"
    return None, 'no recorded input convention'


def _pretrained_files(cfg: Config) -> List[Tuple[str, str]]:
    out = []
    for path, d in walk_dicts(cfg.get('model', {}), 'model'):
        ckpt = d.get('checkpoint')
        if d.get('type') == 'Pretrained' and isinstance(ckpt, str) \
                and '://' not in ckpt and osp.isfile(ckpt):
            out.append((f'{path}.checkpoint', ckpt))
    return out


def _fix(conv: Dict[str, Any], key: str) -> str:
    swap = 'False' if conv['channel_order'] == 'bgr' else 'True'
    mean = '[' + ','.join(f'{x:g}' for x in conv['mean']) + ']'
    std = '[' + ','.join(f'{x:g}' for x in conv['std']) + ']'
    return f'{key}.mean={mean} {key}.std={std} {key}.bgr_to_rgb={swap}'


def check_input_convention(cfg: Config,
                           checkpoints: Sequence[str] = (),
                           logger: Optional[str] = 'current') -> List[str]:
    """Refuse a run whose preprocessing contradicts its pretrained weights.

    Checks every local, existing ``Pretrained`` checkpoint of ``cfg.model``
    (missing files are :func:`~acon_mm.engine.runner_utils.check_pretrained_files`'
    business) and each of ``checkpoints`` (e.g. ``tools/test.py``'s CHECKPOINT).

    Args:
        cfg (Config): the config as it will run.
        checkpoints (Sequence[str]): more checkpoint files to check.
        logger (str | None): mmengine logger for the warnings; ``None`` logs
            nothing (the messages are returned either way).

    Returns:
        list[str]: warnings, one per checkpoint without a recorded convention.

    Raises:
        InputConventionError: a checkpoint's convention differs from the
            config's; the message names the file, both conventions and the
            ``--cfg-options`` that make the config match.
    """
    own, key = config_convention(cfg)
    name = cfg.filename or '<in memory>'
    files = _pretrained_files(cfg) + [('CHECKPOINT', c) for c in checkpoints
                                      if isinstance(c, str) and osp.isfile(c)]
    warnings, errors = [], []
    for cfg_key, path in files:
        conv, source = checkpoint_convention(path)
        if conv is None:
            warnings.append(
                f'{path} ({cfg_key}) records no input convention ({source}); '
                f'it is loaded as if it were trained on what {key} feeds: '
                f'{format_convention(own)}. Official ACON weights converted '
                f'with tools/model_converters/acon_official_to_mm.py record '
                f'{format_convention(OFFICIAL_INPUT_CONVENTION)}.')
            continue
        if not conventions_match(conv, own):
            errors.append(
                f'  {path} ({cfg_key}) was trained on '
                f'{format_convention(conv)} ({source}),\n'
                f'  but {key} of {name} feeds {format_convention(own)}.\n'
                f'  Set {key} to match, e.g. --cfg-options {_fix(conv, key)}')
    if errors:
        raise InputConventionError(
            f'config {name}: the input preprocessing contradicts the '
            'pretrained weights (their features would be wrong):\n'
            + '\n'.join(errors))
    if logger is not None and warnings:
        from mmengine.logging import print_log
        for w in warnings:
            print_log(w, logger=logger, level=logging.WARNING)
    return warnings
