"""A trained checkpoint that does not fit the model is refused, not evaluated.

``tools/test.py`` used to print mmengine's "missing keys" and then a COCO result
(bbox mAP 0.0) with exit status 0 for the demo detector's weights under another
backbone depth, and ``bbox_mAP 0.001`` for a backbone-only file. Now every tool
that loads a trained model shares one check (:func:`check_checkpoint_fits`).
"""
import pytest
import torch

from acon_mm.analysis import load_model
from acon_mm.models.utils.checkpoint_fit import CheckpointMismatchError

pytestmark = pytest.mark.slow  # trains the tiny detector once, runs test.py three times


def _backbone_only(run, tmp_path):
    ckpt = torch.load(run.checkpoint, map_location='cpu', weights_only=False)
    body = {k[len('backbone.'):]: v for k, v in ckpt['state_dict'].items()
            if k.startswith('backbone.')}
    path = tmp_path / 'backbone_only.pth'
    torch.save({'state_dict': body}, path)
    return str(path), len(body)


def test_test_py_refuses_a_checkpoint_of_another_depth(tiny_det_checkpoint, run_tool,
                                                       tmp_path):
    run = tiny_det_checkpoint
    proc = run_tool('tools/test.py', run.config, run.checkpoint, '--work-dir', tmp_path,
                    '--cpu', '--cfg-options', 'model.backbone.depth=34', check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert f'checkpoint {run.checkpoint!r} does not fit the model of' in err, err[-3000:]
    assert 'missing keys (' in err and 'the model has' in err
    assert 'bbox_mAP' not in proc.stdout + err  # nothing was evaluated


def test_test_py_names_a_backbone_only_checkpoint(tiny_det_checkpoint, run_tool,
                                                  tmp_path):
    run = tiny_det_checkpoint
    path, n = _backbone_only(run, tmp_path)
    proc = run_tool('tools/test.py', run.config, path, '--work-dir', tmp_path / 'wd',
                    '--cpu', check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'is a backbone-only checkpoint' in proc.stderr, proc.stderr[-3000:]
    assert f'{n} of its {n} keys' in proc.stderr
    assert "model.backbone.init_cfg=dict(type='Pretrained'" in proc.stderr
    assert 'bbox_mAP' not in proc.stdout + proc.stderr


def test_the_same_check_in_the_analysis_tools(tiny_det_checkpoint, tmp_path):
    run = tiny_det_checkpoint
    path, _ = _backbone_only(run, tmp_path)
    with pytest.raises(CheckpointMismatchError, match='is a backbone-only checkpoint'):
        load_model(run.config, path)
    with pytest.raises(CheckpointMismatchError, match='does not fit the model'):
        load_model(run.config, run.checkpoint, cfg_options={'model.backbone.depth': 34})
    model, _ = load_model(run.config, run.checkpoint)  # the checkpoint that fits: loads
    assert not model.training


def test_test_py_takes_a_work_dir_as_analyze_acon_does(tiny_det_checkpoint, run_tool,
                                                       tmp_path):
    run = tiny_det_checkpoint
    proc = run_tool('tools/test.py', run.config, run.work_dir, '--work-dir', tmp_path,
                    '--cpu')
    assert f'metrics of {run.checkpoint}:' in proc.stdout + proc.stderr
    empty = tmp_path / 'empty_work_dir'
    empty.mkdir()
    proc = run_tool('tools/test.py', run.config, empty, '--cpu', check=False)
    assert proc.returncode == 2
    assert f'work dir {str(empty)!r} holds no complete checkpoint' in proc.stderr
