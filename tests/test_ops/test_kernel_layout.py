"""acon_mm.ops.layout: how the Triton kernels see their arguments (beta modes,
strides, memory layout) and which arguments they do not take."""
import torch

from acon_mm.ops.layout import BETA_PIX, BETA_ROW, kernel_layout


def test_kernel_layout_modes():
    x = torch.randn(2, 4, 3, 5)
    xl = x.contiguous(memory_format=torch.channels_last)
    p = torch.randn(1, 4, 1, 1)
    cases = {(1, 1, 1, 1): (BETA_ROW, 0, 0), (1, 4, 1, 1): (BETA_ROW, 0, 1),
             (2, 1, 1, 1): (BETA_ROW, 1, 0), (2, 4, 1, 1): (BETA_ROW, 4, 1),
             (2, 1, 3, 5): (BETA_PIX, 15, 0), (1, 1, 3, 1): (BETA_PIX, 0, 0)}
    for bshape, (mode, bsn, bsc) in cases.items():
        for xx in (x, xl):
            lay = kernel_layout(xx, p, p * 0.5, torch.rand(bshape), torch.float32)
            assert (lay.bmode, lay.bsn, lay.bsc) == (mode, bsn, bsc), bshape
            assert lay.nhwc == (xx is xl)
            assert lay.beta.is_contiguous()
    assert not kernel_layout(x[..., ::2], p, None, torch.rand(1), torch.float32).nhwc


def test_arguments_the_kernels_do_not_take():
    """A beta varying over both the channels and the pixels (the input's full shape
    included: no layer makes one) and a parameter that is not per channel: ``None``,
    the PyTorch fused function."""
    x = torch.randn(2, 4, 3, 5)
    p = torch.randn(1, 4, 1, 1)
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        for bshape in [(2, 4, 3, 5), (1, 4, 3, 1), (1, 4, 3, 5), (4, 1, 5)]:
            assert kernel_layout(xx, p, None, torch.rand(bshape), torch.float32) is None, \
                bshape
    assert kernel_layout(x, torch.randn(1, 4, 3, 1), None, torch.rand(1), torch.float32) \
        is None
    assert kernel_layout(torch.randn(4), None, None, torch.rand(1), torch.float32) is None
