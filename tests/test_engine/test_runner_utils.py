"""The config building of tools/train.py and tools/test.py (acon_mm.engine.run_config)
and the setup errors of acon_mm.engine.runner_utils.

Each test parses a command line with the tool's own ``parse_args`` and checks
the config the package builds from it; nothing trains (see
tests/test_tools/ for the real runs).
"""
import importlib.util
import os.path as osp

import pytest

from acon_mm.engine.run_config import (
    apply_resume,
    build_test_cfg,
    build_train_cfg,
    default_work_dir,
    parse_cfg_options,
)
from acon_mm.engine.runner_utils import (
    RUN_SETUP_ERRORS,
    MissingCheckpointError,
    exit_on_setup_error,
)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET = osp.join(ROOT, 'configs/demo/retinanet_r18-aconc_fpn_demo.py')
SEG = osp.join(ROOT, 'configs/demo/pspnet_r18-d8-aconc_demo.py')
CLS = osp.join(ROOT, 'configs/demo/resnet18-aconc_demo_in1k.py')


def _tool(name):
    spec = importlib.util.spec_from_file_location(
        f'acon_tool_{name}_args', osp.join(ROOT, 'tools', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _train_cfg(argv):
    args = _tool('train').parse_args(argv)
    return args, build_train_cfg(
        args.config, cfg_options=args.cfg_options, launcher=args.launcher,
        data_root=args.data_root, work_dir=args.work_dir, amp=args.amp,
        auto_scale_lr=args.auto_scale_lr, resume=args.resume)


def test_train_defaults():
    args, cfg = _train_cfg([DET])
    assert cfg.work_dir == default_work_dir(DET) == \
        './work_dirs/retinanet_r18-aconc_fpn_demo'
    assert cfg.launcher == 'none' and not args.cpu
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper'
    assert not cfg.get('resume', False)


def test_train_options(tmp_path):
    args, cfg = _train_cfg([
        DET, '--work-dir', str(tmp_path / 'w'), '--amp', '--launcher', 'pytorch',
        '--data-root', str(tmp_path), '--cfg-options', 'train_cfg.max_iters=3',
        'model.test_cfg.score_thr=0.0'])
    assert cfg.work_dir == str(tmp_path / 'w')
    assert cfg.launcher == 'pytorch'
    assert cfg.train_cfg.max_iters == 3 and cfg.model.test_cfg.score_thr == 0.0
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    root = str(tmp_path).rstrip('/') + '/'
    assert cfg.data_root == root
    assert cfg.train_dataloader.dataset.data_root == root
    assert cfg.val_evaluator.ann_file.startswith(root)


def test_train_resume_flag(tmp_path):
    _, cfg = _train_cfg([DET])
    assert not cfg.get('resume', False)
    # --resume in a work dir without a checkpoint: from scratch
    _, cfg = _train_cfg([DET, '--resume', '--work-dir', str(tmp_path)])
    assert cfg.resume is False and cfg.load_from is None
    _, cfg = _train_cfg([DET, '--resume', 'x/iter_4.pth'])
    assert cfg.resume is True and cfg.load_from == 'x/iter_4.pth'


def test_apply_resume_alone(tmp_path):
    import torch
    from mmengine.config import Config
    cfg = Config(dict(resume=False, load_from='a.pth', work_dir=str(tmp_path)))
    apply_resume(cfg, None)
    assert cfg.resume is False and cfg.load_from == 'a.pth'
    apply_resume(cfg, 'auto')  # nothing to resume from
    assert cfg.resume is False and cfg.load_from is None
    # the pointer names a checkpoint a kill left half written: the newest
    # complete one is resumed, not the pointer's
    torch.save({'meta': {'iter': 2}}, tmp_path / 'iter_2.pth')
    (tmp_path / 'iter_4.pth').write_bytes(b'PK\x03\x04 truncated')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    apply_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'iter_2.pth')


def test_auto_scale_lr_needs_the_config_keys(tmp_path):
    cfg_file = tmp_path / 'no_auto_scale.py'
    cfg_file.write_text("default_scope = 'mmdet'\noptim_wrapper = dict()\n")
    with pytest.raises(RuntimeError, match='auto_scale_lr'):
        build_train_cfg(str(cfg_file), auto_scale_lr=True)
    cfg_file.write_text("default_scope = 'mmdet'\n"
                        'auto_scale_lr = dict(enable=False, base_batch_size=16)\n')
    assert build_train_cfg(str(cfg_file), auto_scale_lr=True).auto_scale_lr.enable


def test_unknown_scope_is_named(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("default_scope = 'mmocr'\n")
    with pytest.raises(ValueError, match="default_scope='mmocr'"):
        build_train_cfg(str(bad))


@pytest.mark.parametrize('config,task,dump', [
    (DET, 'mmdet', 'DumpDetResults'), (SEG, 'mmseg', 'mmengine.DumpResults'),
    (CLS, 'mmpretrain', 'mmengine.DumpResults')])
def test_test_cfg(config, task, dump, tmp_path):
    args = _tool('test').parse_args([config, 'ck.pth', '--out', str(tmp_path / 'r.pkl'),
                                     '--show-dir', str(tmp_path / 'show'),
                                     '--cfg-options', 'work_dir=wd'])
    cfg, got_task, drawn = build_test_cfg(
        args.config, args.checkpoint, cfg_options=args.cfg_options,
        launcher=args.launcher, data_root=args.data_root, work_dir=args.work_dir,
        out=args.out, show_dir=args.show_dir, show=args.show,
        wait_time=args.wait_time)
    assert got_task == task and cfg.load_from == 'ck.pth' and cfg.work_dir == 'wd'
    assert cfg.test_evaluator[-1].type == dump
    assert cfg.test_evaluator[-1].out_file_path == str(tmp_path / 'r.pkl')
    assert cfg.default_hooks.visualization.draw is True
    show = str(tmp_path / 'show')
    assert drawn == (show if task == 'mmdet' else osp.join(show, 'vis_data', 'vis_image'))


def test_test_py_rejects_a_non_pickle_out():
    with pytest.raises(SystemExit):
        _tool('test').parse_args([DET, 'ck.pth', '--out', 'r.json'])


def test_parse_cfg_options_as_dict_action():
    assert parse_cfg_options(['a.b=1', 'c=[1,2]', 'd=x']) == {
        'a.b': 1, 'c': [1, 2], 'd': 'x'}


def test_exit_on_setup_error(capsys):
    assert MissingCheckpointError in RUN_SETUP_ERRORS
    with pytest.raises(SystemExit) as info, exit_on_setup_error():
        raise MissingCheckpointError("checkpoint 'x.pth' does not exist")
    assert info.value.code == 2
    assert "ERROR: checkpoint 'x.pth' does not exist" in capsys.readouterr().err
    with pytest.raises(KeyError), exit_on_setup_error():  # others pass through
        raise KeyError('k')


def test_tools_do_not_execute_other_tools():
    """The tools call the package, never another tool's file."""
    def text(rel):
        with open(osp.join(ROOT, 'tools', rel)) as f:
            return f.read()

    for rel in ('train.py', 'test.py', 'demo.py', 'misc/gpu_train_probe.py',
                'misc/make_demo_data.py'):
        assert 'spec_from_file_location' not in text(rel), rel
        assert 'runpy' not in text(rel), rel
