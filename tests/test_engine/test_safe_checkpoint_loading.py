"""Safe loading: a checkpoint carrying a pickled payload is refused
by every way acon-mm loads checkpoints, and the payload never runs.

The planted checkpoint holds real weights plus an object whose ``__reduce__``
makes unpickling write a marker file. A plain ``torch.load(...,
weights_only=False)`` does write it (the control test), so each test below
would fail if that load path unpickled arbitrary objects.
"""
import builtins
import os

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel, BaseModule
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner, load_checkpoint
from torch.utils.data import Dataset

import acon_mm  # noqa: F401
from acon_mm.utils import UnsafeCheckpointError, safe_torch_load

from conftest import REPO_ROOT


class _Payload:
    """Unpickling this runs ``open(marker, 'w').write('pwned')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec,
                (f"open({self.marker!r}, 'w').write('pwned')", ))


@MODELS.register_module(force=True)
class _SafeLoadNet(BaseModel):
    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = MODELS.build(dict(type='AconC', num_channels=4))
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.head(self.act(self.conv(inputs)).mean(dim=(2, 3)))[:, 0]
        if mode == 'loss':
            return dict(loss=((out - targets) ** 2).mean())
        return out


@DATASETS.register_module(force=True)
class _SafeLoadData(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 6, 6, generator=g),
                    targets=torch.tensor(0.5))


@pytest.fixture
def planted(tmp_path):
    """``(checkpoint path, marker path)``: weights plus a live payload."""
    marker = tmp_path / 'PAYLOAD_RAN'
    ckpt = tmp_path / 'planted.pth'
    model = _SafeLoadNet()
    torch.save({'meta': {'iter': 2, 'epoch': 0},
                'state_dict': model.state_dict(),
                'payload': _Payload(marker)}, ckpt)
    return ckpt, marker


def _assert_refused(err, ckpt, marker):
    msg = str(err)
    assert 'refusing to load checkpoint' in msg and str(ckpt) in msg, msg
    assert 'builtins.exec' in msg, msg  # the offending global, named
    assert not marker.exists(), 'the payload ran'


def test_control_the_payload_is_live(planted):
    ckpt, marker = planted
    torch.load(ckpt, weights_only=False)
    assert marker.read_text() == 'pwned'


def test_safe_torch_load_refuses(planted):
    ckpt, marker = planted
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(str(ckpt))
    _assert_refused(info.value, ckpt, marker)


def test_load_checkpoint_load_from_refuses(planted):
    """``load_from`` / ``mmengine.runner.load_checkpoint`` (also test.py's)."""
    ckpt, marker = planted
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(_SafeLoadNet(), str(ckpt), map_location='cpu')
    _assert_refused(info.value, ckpt, marker)


def test_init_cfg_pretrained_refuses(planted):
    ckpt, marker = planted
    model = _SafeLoadNet(init_cfg=dict(type='Pretrained',
                                       checkpoint=str(ckpt)))
    with pytest.raises(UnsafeCheckpointError) as info:
        model.init_weights()
    _assert_refused(info.value, ckpt, marker)


def test_backbone_init_cfg_pretrained_refuses(planted):
    ckpt, marker = planted
    backbone = MODELS.build(dict(
        type='ResNetACON', depth=18, init_cfg=dict(
            type='Pretrained', checkpoint=str(ckpt))))
    assert isinstance(backbone, BaseModule)
    with pytest.raises(UnsafeCheckpointError) as info:
        backbone.init_weights()
    _assert_refused(info.value, ckpt, marker)


def _runner(work_dir, **kwargs):
    return Runner(
        model=dict(type='_SafeLoadNet'),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='_SafeLoadData'), batch_size=4, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=4),
        default_hooks=dict(checkpoint=dict(type='AconCheckpointHook', interval=2,
                                           by_epoch=False)),
        experiment_name=f'safe_{os.path.basename(str(work_dir))}',
        **kwargs)


@pytest.mark.parametrize('resume', [False, True], ids=['load_from', 'resume'])
def test_runner_refuses(planted, tmp_path, resume):
    ckpt, marker = planted
    runner = _runner(tmp_path / 'work', load_from=str(ckpt), resume=resume)
    with pytest.raises(UnsafeCheckpointError) as info:
        runner.train()
    _assert_refused(info.value, ckpt, marker)


def test_runner_auto_resume_refuses_planted_last_checkpoint(planted, tmp_path):
    """``--resume`` without a path follows ``last_checkpoint``."""
    ckpt, marker = planted
    work = tmp_path / 'work'
    work.mkdir()
    target = work / 'iter_2.pth'
    os.replace(ckpt, target)
    (work / 'last_checkpoint').write_text(str(target))
    runner = _runner(work, resume=True)
    with pytest.raises(UnsafeCheckpointError) as info:
        runner.train()
    _assert_refused(info.value, target, marker)


def _tool_main(script):
    """``main`` of a script under ``tools/`` (run in this process)."""
    import importlib.util
    path = REPO_ROOT / script
    spec = importlib.util.spec_from_file_location(
        'acon_tool_' + path.stem, str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_converter_refuses(planted, tmp_path, capsys):
    """``tools/model_converters/acon_official_to_mm.py SRC DST``."""
    ckpt, marker = planted
    dst = tmp_path / 'converted.pth'
    main = _tool_main('tools/model_converters/acon_official_to_mm.py')
    with pytest.raises((UnsafeCheckpointError, SystemExit)) as info:
        main([str(ckpt), str(dst)])
    if isinstance(info.value, SystemExit):  # the CLI may print and exit
        assert info.value.code != 0
        assert 'refusing to load checkpoint' in capsys.readouterr().err
    else:
        _assert_refused(info.value, ckpt, marker)
    assert not marker.exists() and not dst.exists()


def test_test_py_refuses(tmp_path, det_demo_config, demo_coco):
    """``tools/test.py CONFIG CKPT`` on a planted checkpoint."""
    marker = tmp_path / 'PAYLOAD_RAN'
    ckpt = tmp_path / 'planted_det.pth'
    torch.save({'state_dict': {}, 'payload': _Payload(marker)}, ckpt)
    root = demo_coco['data_root'].rstrip('/') + '/'
    main = _tool_main('tools/test.py')
    with pytest.raises(UnsafeCheckpointError) as info:
        main([det_demo_config, str(ckpt), '--work-dir',
              str(tmp_path / 'work'), '--data-root', root, '--cfg-options',
              f'experiment_name=planted_{tmp_path.name}',
              f'visualizer.name=vis_planted_{tmp_path.name}'])
    _assert_refused(info.value, ckpt, marker)
