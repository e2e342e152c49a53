"""A new user's first hour with stock configs: failures come first, by name.

Real tools/train.py runs (subprocesses) on configs that inherit the stock
mmdet/mmseg ones, as the README's swap makes them: weights the model would
download are named before anything is built (no network is touched: this machine
has none, and a download attempt would end in ``URLError``); the stock COCO
classes on the generated demo data are named too; a CPU forward is quiet about
CUDA.
"""
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # tools/train.py in subprocesses

SWAP = "model = dict(backbone=dict(_delete_=True, type='ResNetACON', depth=50, " \
       "acon_cfg=dict(type='MetaAconC')))"


def _config(tmp_path, base, body=''):
    path = tmp_path / 'my_config.py'
    path.write_text(f"_base_ = '{base}'\n"
                    "custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)\n"
                    + body + '\n')
    return str(path)


def test_the_inherited_open_mmlab_pretrained_is_named(run_tool, tmp_path):
    cfg = _config(tmp_path, 'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
                  SWAP)
    proc = run_tool('tools/train.py', cfg, '--cpu', '--work-dir', tmp_path / 'w',
                    check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "model.pretrained = 'open-mmlab://resnet50_v1c'" in proc.stderr, out[-3000:]
    assert 'The backbone is ResNetACON' in proc.stderr
    assert '--cfg-options model.pretrained=None' in proc.stderr
    assert 'URLError' not in out and 'load model from' not in out  # before any download


def test_stock_torchvision_weights_are_named(run_tool, tmp_path):
    cfg = _config(tmp_path, 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    proc = run_tool('tools/train.py', cfg, '--cpu', '--work-dir', tmp_path / 'w',
                    check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "model.backbone.init_cfg.checkpoint = 'torchvision://resnet50'" in proc.stderr
    assert 'download.pytorch.org' in proc.stderr and '--allow-download' in proc.stderr
    assert 'The backbone is' not in proc.stderr  # a stock ResNet: its weights are right
    assert 'URLError' not in out


def test_stock_coco_classes_on_the_demo_data_are_named(run_tool, demo_coco, tmp_path):
    cfg = _config(tmp_path, 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    proc = run_tool('tools/train.py', cfg, '--cpu', '--data-root', demo_coco['data_root'],
                    '--work-dir', tmp_path / 'w', '--cfg-options',
                    'model.backbone.init_cfg=None', check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'need at least one array' not in proc.stderr
    assert 'instances_train2017.json: none of the 80 classes' in proc.stderr, \
        proc.stderr[-3000:]
    assert "'circle', 'square', 'triangle'" in proc.stderr
    assert 'metainfo=dict(classes=' in proc.stderr


FORWARD = textwrap.dedent("""
    import torch
    import acon_mm
    from acon_mm.models.layers import AconC
    from mmengine.utils.dl_utils import collect_env
    collect_env()  # what a Runner logs at start: imports torch.utils.cpp_extension
    AconC(4)(torch.randn(2, 4, 3, 3)).sum().backward()
    print('forward ok')
""")


def test_a_cpu_forward_prints_no_cuda_line(tmp_path):
    probe = subprocess.run([sys.executable, '-c', 'import torch.utils.cpp_extension'],
                           capture_output=True, text=True, timeout=120)
    if 'No CUDA runtime is found' not in probe.stdout + probe.stderr:
        pytest.skip('torch finds no CUDA toolkit here: it prints no such line to silence')
    proc = subprocess.run([sys.executable, '-c', FORWARD], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'forward ok' in proc.stdout
    assert 'CUDA' not in proc.stdout + proc.stderr, proc.stderr[-2000:]
