"""The official-weights converter.

The official checkpoints cannot be downloaded here, so official-layout state
dicts are built from the layout file (``tests/official_acon_layouts.json.gz``,
a copy of the published layouts) with random values and random BN statistics,
saved as the official ``{'state_dict': {'module.' + key: tensor}}`` files,
converted, loaded through ``init_cfg=dict(type='Pretrained', ...)`` and compared
with an independent functional forward pass of the official network
(``tests/official_reference.py``).
"""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.registry import MODELS
from mmengine.runner import load_checkpoint

import acon_mm  # noqa: F401
from acon_mm.models.official_ckpt import (
    OFFICIAL_ARCHS,
    ConversionError,
    convert_checkpoint,
    convert_state_dict,
    detect_arch,
    expected_layout,
)
from acon_mm.utils import UnsafeCheckpointError, safe_torch_load

from official_reference import load_layouts, official_forward, random_official_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'tools', 'model_converters', 'acon_official_to_mm.py')


def _load_tool(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('acon_official_to_mm', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


main = _load_tool(SCRIPT).main
LAYOUTS = load_layouts()
CLASSIFIER = ('fc.', 'classifier.')


@pytest.fixture(autouse=True, scope='module')
def _one_torch_thread():
    """One intra-op thread: on a small shared CI machine (2 busy cores) this is
    several times faster than OpenMP threads competing for the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _official_file(tmp_path, name, seed=0, mutate=None, wrap=True):
    sd = random_official_state_dict(LAYOUTS[name], seed=seed)
    if mutate is not None:
        mutate(sd)
    obj = {'state_dict': {'module.' + k: v for k, v in sd.items()}} if wrap else sd
    path = str(tmp_path / f'{name}_official.pth')
    torch.save(obj, path)
    return path, sd


def test_layout_file_covers_every_official_arch():
    assert sorted(LAYOUTS) == sorted(OFFICIAL_ARCHS)


@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_backbone_layout_equals_official_and_detected(name):
    """Every official key but the classifier is a backbone key of the same shape."""
    official = {k: tuple(v) for k, v in LAYOUTS[name].items()
                if not k.startswith(CLASSIFIER)}
    assert dict(expected_layout(name)) == official
    meta = {k: torch.empty(v, device='meta') for k, v in LAYOUTS[name].items()}
    assert detect_arch(meta) == name


ROUND_TRIP = ['resnet50_acon', 'resnet50_metaacon', 'resnet101_acon',
              'resnet101_metaacon'] + [
                  f'shufflenetv2_{w}x_{a}' for w in ('0.5', '1.0', '1.5', '2.0')
                  for a in ('acon', 'metaacon')]


@pytest.mark.parametrize('name', ROUND_TRIP)
def test_round_trip_features_equal_official(tmp_path, name, capsys):
    src, sd = _official_file(tmp_path, name, seed=len(name))
    dst = str(tmp_path / 'converted' / f'{name}.pth')
    assert main([src, dst]) == 0
    printed = capsys.readouterr().out
    assert name in printed and 'detected' in printed and dst in printed

    ckpt = safe_torch_load(dst)  # weights_only=True
    assert ckpt['meta']['arch'] == name
    assert set(ckpt['meta']['dropped']) == {k for k in sd if k.startswith(CLASSIFIER)}
    cfg = dict(OFFICIAL_ARCHS[name], out_indices=(0, 1, 2, 3),
               init_cfg=dict(type='Pretrained', checkpoint=dst))
    torch.manual_seed(123)
    model = MODELS.build(cfg)
    model.init_weights()
    model.eval()
    # every tensor came from the official file, nothing is left over
    msd = model.state_dict()
    body = {k: v for k, v in sd.items() if not k.startswith(CLASSIFIER)}
    assert set(msd) == set(body)
    for k, v in body.items():
        assert torch.equal(msd[k], v), k
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        outs = model(x)
        refs = official_forward(sd, x)
    assert len(outs) == len(refs) == 4
    for i, (o, r) in enumerate(zip(outs, refs)):
        assert o.shape == r.shape, (i, o.shape, r.shape)
        scale = r.abs().max().item()
        assert 0 < scale < 1e6
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-5 * scale,
                                   msg=f'{name} output {i}')


def test_converted_loads_strictly_and_bare_state_dict(tmp_path):
    src, sd = _official_file(tmp_path, 'shufflenetv2_0.5x_acon', wrap=False)
    dst = str(tmp_path / 'c.pth')
    assert main([src, dst, '--arch', 'shufflenetv2_0.5x_acon']) == 0
    model = MODELS.build(OFFICIAL_ARCHS['shufflenetv2_0.5x_acon'])
    load_checkpoint(model, dst, strict=True)  # raises on missing/unexpected
    assert torch.equal(model.first_conv[2].p1, sd['first_conv.2.p1'])


def _drop(key):
    return lambda sd: sd.pop(key)


def _add(key):
    return lambda sd: sd.__setitem__(key, torch.zeros(3))


def _reshape(key):
    return lambda sd: sd.__setitem__(key, torch.zeros(1, 7, 1, 1))


@pytest.mark.parametrize('mutate,pattern', [
    (_drop('layer2.1.acon.beta'), r"missing keys \(1: 'layer2.1.acon.beta'\)"),
    (_add('layer1.0.extra.weight'), r"unexpected keys \(1: 'layer1.0.extra.weight'\)"),
    (_reshape('layer3.2.acon.p2'),
     r"shape mismatches \(1: 'layer3.2.acon.p2: checkpoint \(1, 7, 1, 1\) "
     r'vs backbone \(1, 256, 1, 1\)'),
], ids=['missing', 'unexpected', 'shape'])
def test_refusals_name_the_keys_and_write_nothing(tmp_path, mutate, pattern):
    src, _ = _official_file(tmp_path, 'resnet50_acon', mutate=mutate)
    dst = tmp_path / 'out' / 'never.pth'
    with pytest.raises(ConversionError, match=pattern) as err:
        convert_checkpoint(src, str(dst), verbose=False)
    assert 'Nothing was written' in str(err.value)
    assert not dst.exists() and not dst.parent.exists()


def test_wrong_arch_refused_and_existing_dst_untouched(tmp_path, capsys):
    src, _ = _official_file(tmp_path, 'resnet50_acon')
    dst = tmp_path / 'keep.pth'
    dst.write_bytes(b'previous good file')
    assert main([src, str(dst)]) == 0  # replaced atomically when it works
    good = dst.read_bytes()
    with pytest.raises(SystemExit) as e:
        main([src, str(dst), '--arch', 'resnet101_acon'])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert 'resnet101_acon (given with --arch)' in err
    assert "'layer3.6.conv1.weight'" in err  # a block ResNet-50 lacks
    assert dst.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ['keep.pth', 'resnet50_acon_official.pth'])  # no temp file left
    with pytest.raises(SystemExit) as e:  # not an official network name
        main([src, str(dst), '--arch', 'resnet18_acon'])
    assert e.value.code == 2
    with pytest.raises(ConversionError, match='unknown --arch'):
        convert_state_dict({'a': torch.zeros(1)}, arch='vgg16')
    with pytest.raises(ConversionError, match=r'has \(1, 0, 0, 0\) blocks per stage'):
        convert_state_dict({'module.conv1.weight': torch.zeros(1),
                            'module.layer1.0.conv1.weight': torch.zeros(1)})
    with pytest.raises(ConversionError, match='cannot detect the architecture'):
        convert_state_dict({'module.stem.weight': torch.zeros(1)})


class _Payload:
    """Unpickling this would create ``target`` (it must never run)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, 'w'))


def test_payload_checkpoint_refused(tmp_path):
    src, sd = _official_file(tmp_path, 'shufflenetv2_0.5x_acon')
    planted = tmp_path / 'planted.txt'
    torch.save({'state_dict': sd, 'extra': _Payload(str(planted))}, src)
    with pytest.raises(UnsafeCheckpointError, match='open'):
        main([src, str(tmp_path / 'x.pth')])
    assert not planted.exists()
    assert not (tmp_path / 'x.pth').exists()


@pytest.mark.slow
def test_command_line_script(tmp_path):
    src, _ = _official_file(tmp_path, 'shufflenetv2_0.5x_metaacon')
    dst = tmp_path / 'cli.pth'
    res = subprocess.run([sys.executable, SCRIPT, src, str(dst)],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr
    assert 'shufflenetv2_0.5x_metaacon' in res.stdout
    assert "'classifier.0.weight'" in res.stdout
    assert safe_torch_load(str(dst))['meta']['num_tensors'] == 986 - 2


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """Official-layout files converted for ResNet-50 ACON-C and ShuffleNetV2 0.5x."""
    tmp = tmp_path_factory.mktemp('converted')
    out = {}
    for name in ('resnet50_acon', 'shufflenetv2_0.5x_acon'):
        src, _ = _official_file(tmp, name, seed=3)
        dst = str(tmp / f'{name}_mm.pth')
        convert_checkpoint(src, dst, verbose=False)
        out[name], out[name + ':official'] = dst, src
    return out


def _pretrained(cfg, path, **kwargs):
    return MODELS.build(dict(cfg, init_cfg=dict(type='Pretrained',
                                                checkpoint=path), **kwargs))


def test_pretrained_for_another_network_is_refused(converted):
    r50 = converted['resnet50_acon']
    with pytest.raises(ValueError, match=r"ResNetACON\(depth=101.*missing keys "
                       r"\(408: 'layer3.6.conv1.weight'.*converted for resnet50_acon"):
        _pretrained(dict(type='ResNetACON', depth=101), r50).init_weights()
    sh = converted['shufflenetv2_0.5x_acon']
    with pytest.raises(ValueError, match=r"shape mismatches \(.*'first_conv.0.weight"
                       r"|shape mismatches \(.*features.0"):
        _pretrained(dict(type='ShuffleNetV2ACON', widen_factor=1.0), sh).init_weights()
    with pytest.raises(ValueError, match=r"missing keys \(.*first_conv.2.fc1.weight.*"
                       r"unexpected keys \(.*first_conv.2.beta"):
        _pretrained(dict(type='ShuffleNetV2ACON', widen_factor=0.5,
                         acon_cfg=dict(type='MetaAconC')), sh).init_weights()
    # an official file that was never converted
    with pytest.raises(ValueError, match='unconverted ImageNet checkpoint'):
        _pretrained(dict(type='ShuffleNetV2ACON', widen_factor=0.5),
                    converted['shufflenetv2_0.5x_acon:official']).init_weights()
    with pytest.raises(FileNotFoundError, match='acon_official_to_mm.py'):
        _pretrained(dict(type='ResNetACON', depth=50), '/nonexistent/r50.pth').init_weights()
    # opt-out: load what matches (mmengine logs the rest)
    m = _pretrained(dict(type='ResNetACON', depth=101), r50, strict_pretrained=False)
    m.init_weights()
    ref = safe_torch_load(r50)['state_dict']
    assert torch.equal(m.layer3[5].acon.p1, ref['layer3.5.acon.p1'])
