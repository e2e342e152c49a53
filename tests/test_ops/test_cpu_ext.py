"""The C++ extension (acon_mm.ops.cpu_ext, sources in acon_mm/ops/csrc): its ACON
function against the naive formula (float64 gradcheck, float32, every beta layout it
takes: constant over the pixels, or over the channels), the arguments it leaves to the
PyTorch path, the constants it exports, and the build cache key."""
import fnmatch
import os.path as osp
import re
import shutil
import sys

import pytest
import torch
from torch.autograd import gradcheck

import acon_mm  # noqa: F401  (registers the layers)
from acon_mm.ops import acon_impl, acon_naive, cpu_ext

C = 5
# beta layouts: constant over the pixels (per-row kernels) and varying over them (but
# constant over the channels); varying over both (the full shape among them): None
ROW_BETAS = [(1, 1, 1, 1), (1, C, 1, 1), (3, C, 1, 1), (3, 1, 1, 1), (C, 1, 1)]
PIXEL_BETAS = [(3, 1, 4, 3), (1, 1, 4, 3), (4, 1), (1, 1, 4, 1), (3, 1, 1, 3)]
CHANNEL_PIXEL_BETAS = [(3, C, 4, 3), (1, C, 1, 3), (C, 4, 3), (1, C, 4, 1)]


def _header_constants() -> dict:
    """``constexpr`` constants of acon_constants.h, by name."""
    with open(osp.join(cpu_ext.CSRC_DIR, 'common', 'acon_constants.h')) as f:
        text = f.read()
    return {name: int(value) for name, value in
            re.findall(r'constexpr\s+\w+\s+(k\w+)\s*=\s*(\d+)\s*;', text)}


def test_extension_exports_the_header_constants(cpu_ext):
    header = _header_constants()
    assert header, 'no constants found in acon_constants.h'
    exported = {k: getattr(cpu_ext, k) for k in dir(cpu_ext) if k.isupper()}
    names = {'kSeg': 'SEG', 'kChannelMajorMaxRow': 'CHANNEL_MAJOR_MAX_ROW',
             'kFlatMaxRow': 'FLAT_MAX_ROW', 'kParallelMinNumel': 'PARALLEL_MIN_NUMEL'}
    assert set(names) == set(header), 'a new constant: export it from the binding'
    for cname, pyname in names.items():
        assert exported[pyname] == header[cname], pyname
    assert exported['VECTOR_WIDTH'] in (8, 16)
    from acon_mm.ops.cpu_ext import ext_constants
    assert ext_constants() == exported


def _args(bshape, combo, dtype=torch.float64, shape=(3, C, 4, 3), seed=3):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    pshape = (1, c) + (1, ) * (len(shape) - 2)
    x = torch.randn(shape, generator=g, dtype=dtype) * 2
    p1 = torch.randn(pshape, generator=g, dtype=dtype) if combo == 'both' else None
    p2 = torch.randn(pshape, generator=g, dtype=dtype) if combo != 'none' else None
    beta = torch.rand(bshape, generator=g, dtype=dtype) * 2 + 0.1
    return [t.requires_grad_() if t is not None else None for t in (x, p1, p2, beta)]


@pytest.mark.parametrize('bshape', ROW_BETAS + PIXEL_BETAS)
@pytest.mark.parametrize('combo', ['none', 'p2', 'both'])
def test_acon_gradcheck_float64(cpu_ext, bshape, combo):
    x, p1, p2, beta = _args(bshape, combo)
    y = cpu_ext.acon_fused(x, p1, p2, beta)
    assert y is not None and 'AconFn' in y.grad_fn.name()
    torch.testing.assert_close(y, acon_naive(x, p1, p2, beta))
    inputs = tuple(t for t in (x, p1, p2, beta) if t is not None)

    def f(*args):
        it = iter(args)
        return cpu_ext.acon_fused(next(it), next(it) if p1 is not None else None,
                                  next(it) if p2 is not None else None, next(it))

    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('shape', [(4, 8, 37, 40), (6, 101, 7, 7), (2, 3, 5)])
@pytest.mark.parametrize('kind', ['sample_pixel', 'shared_pixel', 'row'])
def test_per_pixel_beta_matches_naive_float32(cpu_ext, kind, shape, threads):
    # rows of 1480 values are cut into two segments of at most SEG = 1024; 7x7 rows
    # would take the flat layout with a per-row beta. Reference: float64 naive formula.
    N, sp = shape[0], shape[2:]
    bshape = {'sample_pixel': (N, 1) + sp, 'shared_pixel': (1, 1) + sp,
              'row': (N, 1) + sp[:-1] + (1, )}[kind]
    x, p1, p2, beta = _args(bshape, 'both', torch.float32, shape=shape, seed=len(kind))
    gout = torch.randn(shape)
    ref = [t.detach().double().requires_grad_() for t in (x, p1, p2, beta)]
    y0 = acon_naive(*ref)
    y0.backward(gout.double())
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y1 = cpu_ext.acon_fused(x, p1, p2, beta)
        assert y1 is not None
        y1.backward(gout)
    finally:
        torch.set_num_threads(n)
    torch.testing.assert_close(y1.double(), y0, rtol=1e-5, atol=1e-5)
    for name, a, b in zip(('x', 'p1', 'p2', 'beta'), (x, p1, p2, beta), ref):
        assert a.grad.shape == a.shape
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-3,
                                   msg=f'grad of {name}')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_input_computes_in_float32(cpu_ext, dtype):
    x, p1, p2, beta = _args((3, 1, 4, 3), 'both', torch.float32)
    xh = x.detach().to(dtype).requires_grad_()
    y = cpu_ext.acon_fused(xh, p1, p2, beta)
    assert y.dtype == dtype and 'AconFn' in y.grad_fn.name()
    y.backward(torch.ones_like(y))
    assert xh.grad.dtype == dtype and p1.grad.dtype == torch.float32
    torch.testing.assert_close(y.float(), acon_naive(xh.float(), p1, p2, beta),
                               rtol=1e-2, atol=1e-2)


def test_returns_none_for_arguments_it_does_not_take(cpu_ext):
    x, p1, p2, beta = _args((1, C, 1, 1), 'both')
    assert cpu_ext.acon_fused(x, torch.ones(1, C, 4, 3, dtype=x.dtype), p2, beta) is None
    assert cpu_ext.acon_fused(x, p1, p2, torch.ones(2, 1, 1, 1, dtype=x.dtype)) is None
    assert cpu_ext.acon_fused(x.detach().long(), None, None, beta) is None
    assert cpu_ext.acon_fused(x[:, :, 0, 0][:, :, None, None][:0], p1, p2, beta) is None
    for bshape in CHANNEL_PIXEL_BETAS:  # no layer makes one: acon() runs the PyTorch path
        assert cpu_ext.acon_fused(x, p1, p2, torch.rand(bshape, dtype=x.dtype)) is None, \
            bshape
    assert not hasattr(cpu_ext, 'ABI_VERSION')  # dropped: the build key names the sources


def test_refuses_double_backward(cpu_ext):
    from acon_mm.models.layers import AconC
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    with acon_impl('auto'):
        y = AconC(4)(x)
    with pytest.raises(RuntimeError, match='double backward'):
        torch.autograd.grad(y.sum(), x, create_graph=True)


def test_build_key_changes_when_a_source_file_changes(tmp_path):
    src = tmp_path / 'csrc'
    shutil.copytree(cpu_ext.CSRC_DIR, src)
    flags, cxx = ['-O3', '-std=c++17'], '/usr/bin/g++'

    def key(root=src, flags=flags):
        return cpu_ext.build_key(flags, cxx, csrc_dir=str(root), compiler_version='v1')

    k0 = key()
    assert k0 == key(cpu_ext.CSRC_DIR), 'the key depends on the contents, not the path'
    assert cpu_ext.source_files(str(src)) == cpu_ext.source_files()
    assert 'common/acon_kernel.h' in cpu_ext.source_files()
    header = src / 'common' / 'acon_kernel.h'
    text = header.read_text()
    header.write_text(text + '\n// changed\n')
    k1 = key()
    assert k1 != k0, 'a changed header must rebuild'
    header.write_text(text)
    assert key() == k0
    (src / 'common' / 'extra.h').write_text('#pragma once\n')
    assert key() != k0, 'a new source file must rebuild'
    (src / 'common' / 'extra.h').unlink()
    assert key(flags=flags + ['-DX']) != k0
    assert cpu_ext.build_key(flags, cxx, csrc_dir=str(src), compiler_version='v2') != k0


def test_sources_ship_as_package_data(repo_root):
    if sys.version_info < (3, 11):
        pytest.skip('tomllib needs Python 3.11')
    import tomllib
    with open(repo_root / 'pyproject.toml', 'rb') as f:
        cfg = tomllib.load(f)
    patterns = cfg['tool']['setuptools']['package-data']['acon_mm']
    for rel in cpu_ext.source_files():
        path = f'ops/csrc/{rel}'
        assert any(fnmatch.fnmatch(path, p) for p in patterns), f'{path} not shipped'


def test_build_directory_is_named_by_the_key(cpu_ext):
    build_dir = osp.basename(osp.dirname(osp.abspath(cpu_ext.__file__)))
    assert re.fullmatch(r'acon_mm_ext_[0-9a-f]{16}', build_dir), build_dir
