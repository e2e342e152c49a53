"""Convert the official ACON / meta-ACON ImageNet checkpoints to acon-mm backbones.

The official checkpoints are ``{'state_dict': {'module.' + key: tensor}}`` (saved
from ``nn.DataParallel``). ``ResNetACON`` and ``ShuffleNetV2ACON`` use the official
module names, so the conversion is: strip ``module.``, drop the classifier
(ResNet ``fc.*``, ShuffleNetV2 ``classifier.*``), and check every remaining key
and shape against the backbone that will load it. Anything missing, unexpected
or mis-shaped is refused with the keys named; the output is written atomically
(temporary file, then ``os.replace``), so a failed run never leaves a partial
checkpoint behind.

Usage::

    python tools/model_converters/acon_official_to_mm.py SRC DST [--arch NAME]

then ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` in the backbone config.

**Input convention.** The official networks were trained (and evaluated) on raw
BGR pixels in 0..255, without mean subtraction or std division (their
``ToBGRTensor``). That convention is a property of the weights, so the
converter writes it into the checkpoint, ``meta['input_convention']`` =
:data:`OFFICIAL_INPUT_CONVENTION`, and
:func:`acon_mm.engine.check_input_convention` compares it with a config's
``data_preprocessor`` before a run starts.

With ``keep_head=True`` (``--keep-head``) the classifier is kept and the output
is an mmpretrain ``ImageClassifier`` checkpoint (``backbone.*``, ``head.fc.*``)
for ``tools/test.py configs/imagenet/...`` (ImageNet top-1/top-5).
"""
import copy
import os
import re
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

import torch
from mmengine.registry import MODELS
from torch import Tensor

from ..utils.io import (
    atomic_save,
    format_keys,
    safe_torch_load,
    state_dict_mismatches,
    strip_module_prefix,
)
from ..version import __version__
from .backbones.shufflenetv2_acon import meta_acon_reduction

__all__ = [
    'OFFICIAL_ARCHS', 'OFFICIAL_INPUT_CONVENTION', 'INPUT_CONVENTION_KEY',
    'ConversionError', 'detect_arch', 'expected_layout',
    'extract_state_dict', 'convert_state_dict', 'convert_checkpoint',
    'classifier_state_dict', 'HEAD_KEYS'
]


def _official_archs() -> Dict[str, dict]:
    archs = {}
    for depth in (50, 101, 152):
        for act, cfg in (('acon', 'AconC'), ('metaacon', 'MetaAconC')):
            archs[f'resnet{depth}_{act}'] = dict(
                type='ResNetACON', depth=depth, acon_cfg=dict(type=cfg))
    for width in (0.5, 1.0, 1.5, 2.0):
        for act, cfg in (('acon', 'AconC'), ('metaacon', 'MetaAconC')):
            acon_cfg = dict(type=cfg)
            if cfg == 'MetaAconC':
                acon_cfg['r'] = meta_acon_reduction(width)
            archs[f'shufflenetv2_{width}x_{act}'] = dict(
                type='ShuffleNetV2ACON', widen_factor=width, acon_cfg=acon_cfg)
    return archs


#: official network name -> the acon-mm backbone config that loads it
OFFICIAL_ARCHS: Dict[str, dict] = _official_archs()

#: What the official networks take as input (every official train.py, training
#: and evaluation alike): PIL decodes RGB, ``ToBGRTensor`` flips it to BGR and
#: keeps the 0..255 values as float, no mean subtraction, no std division.
#: ``channel_order`` is the order of the tensor the network sees,
#: ``value_range`` the maximum pixel value, ``mean``/``std`` per channel of that
#: tensor (``(x - mean) / std``). This is the one definition in acon-mm.
OFFICIAL_INPUT_CONVENTION: Dict[str, Any] = dict(
    channel_order='bgr', value_range=255, mean=[0.0, 0.0, 0.0],
    std=[1.0, 1.0, 1.0])

#: the key of a checkpoint's ``meta`` that holds its input convention
INPUT_CONVENTION_KEY = 'input_convention'

#: keys of the ImageNet classifier, dropped by the conversion
CLASSIFIER_PREFIXES = {'ResNetACON': ('fc.', ), 'ShuffleNetV2ACON': ('classifier.', )}

_RESNET_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_SHUFFLE_WIDTHS = {192: 0.5, 464: 1.0, 704: 1.5, 976: 2.0}


class ConversionError(ValueError):
    """The checkpoint does not match the official network it claims to be."""


def extract_state_dict(obj: Any, src: str = '<checkpoint>') -> Dict[str, Tensor]:
    """The tensors of ``{'state_dict': ...}`` or a bare state dict, ``module.`` stripped."""
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        sd = obj['state_dict']
    elif isinstance(obj, dict) and obj and all(
            isinstance(v, Tensor) for v in obj.values()):
        sd = obj
    else:
        kind = (f'a dict with keys {sorted(obj)[:10]}' if isinstance(obj, dict)
                else type(obj).__name__)
        raise ConversionError(
            f'{src}: expected {{"state_dict": {{...}}}} or a bare state dict of '
            f'tensors, got {kind}')
    not_tensors = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ConversionError(
            f'{src}: entries that are not tensors: {format_keys(not_tensors)}')
    return strip_module_prefix(sd)


def _num_blocks(keys, stage: int) -> int:
    pat = re.compile(rf'layer{stage}\.(\d+)\.')
    return len({int(m.group(1)) for k in keys for m in [pat.match(k)] if m})


def detect_arch(sd: Dict[str, Tensor]) -> str:
    """Name (as in :data:`OFFICIAL_ARCHS`) of the official network ``sd`` is from.

    Raises:
        ConversionError: the keys match no official network.
    """
    keys = list(sd)
    if 'first_conv.0.weight' in sd:
        w = sd.get('conv_last.0.weight')
        if w is None or w.dim() != 4 or int(w.shape[1]) not in _SHUFFLE_WIDTHS:
            got = None if w is None else tuple(w.shape)
            raise ConversionError(
                'looks like a ShuffleNetV2 (has first_conv.0.weight) but '
                f'conv_last.0.weight has shape {got}; its input channels should '
                f'be one of {sorted(_SHUFFLE_WIDTHS)} (0.5x/1.0x/1.5x/2.0x)')
        width = _SHUFFLE_WIDTHS[int(w.shape[1])]
        act = 'metaacon' if 'first_conv.2.fc1.weight' in sd else 'acon'
        return f'shufflenetv2_{width}x_{act}'
    if 'conv1.weight' in sd and 'layer1.0.conv1.weight' in sd:
        blocks = tuple(_num_blocks(keys, s) for s in range(1, 5))
        if blocks not in _RESNET_DEPTHS:
            raise ConversionError(
                f'looks like a ResNet but has {blocks} blocks per stage; the '
                'official ACON ResNets have '
                + ', '.join(f'{v}: {k}' for k, v in _RESNET_DEPTHS.items()))
        act = 'metaacon' if 'layer1.0.acon.fc1.weight' in sd else 'acon'
        return f'resnet{_RESNET_DEPTHS[blocks]}_{act}'
    raise ConversionError(
        'cannot detect the architecture: neither ResNet keys (conv1.weight, '
        'layer1.0.conv1.weight) nor ShuffleNetV2 keys (first_conv.0.weight) are '
        f'present; first keys: {keys[:5]}. Pass --arch, one of '
        f'{list(OFFICIAL_ARCHS)}')


def build_backbone(arch: str, device: Any = 'meta') -> torch.nn.Module:
    """The acon-mm backbone for official network ``arch`` (on ``device``)."""
    if arch not in OFFICIAL_ARCHS:
        raise ConversionError(f'unknown architecture {arch!r}; valid names are '
                              f'{list(OFFICIAL_ARCHS)}')
    with torch.device(device):
        return MODELS.build(copy.deepcopy(OFFICIAL_ARCHS[arch]))


def expected_layout(arch: str) -> 'OrderedDict[str, Tuple[int, ...]]':
    """``{key: shape}`` of the backbone state dict the conversion must produce."""
    model = build_backbone(arch, 'meta')
    return OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())


def convert_state_dict(
        sd: Dict[str, Tensor], arch: Optional[str] = None,
        src: str = '<checkpoint>') -> Tuple['OrderedDict[str, Tensor]', dict]:
    """Map an official state dict onto the acon-mm backbone.

    Args:
        sd: official tensors (``module.`` prefixes allowed).
        arch: official network name; detected from the keys when ``None``.
        src: name used in error messages.

    Returns:
        (converted state dict, info dict with ``arch``, ``backbone``, ``dropped``,
        ``detected``).

    Raises:
        ConversionError: unknown ``arch``; or missing, unexpected or mis-shaped
        tensors (all of them named).
    """
    sd = extract_state_dict(sd, src)
    detected = arch is None
    if arch is None:
        arch = detect_arch(sd)
    elif arch not in OFFICIAL_ARCHS:
        raise ConversionError(f'unknown --arch {arch!r}; valid names are '
                              f'{list(OFFICIAL_ARCHS)}')
    backbone_cfg = OFFICIAL_ARCHS[arch]
    cls_prefixes = CLASSIFIER_PREFIXES[backbone_cfg['type']]
    expected = expected_layout(arch)
    dropped = [k for k in sd if k.startswith(cls_prefixes)]
    body = OrderedDict((k, v) for k, v in sd.items() if k not in dropped)
    problems, _ = state_dict_mismatches(expected, body)
    if problems:
        how = 'detected' if detected else 'given with --arch'
        raise ConversionError(
            f'{src} does not match {arch} ({how}): ' + '; '.join(problems)
            + '. Nothing was written.')
    converted = OrderedDict((k, body[k].detach().clone().contiguous())
                            for k in expected)
    info = dict(arch=arch, detected=detected, backbone=copy.deepcopy(backbone_cfg),
                dropped=dropped)
    return converted, info


#: official classifier tensor -> mmpretrain ``LinearClsHead`` tensor
HEAD_KEYS = {
    'ResNetACON': {'fc.weight': 'head.fc.weight', 'fc.bias': 'head.fc.bias'},
    'ShuffleNetV2ACON': {'classifier.0.weight': 'head.fc.weight',
                         'classifier.0.bias': 'head.fc.bias'},
}


def classifier_state_dict(sd: Dict[str, Tensor], converted: Dict[str, Tensor],
                          backbone_type: str,
                          src: str = '<checkpoint>') -> 'OrderedDict[str, Tensor]':
    """An mmpretrain ``ImageClassifier`` state dict: ``backbone.*`` + ``head.fc.*``.

    Args:
        sd: the official tensors (``module.`` prefixes allowed).
        converted: the converted backbone (:func:`convert_state_dict`).
        backbone_type: ``'ResNetACON'`` or ``'ShuffleNetV2ACON'``.
        src: name used in error messages.

    Raises:
        ConversionError: the classifier tensors are missing or not 2-d/1-d.
    """
    sd = extract_state_dict(sd, src)
    mapping = HEAD_KEYS[backbone_type]
    missing = [k for k in mapping if k not in sd]
    if missing:
        raise ConversionError(
            f'{src}: --keep-head needs the classifier tensors {list(mapping)} '
            f'but {missing} are missing. Nothing was written.')
    w, b = sd[next(iter(mapping))], sd[list(mapping)[1]]
    if w.dim() != 2 or b.dim() != 1 or b.shape[0] != w.shape[0]:
        raise ConversionError(
            f'{src}: classifier weight {tuple(w.shape)} / bias '
            f'{tuple(b.shape)} are not a linear layer. Nothing was written.')
    out = OrderedDict((f'backbone.{k}', v) for k, v in converted.items())
    for k, new in mapping.items():
        out[new] = sd[k].detach().clone().contiguous()
    return out


def convert_checkpoint(src: str, dst: str, arch: Optional[str] = None,
                       verbose: bool = True, keep_head: bool = False) -> dict:
    """Convert the official checkpoint ``src`` into ``dst`` (atomically).

    ``src`` is loaded with ``torch.load(..., weights_only=True)``
    (:func:`acon_mm.utils.safe_torch_load`). ``dst`` holds
    ``{'state_dict': converted, 'meta': {...}}``; ``meta`` records the
    network, the source file and the input convention of the weights
    (``meta['input_convention']`` = :data:`OFFICIAL_INPUT_CONVENTION`).

    Args:
        src: the official checkpoint.
        dst: where to write the converted one.
        arch: official network name; detected from the keys when ``None``.
        verbose: print what was done.
        keep_head: keep the ImageNet classifier and write an mmpretrain
            ``ImageClassifier`` checkpoint (``backbone.*``, ``head.fc.*``) for
            ``tools/test.py configs/imagenet/<config> DST``; the default writes
            the backbone alone (for ``init_cfg=dict(type='Pretrained')``).

    Returns:
        dict: the ``meta`` written to ``dst``.
    """
    obj = safe_torch_load(src, map_location='cpu')
    converted, info = convert_state_dict(obj, arch, src=src)
    num_params = sum(v.numel() for k, v in converted.items()
                     if v.is_floating_point())
    meta = dict(
        arch=info['arch'],
        backbone=info['backbone'],
        source=os.path.basename(src),
        converted_by=f'acon_mm {__version__} '
        'tools/model_converters/acon_official_to_mm.py',
        num_tensors=len(converted),
        num_values=int(num_params),
        dropped=info['dropped'],
    )
    meta[INPUT_CONVENTION_KEY] = copy.deepcopy(OFFICIAL_INPUT_CONVENTION)
    state_dict = converted
    if keep_head:
        state_dict = classifier_state_dict(obj, converted,
                                           info['backbone']['type'], src)
        meta['dropped'] = []
        meta['model'] = 'mmpretrain ImageClassifier (backbone.*, head.fc.*)'
        meta['num_classes'] = int(state_dict['head.fc.weight'].shape[0])
    atomic_save({'state_dict': state_dict, 'meta': meta}, dst)
    if verbose:
        print(f'source      : {src}')
        print(f'architecture: {info["arch"]} '
              f'({"detected from the keys" if info["detected"] else "--arch"})')
        print(f'converted   : {len(converted)} tensors '
              f'({num_params / 1e6:.2f} M values), all keys mapped')
        if keep_head:
            print(f'classifier  : kept as head.fc.* '
                  f'({meta["num_classes"]} classes); backbone keys prefixed '
                  "'backbone.'")
        else:
            print(f'dropped     : {len(info["dropped"])} classifier tensors '
                  f'{info["dropped"]}')
        print(f'input       : {OFFICIAL_INPUT_CONVENTION} (recorded in '
              f"meta['{INPUT_CONVENTION_KEY}']; the config's data_preprocessor "
              'must match: mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=False)')
        print(f'written     : {dst}')
        if keep_head:
            print('use it with : python tools/test.py '
                  'configs/imagenet/<matching config> ' + dst)
        else:
            bb = dict(info['backbone'],
                      init_cfg=dict(type='Pretrained', checkpoint=dst))
            print(f'use it with : backbone={bb}')
    return meta
