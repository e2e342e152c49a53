"""Export (issue 24, point 5): tools/deployment/pytorch2onnx.py on the demo
RetinaNet (ACON-C and meta-ACON) and the demo PSPNet, checked against ONNX
Runtime; the detector's exported outputs give PyTorch's boxes through the
head's own post-processing; torch.jit.trace of the backbones keeps working."""
import os.path as osp

import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

DET = 'configs/demo/retinanet_r18-aconc_fpn_demo.py'
SEG = 'configs/demo/pspnet_r18-d8-aconc_demo.py'


def _checkpoint(config, path, cfg_options=None):
    """A checkpoint of the config's model with non-trivial BN statistics."""
    from acon_mm.analysis.model_loading import load_model
    model, _ = load_model(config, cfg_options=cfg_options)
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


@pytest.mark.parametrize('act', ['AconC', 'MetaAconC'])
def test_export_demo_retinanet_matches_onnxruntime(run_tool, tmp_path, demo_coco, act):
    opts = ['model.backbone.acon_cfg.type=' + act]
    ckpt = _checkpoint(DET, str(tmp_path / 'det.pth'),
                       {'model.backbone.acon_cfg.type': act})
    out = str(tmp_path / 'det.onnx')
    proc = run_tool('tools/deployment/pytorch2onnx.py', DET, ckpt, '--out', out,
                    '--data-root', demo_coco['data_root'], '--verify',
                    '--cfg-options', *opts, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'cls_score_0' in proc.stdout and 'bbox_pred_4' in proc.stdout, proc.stdout
    assert osp.getsize(out) > 1000 and not osp.exists(out + '.part')


def test_exported_outputs_give_the_detections(tmp_path, demo_coco):
    """ONNX Runtime's raw outputs through bbox_head.predict_by_feat are PyTorch's
    detections (the post-processing docs/deployment.md describes)."""
    from mmengine.config import Config

    from acon_mm.analysis.model_loading import image_batches, load_model
    from acon_mm.deployment import export_onnx, run_onnxruntime
    from acon_mm.engine.runner_utils import set_data_root
    cfg = Config.fromfile(DET)
    set_data_root(cfg, demo_coco['data_root'])
    model, cfg = load_model(cfg, _checkpoint(DET, str(tmp_path / 'd.pth')))
    data, _ = next(iter(image_batches(cfg, None, num_images=1)))
    with torch.no_grad():
        d = model.data_preprocessor(data, False)
        ref = model.predict(d['inputs'], d['data_samples'], rescale=False)[0].pred_instances
        info = export_onnx(model, d['inputs'], str(tmp_path / 'd.onnx'), exporter='torchscript')
        ort = run_onnxruntime(info['file'], d['inputs'])
        n = len(model.bbox_head.prior_generator.strides)
        cls = [torch.from_numpy(ort[f'cls_score_{i}']) for i in range(n)]
        box = [torch.from_numpy(ort[f'bbox_pred_{i}']) for i in range(n)]
        metas = [s.metainfo for s in d['data_samples']]
        got = model.bbox_head.predict_by_feat(cls, box, batch_img_metas=metas,
                                              rescale=False)[0]
    assert len(ref.bboxes) > 0
    torch.testing.assert_close(got.bboxes, ref.bboxes, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got.scores, ref.scores, rtol=1e-4, atol=1e-5)
    assert torch.equal(got.labels, ref.labels)


def test_export_demo_pspnet_matches_onnxruntime(run_tool, tmp_path, demo_cityscapes):
    ckpt = _checkpoint(SEG, str(tmp_path / 'seg.pth'))
    out = str(tmp_path / 'seg.onnx')
    proc = run_tool('tools/deployment/pytorch2onnx.py', SEG, ckpt, '--out', out,
                    '--data-root', demo_cityscapes['data_root'], '--verify', timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'seg_logits' in proc.stdout, proc.stdout


def test_export_refusals(run_tool, tmp_path):
    proc = run_tool('tools/deployment/pytorch2onnx.py', DET, str(tmp_path / 'none.pth'),
                    '--out', str(tmp_path / 'x.onnx'), timeout=300, check=False)
    assert proc.returncode != 0 and 'checkpoint not found' in proc.stderr, proc.stderr[-2000:]
    proc = run_tool('tools/deployment/pytorch2onnx.py', DET, '--out', str(tmp_path / 'x.onnx'),
                    '--images', str(tmp_path / 'no_such_dir'), timeout=300, check=False)
    assert proc.returncode != 0 and 'no_such_dir' in proc.stderr, proc.stderr[-2000:]
    assert not osp.exists(tmp_path / 'x.onnx')


@pytest.mark.parametrize('act', ['AconC', 'MetaAconC', 'HardMetaAconC'])
def test_jit_trace_of_the_backbone(act):
    from mmengine.registry import MODELS

    import acon_mm  # noqa: F401
    torch.manual_seed(0)
    backbone = MODELS.build(dict(type='ResNetACON', depth=18, acon_cfg=dict(type=act)))
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    traced = torch.jit.trace(backbone, x)
    for a, b in zip(traced(x * 2), backbone(x * 2)):
        torch.testing.assert_close(a, b)
