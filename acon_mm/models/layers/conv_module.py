"""Give lazy ACON layers their width where mmcv's ``ConvModule`` builds them.

``ConvModule`` builds its activation from ``act_cfg`` without telling it the
number of channels, so ``act_cfg=dict(type='AconC')`` yields a lazy layer. Its
width is known right after the convolution is built, so acon-mm materialises the
layer at the end of ``ConvModule.__init__``. Every FPN, PSPHead, ... built with an
ACON ``act_cfg`` therefore owns all its parameters before the optimizer or
``DistributedDataParallel`` look at the model (a plain lazy module would only
get them at its first forward).

The wrapper is installed once on ``import acon_mm`` and does nothing for any
other activation.
"""
import functools

from mmcv.cnn import ConvModule

from .acon import BaseAcon

_MARK = '_acon_mm_materializes_acon'


def _acon_width(module: ConvModule) -> int:
    order = module.order
    # the activation sees the conv's output if it comes after the conv
    if order.index('act') > order.index('conv'):
        return module.conv.out_channels
    return module.conv.in_channels


def patch_conv_module() -> None:
    """Wrap ``ConvModule.__init__`` to materialise lazy ACON activations."""
    init = ConvModule.__init__
    if getattr(init, _MARK, False):
        return

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        act = getattr(self, 'activate', None)
        if self.with_activation and isinstance(act, BaseAcon) \
                and not act.is_materialized:
            act.materialize(_acon_width(self))

    setattr(__init__, _MARK, True)
    ConvModule.__init__ = __init__
