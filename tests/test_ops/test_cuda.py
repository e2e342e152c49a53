"""The ACON layers on a CUDA device (``pytest -m cuda``; skipped without CUDA).

Every layer and :func:`acon_mm.ops.acon` in float32, float16 and bfloat16, on
contiguous, channels_last and sliced (non-contiguous) inputs, against the naive
formula in float32: outputs and all gradients (input and parameters). Then
meta-ACON with batch 1, and one AMP train step of the RetinaNet and PSPNet
meta-ACON configs. Run by ``tools/gpu_check.sh`` on the GPU machine.
"""
import copy
import os.path as osp

import pytest
import torch

import acon_mm  # noqa: F401
from acon_mm.models.layers import AconA, AconB, AconC, MetaAconC, SwishBeta
from acon_mm.ops import acon, acon_backend, acon_impl, acon_naive

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA'),
]

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
#: (output atol/rtol, gradient atol/rtol) against the float32 reference
TOL = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (2e-3, 1e-2),
    torch.bfloat16: (2e-2, 5e-2),
}
LAYOUTS = ['contiguous', 'channels_last', 'sliced']


def _input(layout: str, dtype, shape=(2, 16, 9, 11), device='cuda'):
    torch.manual_seed(0)
    if layout == 'sliced':  # a non-contiguous view: every other column
        big = (torch.randn(shape[:-1] + (2 * shape[-1], ), device=device) * 2).to(dtype)
        x = big[..., ::2]
    else:
        x = (torch.randn(shape, device=device) * 2).to(dtype)
        if layout == 'channels_last':
            x = x.contiguous(memory_format=torch.channels_last)
    assert (layout == 'contiguous') == x.is_contiguous()
    return x


def _close(a, b, tol, what):
    atol, rtol = tol
    a, b = a.float(), b.float()
    err = (a - b).abs().max().item() if a.numel() else 0.0
    scale = b.abs().max().item() if b.numel() else 0.0
    assert err <= atol + rtol * scale, f'{what}: max error {err:.3g} (scale {scale:.3g})'


def _check_layer(layer, x, dtype, device='cuda'):
    """Fused layer on ``x`` vs the naive formula on ``x.float()``, same parameters."""
    ref_layer = copy.deepcopy(layer).float()
    xf = x.detach().float().requires_grad_(True)
    x = x.detach().requires_grad_(True)
    y = layer(x)
    assert y.dtype == dtype and y.shape == x.shape
    g = torch.randn_like(y, dtype=torch.float32)
    (y.float() * g).sum().backward()
    with acon_impl('naive'):
        yr = ref_layer(xf)
    (yr * g).sum().backward()
    out_tol, grad_tol = TOL[dtype]
    name = type(layer).__name__
    _close(y, yr, (out_tol, out_tol * 10), f'{name} output')
    _close(x.grad, xf.grad, grad_tol, f'{name} dx')
    for (pn, p), (_, pr) in zip(layer.named_parameters(), ref_layer.named_parameters()):
        assert p.grad is not None, f'{name}.{pn} got no gradient'
        _close(p.grad, pr.grad, (grad_tol[0] * 10, grad_tol[1]), f'{name}.{pn} grad')


LAYERS = {
    'AconA': lambda c: AconA(c),
    'AconB': lambda c: AconB(c),
    'AconC': lambda c: AconC(c),
    'SwishBeta': lambda c: SwishBeta(),
    'SwishBeta-per-channel': lambda c: SwishBeta(per_channel=True, num_channels=c),
    'MetaAconC-channel': lambda c: MetaAconC(c, switch='channel', r=4),
    'MetaAconC-layer': lambda c: MetaAconC(c, switch='layer', r=4),
    'MetaAconC-pixel': lambda c: MetaAconC(c, switch='pixel', r=4),
}


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('name', list(LAYERS))
def test_layer_matches_naive(name, dtype, layout):
    x = _input(layout, dtype)
    layer = LAYERS[name](x.shape[1]).cuda().train()
    if name.startswith('MetaAconC'):
        layer.eval()  # the switch's BatchNorm: same running statistics in both
    _check_layer(layer, x, dtype)


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('beta_shape', ['scalar', 'channel', 'sample', 'sample_channel',
                                        'pixel', 'full'])
def test_acon_function_matches_naive(beta_shape, dtype, layout):
    x = _input(layout, dtype)
    N, C, H, W = x.shape
    assert acon_backend(x) == 'triton', acon_backend(x)
    shapes = dict(scalar=(1, 1, 1, 1), channel=(1, C, 1, 1), sample=(N, 1, 1, 1),
                  sample_channel=(N, C, 1, 1), pixel=(N, 1, H, W), full=(N, C, H, W))
    torch.manual_seed(1)
    p1 = torch.randn(1, C, 1, 1, device='cuda', requires_grad=True)
    p2 = torch.randn(1, C, 1, 1, device='cuda', requires_grad=True)
    beta = torch.rand(shapes[beta_shape], device='cuda').add_(0.5).requires_grad_(True)
    xg = x.detach().requires_grad_(True)
    y = acon(xg, p1, p2, beta)
    g = torch.randn(y.shape, device='cuda')
    (y.float() * g).sum().backward()
    grads = [t.grad.clone() for t in (xg, p1, p2, beta)]
    refs = [t.detach().float().requires_grad_(True) for t in (x, p1, p2, beta)]
    (acon_naive(*refs) * g).sum().backward()
    out_tol, grad_tol = TOL[dtype]
    _close(y, acon_naive(*[r.detach() for r in refs]), (out_tol, out_tol * 10), 'output')
    for what, a, r in zip(('dx', 'dp1', 'dp2', 'dbeta'), grads, refs):
        _close(a, r.grad, grad_tol if what == 'dx' else (grad_tol[0] * 10, grad_tol[1]),
               what)


def test_output_keeps_the_input_memory_format():
    x = _input('channels_last', torch.float16)
    layer = AconC(x.shape[1]).cuda()
    y = layer(x)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_second_device_tensor_runs_on_its_own_device():
    if torch.cuda.device_count() < 2:
        pytest.skip('needs two GPUs')
    x = _input('contiguous', torch.float32, device='cuda:1')
    layer = AconC(x.shape[1]).to('cuda:1')
    with torch.cuda.device(0):
        _check_layer(layer, x, torch.float32, device='cuda:1')


@pytest.mark.parametrize('switch', ['channel', 'layer', 'pixel'])
def test_meta_acon_batch_one_trains(switch):
    x = _input('contiguous', torch.float32, shape=(1, 16, 7, 7))
    layer = MetaAconC(16, switch=switch, r=4).cuda().train()
    _check_layer(layer, x, torch.float32)


def _det_batch(device):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=(3, 320, 320), num_items=[3, 2],
                          num_classes=80, device=device)


def _seg_batch(device):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for i in range(2):
        inputs.append(torch.randint(0, 256, (3, 256, 512), dtype=torch.uint8, device=device))
        s = SegDataSample(metainfo=dict(img_shape=(256, 512), ori_shape=(256, 512),
                                        pad_shape=(256, 512)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, 256, 512), device=device))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def amp_train_steps(config: str, batch_fn, device: str = 'cuda', steps: int = 2):
    """Build ``config``'s model (no pretrained weights) and run AMP train steps.

    Returns the list of total losses (floats).
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS

    from acon_mm.engine.runner_utils import config_task, register_task_modules
    cfg = Config.fromfile(osp.join(ROOT, config))
    register_task_modules(config_task(cfg), init_default_scope=True)
    cfg.model.backbone.init_cfg = None
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device).train()
    amp = device == 'cuda'
    optim = build_optim_wrapper(model, dict(
        type='AmpOptimWrapper' if amp else 'OptimWrapper',
        optimizer=dict(type='SGD', lr=0.001, momentum=0.9)))
    losses = []
    for _ in range(steps):
        log_vars = model.train_step(batch_fn(device), optim)
        losses.append(float(log_vars['loss']))
    return losses


def test_retinanet_metaacon_amp_train_step():
    losses = amp_train_steps('configs/retinanet/retinanet_r50-metaacon_fpn_1x_coco.py',
                             _det_batch)
    assert all(torch.isfinite(torch.tensor(losses))), losses


def test_pspnet_metaacon_amp_train_step():
    losses = amp_train_steps(
        'configs/pspnet/pspnet_r50-d8-metaacon_4xb2-80k_cityscapes-512x1024.py', _seg_batch)
    assert all(torch.isfinite(torch.tensor(losses))), losses


# --------------------------------------------------------------------------
# Triton dispatch: probe, channels_last without copies, bounded recompilation
# --------------------------------------------------------------------------
def test_triton_probe_passed_for_every_dtype():
    from acon_mm.ops import dispatch
    for dtype in DTYPES:
        x = _input('contiguous', dtype)
        assert acon_backend(x) == 'triton'
        assert dispatch._triton_probe_results[(x.device, dtype)] is None


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_channels_last_saves_the_input_itself(dtype):
    """Nothing full-size is saved but ``x`` (no contiguous copy); y and dx channels_last."""
    x = _input('channels_last', dtype, shape=(4, 32, 20, 24)).requires_grad_()
    layer = AconC(32).cuda()
    full = []

    def pack(t):
        if t.numel() >= x.numel():
            full.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    assert full and all(t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
                        for t in full)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.backward(torch.randn_like(y))  # randn_like keeps channels_last
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_no_full_size_copies(layout):
    """Forward allocates y only, backward dx only (memory_allocated peaks)."""
    x = _input(layout, torch.float16, shape=(8, 64, 56, 56)).requires_grad_()
    nbytes = x.numel() * x.element_size()
    p1 = torch.randn(1, 64, 1, 1, device='cuda', requires_grad=True)
    p2 = torch.randn(1, 64, 1, 1, device='cuda', requires_grad=True)
    beta = torch.rand(1, 64, 1, 1, device='cuda', requires_grad=True)
    acon(x, p1, p2, beta).backward(torch.ones_like(x))  # compile / probe first
    gout = torch.randn_like(x)
    x.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = acon(x, p1, p2, beta)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base <= nbytes * 1.05 + 2**20
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y.backward(gout)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base <= nbytes * 1.05 + 2**20


def test_multi_scale_does_not_recompile_per_size():
    from acon_mm.ops.triton import nchw, nhwc
    kernels = [nchw._acon_fwd_kernel, nchw._acon_bwd_row_kernel,
               nhwc._acon_fwd_nhwc_kernel, nhwc._acon_bwd_nhwc_kernel]
    if not all(hasattr(k, 'device_caches') for k in kernels):
        pytest.skip('this Triton version has no JITFunction.device_caches')

    def count():
        return [sum(len(c[0]) for c in k.device_caches.values()) for k in kernels]

    layer = AconC(32).cuda()
    for H, W in [(40, 48), (44, 53)]:  # warm both L % 16 flags of the bucket
        for cl in (False, True):
            x = _input('channels_last' if cl else 'contiguous', torch.float16,
                       shape=(2, 32, H, W))
            layer(x.requires_grad_()).sum().backward()
    before = count()
    for H in range(33, 61, 3):  # 10 new sizes, L in (1024, 4096]: the same bucket
        for W in (37, 48):
            for cl in (False, True):
                x = _input('channels_last' if cl else 'contiguous', torch.float16,
                           shape=(2, 32, H, W))
                layer(x.requires_grad_()).sum().backward()
    after = count()
    assert after == before, (before, after)  # no new variant for 40 new image sizes
