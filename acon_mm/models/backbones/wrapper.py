r"""ACON in any backbone: replace chosen activation modules of a built model.

:func:`replace_activations` works on any ``nn.Module``; ``ACONBackbone`` is the
same as a config entry, for any registered backbone (mmdet's ``ResNeXt`` or
``RegNet``, mmseg's ``ResNetV1c``, mmpretrain's ``EfficientNet``, ...)::

    backbone=dict(
        type='ACONBackbone',
        backbone=dict(type='ResNeXt', depth=50, groups=32, base_width=4, ...),
        acon_cfg=dict(type='MetaAconC'),
        replace=dict(types=['ReLU'], include=['layer3.*', 'layer4.*']))

``ACONBackbone`` is a builder, not a wrapper module: it returns the backbone it
built, with the activations replaced in place, so **every parameter keeps its
name** (a checkpoint of the plain backbone, a detector checkpoint with
``backbone.*`` keys, the backbone's own ``init_cfg``, ``frozen_stages`` and
``norm_eval`` all work as before); only the ACON parameters are new.

What is replaced: every module whose class name is in ``types`` (``ReLU``,
``SiLU``, ``GELU``, mmcv's ``Swish``, ...) and whose name matches one of the
``include`` patterns (``fnmatch``, default: all) and none of ``exclude``. The
width of each is read from one forward pass of ``probe_shape`` (eval mode, no
gradients). A module called at several places with different widths — mmdet's
``Bottleneck`` calls one ``self.relu`` after ``bn1`` (``planes``), ``bn2``
(``planes``) and the shortcut add (``4 * planes``) — becomes a
:class:`PerWidthActivation`: one ACON layer per width (``relu.c64``,
``relu.c256``), so the call sites of equal width share one. A module the probe
does not reach, or that sees anything but ``(N, C, H, W)`` (channels-last MLPs,
tokens), is refused by name; exclude it. A new ACON layer whose nearest earlier
sibling with parameters (the norm before it, as registered) is frozen —
``frozen_stages`` — is frozen too (its switch BN follows ``norm_eval``). The
replaced modules are logged.

The ACON authors' advice where replacing every ReLU is too slow: replace the
last stages only (``include=['layer3.*', 'layer4.*']``).
"""
import fnmatch
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.registry import MODELS
from torch import Tensor

from ..layers import build_acon_layer, name_acon_layers

__all__ = ['ACONBackbone', 'PerWidthActivation', 'replace_activations']

_REPLACE_KEYS = ('types', 'include', 'exclude', 'probe_shape')


class PerWidthActivation(nn.Module):
    """One activation per input width, for a module called with several
    (children ``c{width}``; ``x.shape[1]`` picks one).

    Args:
        layers (dict[int, nn.Module]): width -> activation.
        where (str): the module's name, for errors.
    """

    def __init__(self, layers: Dict[int, nn.Module], where: str = ''):
        super().__init__()
        self.where = where
        for width, layer in sorted(layers.items()):
            self.add_module(f'c{width}', layer)
        self.widths = tuple(sorted(layers))

    def forward(self, x: Tensor) -> Tensor:
        layer = getattr(self, f'c{x.shape[1]}', None)
        if layer is None:
            raise RuntimeError(f'{self.where}: an input of {x.shape[1]} channels; the '
                               f'ACON layers here were built for {list(self.widths)} '
                               '(the widths the probe forward saw)')
        return layer(x)


def _parent(root: nn.Module, name: str):
    parent_name, _, attr = name.rpartition('.')
    return (root.get_submodule(parent_name) if parent_name else root), attr


def _probe_widths(model: nn.Module, names: List[str], probe_shape: Sequence[int]
                  ) -> Dict[str, set]:
    seen: Dict[str, set] = {n: set() for n in names}
    shapes: Dict[str, tuple] = {}

    def hook(name):
        def fn(mod, args):
            x = args[0] if args else None
            if isinstance(x, Tensor):
                if x.dim() == 4:
                    seen[name].add(int(x.shape[1]))
                else:
                    shapes[name] = tuple(x.shape)
        return fn

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(*probe_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for n, shape in shapes.items():
        raise ValueError(
            f'{n} ({type(model.get_submodule(n)).__name__}) sees inputs of shape {shape}: '
            'ACON layers act per channel on (N, C, H, W), so its width cannot be '
            "inferred (a channels-last MLP or tokens?); add it to replace['exclude']")
    for n in names:
        if not seen[n]:
            raise ValueError(
                f'{n} ({type(model.get_submodule(n)).__name__}) was not called by a '
                f'forward of shape {tuple(probe_shape)}, so its width cannot be inferred; '
                "add it to replace['exclude'] or give replace['probe_shape']")
    return seen


def replace_activations(model: nn.Module, acon_cfg: dict,
                        types: Sequence[str] = ('ReLU', ),
                        include: Optional[Sequence[str]] = None,
                        exclude: Sequence[str] = (),
                        probe_shape: Sequence[int] = (1, 3, 64, 64),
                        where: str = '') -> List[dict]:
    """Replace activation modules of ``model`` in place with ``acon_cfg`` layers
    of the right width (see the module docstring).

    Args:
        model (nn.Module): e.g. a built backbone; its forward must take one
            tensor of ``probe_shape``.
        acon_cfg (dict): e.g. ``dict(type='AconC')`` (any type of
            :func:`~acon_mm.models.layers.build_acon_layer`).
        types (list[str]): class names of the modules to replace.
        include (list[str], optional): ``fnmatch`` patterns of module names.
        exclude (list[str]): patterns of module names left alone.
        probe_shape (tuple[int]): the input of the width-probing forward.
        where (str): the model, for messages.

    Returns:
        list[dict]: ``name``, ``old`` (class name), ``widths``, one per module.

    Raises:
        ValueError: ``types`` or ``include`` match no module (the message lists
        what there is), or a width cannot be inferred (the module named).
    """
    head = f'{where}: ' if where else ''
    types = [types] if isinstance(types, str) else list(types)
    by_type = [(n, m) for n, m in model.named_modules()
               if n and type(m).__name__ in types]
    if not by_type:
        present = sorted({type(m).__name__ for _, m in model.named_modules()
                          if type(m).__module__.startswith(('torch.nn.modules.activation',
                                                            'mmcv.cnn.bricks'))})
        raise ValueError(f"{head}replace['types'] {types} match no module; the "
                         f'activation types in this model are {present}')
    chosen = [(n, m) for n, m in by_type
              if (include is None or any(fnmatch.fnmatchcase(n, p) for p in include))
              and not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not chosen:
        sample = ', '.join(n for n, _ in by_type[:6])
        raise ValueError(f"{head}replace include={list(include or [])} exclude="
                         f'{list(exclude)} leave no {"/".join(types)} module to replace; '
                         f'there are {len(by_type)}, e.g. {sample}')
    widths = _probe_widths(model, [n for n, _ in chosen], probe_shape)
    replaced = []
    for name, old in chosen:
        parent, attr = _parent(model, name)
        before = []  # the siblings registered before it (its norm, conv, ...)
        for c_name, c in parent.named_children():
            if c_name == attr:
                break
            before.append(list(c.parameters()))
        prev = next((ps for ps in reversed(before) if ps), [])
        layers = {w: build_acon_layer(acon_cfg, w, where=name) for w in sorted(widths[name])}
        new = layers[next(iter(layers))] if len(layers) == 1 else \
            PerWidthActivation(layers, where=name)
        if prev and not any(p.requires_grad for p in prev):
            for p in new.parameters():
                p.requires_grad = False
        setattr(parent, attr, new)
        replaced.append(dict(name=name, old=type(old).__name__,
                             widths=sorted(widths[name])))
    name_acon_layers(model)
    return replaced


@MODELS.register_module(name='ACONBackbone')
def ACONBackbone(backbone: dict, acon_cfg: dict = dict(type='AconC'),
                 replace: Optional[dict] = None) -> nn.Module:
    """Build ``backbone`` and replace its activations (see the module docstring).

    Args:
        backbone (dict): any registered backbone's config.
        acon_cfg (dict): the activation put in.
        replace (dict, optional): :func:`replace_activations`' ``types``
            (default ``['ReLU']``), ``include``, ``exclude``, ``probe_shape``.

    Returns:
        nn.Module: the backbone itself, its parameter names unchanged.
    """
    replace = dict(replace or {})
    unknown = sorted(set(replace) - set(_REPLACE_KEYS))
    if unknown:
        raise ValueError(f'ACONBackbone: replace has unknown key(s) {unknown}; valid keys '
                         f'are {list(_REPLACE_KEYS)}')
    if not isinstance(backbone, dict) or 'type' not in backbone:
        raise TypeError(f"ACONBackbone: backbone must be a config dict with a 'type', "
                        f'got {backbone!r}')
    model = MODELS.build(backbone)
    where = f'ACONBackbone({backbone["type"]})'
    done = replace_activations(model, acon_cfg, where=where, **replace)
    lines = [f'  {d["name"]}: {d["old"]} -> {acon_cfg["type"]} {d["widths"]}' for d in done]
    print_log(f'{where}: {len(done)} activation module(s) replaced:\n' + '\n'.join(lines),
              logger='current')
    model.acon_replaced = done
    return model
