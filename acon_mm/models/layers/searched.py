r"""An activation written as an expression: the layer of the activation search.

``SearchedActivation(expr='max(x, sigmoid(x))')`` or, in a config,
``acon_cfg=dict(type='SearchedActivation', expr='x*sigmoid(beta*x)')``: the
function :math:`f(x; \beta_0, \dots, \beta_{k-1})` of an expression of the
grammar of :mod:`acon_mm.models.layers.expression` (the 25 unary and 10 binary functions
of "Searching for Activation Functions" and their compositions), with each
:math:`\beta` a trainable per-channel parameter.
"""
from typing import Optional

import torch
from mmengine.registry import MODELS
from torch import Tensor

from .acon import ChannelActivation
from .expression import (
    GrammarError,
    canonical,
    compile_expression,
    depends_on_x,
    num_betas,
    parse,
)

__all__ = ['SearchedActivation']


def _encode(text: str) -> Tensor:
    return torch.tensor(list(text.encode('utf-8')), dtype=torch.uint8)


def _decode(t: Tensor) -> str:
    return bytes(t.detach().cpu().tolist()).decode('utf-8', errors='replace')


@MODELS.register_module()
class SearchedActivation(ChannelActivation):
    r"""An activation given by an expression, with per-channel trainable betas.

    .. math::
        y = f(x; \beta_0, \dots, \beta_{k-1}), \qquad
        \beta_i \in \mathbb{R}^{1 \times C \times 1 \times 1}

    e.g. ``expr='max(x, sigmoid(x))'`` (no parameter) or
    ``expr='x*sigmoid(beta*x)'`` (Swish-β with a per-channel β). The grammar
    (:mod:`acon_mm.models.layers.expression`): ``x``; numbers; ``eps``; ``+ - * / **``;
    ``abs sqrt exp log sin cos sinh cosh tanh asinh atan sinc sigmoid softplus
    erf`` of one argument and ``max min`` of two. Every ``beta`` is its own
    parameter and ``beta_1``, ``beta_2``, ... are shared by name; all start at
    ``beta_init`` (1: ``x*sigmoid(beta*x)`` starts as SiLU). The expression is
    parsed, never evaluated as Python: anything else is refused naming the token.

    The expression compiles once (:func:`~acon_mm.models.layers.expression.compile_expression`)
    into a :class:`torch.fx.GraphModule` of its torch ops. Unlike the fused ACON
    layers (which keep only their input for the backward pass), autograd keeps
    what each op needs: about one activation-sized tensor per op.

    The canonical form of the expression (:attr:`expr`, the stable name the
    search and its reports use) is kept in the state dict (buffer
    ``expression``, its UTF-8 bytes), so a checkpoint of another expression is
    refused by name instead of loading its betas into this one.

    Args:
        expr (str): the expression.
        num_channels (int, optional): channels C; ``None`` infers them from the
            first input (or :func:`~acon_mm.models.layers.build_acon_layer` gives them).
        beta_init (float): initial value of every beta. Default: 1.0.
        inplace (bool): ignored (ConvModule compatibility).

    Raises:
        GrammarError: the expression is outside the grammar or does not depend on
            ``x``.
    """

    def __init__(self, expr: str, num_channels: Optional[int] = None,
                 beta_init: float = 1.0, inplace: bool = False):
        tree = parse(expr)
        if not depends_on_x(tree):
            raise GrammarError(f'SearchedActivation: {expr!r} does not depend on x: it is '
                               'not an activation')
        self.expr = canonical(tree)
        self.beta_init = float(beta_init)
        self.num_beta = num_betas(tree)
        super().__init__(num_channels, inplace)
        self.fn = compile_expression(tree)
        self.register_buffer('expression', _encode(self.expr))

    def _param_inits(self):
        init = float(self.beta_init)
        return {f'beta_{i}': (lambda shape: torch.full(shape, init))
                for i in range(self.num_beta)}

    @property
    def betas(self):
        return [getattr(self, f'beta_{i}') for i in range(self.num_beta)]

    def forward(self, x: Tensor) -> Tensor:
        if self.num_channels is not None:
            self._check_input(x)
        return self.fn(x, *self.betas)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        key = prefix + 'expression'
        if key in state_dict:
            theirs = _decode(state_dict[key])
            if theirs != self.expr:
                where = f" '{self.layer_name}'" if self.layer_name else ''
                raise ValueError(
                    f'SearchedActivation{where} ({prefix.rstrip(".") or "the layer"}): '
                    f'the checkpoint holds expr={theirs!r}, this layer is '
                    f'expr={self.expr!r}; build the model with the expression it was '
                    'trained with')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f'expr={self.expr!r}, num_channels={self.num_channels}'
