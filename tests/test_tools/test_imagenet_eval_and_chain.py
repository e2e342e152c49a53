"""ImageNet evaluation of converted official weights, and the pretrain chain.

* ``acon_official_to_mm.py --keep-head`` writes an mmpretrain
  ``ImageClassifier`` checkpoint (``backbone.*``, ``head.fc.*``);
* ``tools/test.py configs/imagenet/resnet50-aconc_8xb32_in1k.py converted.pth``
  on a tiny generated ImageNet-layout set prints top-1/top-5, and the top-1
  equals the official network's (tests/official_reference.py, official
  decode/resize/crop) on the same images;
* ``tools/demo.py --pretrain`` runs pretraining -> detector at a few iterations.
"""
import importlib.util
import json
import os.path as osp
import re

import pytest
import torch

from official_reference import (
    load_layouts,
    official_center_crop,
    official_decode,
    official_forward,
    official_opencv_resize,
    random_official_state_dict,
    to_bgr_tensor,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('mmpretrain') is None,
    reason='mmpretrain is not installed')

CFG = 'configs/imagenet/resnet50-aconc_8xb32_in1k.py'


def _metrics(text):
    m = re.findall(r'classification metrics of .*?: (\{.*\})', text)
    assert m, text[-3000:]
    return json.loads(m[-1])


@pytest.mark.slow
def test_keep_head_checkpoint_evaluates_like_the_official_network(
        run_tool, tmp_path):
    from acon_mm.testing import make_imagenet_demo
    sd = random_official_state_dict(load_layouts()['resnet50_acon'], seed=3)
    # larger logits: the class scores differ clearly between images
    sd['fc.weight'] = sd['fc.weight'] * 4
    src = tmp_path / 'official.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in sd.items()}},
               str(src))
    dst = tmp_path / 'resnet50_acon_cls.pth'
    run_tool('tools/model_converters/acon_official_to_mm.py', src, dst,
             '--keep-head')
    ck = torch.load(str(dst), weights_only=True)
    keys = set(ck['state_dict'])
    assert {'head.fc.weight', 'head.fc.bias'} <= keys
    assert all(k.startswith(('backbone.', 'head.fc.')) for k in keys)
    assert ck['meta']['input_convention']['channel_order'] == 'bgr'
    torch.testing.assert_close(ck['state_dict']['head.fc.weight'],
                               sd['fc.weight'])

    data = make_imagenet_demo(str(tmp_path / 'imagenet'), num_train=1,
                              num_val=2, img_size=(72, 96), seed=0)
    preds = tmp_path / 'preds.pkl'
    proc = run_tool('tools/test.py', CFG, dst, '--data-root',
                    data['data_root'], '--work-dir', tmp_path / 'work',
                    '--out', preds,
                    '--cfg-options', 'test_dataloader.num_workers=0',
                    'test_dataloader.persistent_workers=False',
                    'test_dataloader.batch_size=3', timeout=600)
    metrics = _metrics(proc.stdout + proc.stderr)
    assert 'accuracy/top1' in metrics and 'accuracy/top5' in metrics

    # the official network on the official preprocessing of the same images
    import pickle
    with open(preds, 'rb') as f:
        dumped = {osp.basename(r['img_path']): r['pred_score'] for r in
                  pickle.load(f)}
    correct1 = correct5 = n = 0
    with open(data['val_ann']) as f:
        lines = [ln.split() for ln in f if ln.strip()]
    with torch.no_grad():
        for rel, label in lines:
            bgr = official_decode(osp.join(data['val_dir'], rel))
            x = to_bgr_tensor(official_center_crop(
                official_opencv_resize(bgr, 256), 224))
            feat = official_forward(sd, x)[-1].mean(dim=(2, 3))
            logits = feat @ sd['fc.weight'].t() + sd['fc.bias']
            # the class scores of tools/test.py are the official network's
            ref = logits.softmax(1)[0]
            assert ref.max() > 20 * ref.median()  # not a flat score
            torch.testing.assert_close(dumped[osp.basename(rel)], ref,
                                       rtol=1e-3, atol=1e-3 * ref.median())
            top5 = logits.topk(5, dim=1).indices[0].tolist()
            correct1 += int(top5[0] == int(label))
            correct5 += int(int(label) in top5)
            n += 1
    assert metrics['accuracy/top1'] == pytest.approx(100.0 * correct1 / n)
    assert metrics['accuracy/top5'] == pytest.approx(100.0 * correct5 / n)


@pytest.mark.slow
def test_demo_pretrain_chain_runs(run_tool, tmp_path):
    proc = run_tool('tools/demo.py', '--pretrain', '--pretrain-iters', '4',
                    '--det-iters', '4', '--work-dir', tmp_path / 'work',
                    '--data-dir', tmp_path / 'data', timeout=900)
    out = proc.stdout
    assert 'top-1 accuracy' in out and 'COCO bbox mAP' in out
    ck = tmp_path / 'work' / 'resnet18-aconc_demo_in1k' / 'iter_4.pth'
    assert ck.is_file()
    det_log = '\n'.join(p.read_text() for p in (tmp_path / 'work').rglob('*.log'))
    # the detector's backbone was loaded from the pretraining checkpoint
    assert 'iter_4.pth' in det_log
