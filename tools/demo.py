#!/usr/bin/env python
"""The acon-mm demo (``make demo``): ACON detection and segmentation, offline.

On a machine without GPU and without any download it

1. generates the demo data (:func:`acon_mm.testing.make_demo_data`, as
   ``tools/misc/make_demo_data.py`` does: COCO-format
   shapes and Cityscapes-layout street scenes, deterministic from ``--seed``);
2. trains ``configs/demo/retinanet_r18-aconc_fpn_demo.py`` (RetinaNet with a
   ResNet-18 ACON-C backbone, from scratch) with ``tools/train.py`` and
   evaluates the checkpoint with ``tools/test.py``: COCO bbox mAP through
   pycocotools, raw predictions and drawn predictions saved;
3. if the time budget allows, does the same for
   ``configs/demo/pspnet_r18-d8-aconc_demo.py`` (PSPNet, mmseg's IoUMetric);
4. prints the numbers and where the checkpoints, logs and drawings are.

``--pretrain`` runs the pretrain -> transfer chain instead: it pretrains
``configs/demo/resnet18-aconc_demo_in1k.py`` (ResNet-18 ACON-C classifying the
generated ImageNet-layout shapes set, raw BGR input, the official recipe),
evaluates its top-1, then trains and evaluates
``configs/demo/retinanet_r18-aconc_fpn_pretrained_demo.py`` (the demo
RetinaNet initialised from that checkpoint with ``prefix='backbone.'``).

It builds and runs each config with the functions ``tools/train.py`` and
``tools/test.py`` are made of (:func:`acon_mm.engine.run_config.build_train_cfg`
and :func:`~acon_mm.engine.runner_utils.run_train`,
:func:`~acon_mm.engine.run_config.build_test_cfg` and
:func:`~acon_mm.engine.runner_utils.run_test`), in this process to share the
start-up time, and prints the equivalent commands. Exit status 1 if the
detector's bbox mAP stays below ``--min-map`` (2 if a run cannot start, as
``tools/train.py``).
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning
# threads slowed training here several-fold (must be set before torch loads).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

DET_CONFIG = osp.join(ROOT, 'configs/demo/retinanet_r18-aconc_fpn_demo.py')
SEG_CONFIG = osp.join(ROOT, 'configs/demo/pspnet_r18-d8-aconc_demo.py')
CLS_CONFIG = osp.join(ROOT, 'configs/demo/resnet18-aconc_demo_in1k.py')
DET_PRETRAINED_CONFIG = osp.join(
    ROOT, 'configs/demo/retinanet_r18-aconc_fpn_pretrained_demo.py')
# measured on 2 CPU cores: a PSPNet demo iteration costs about this many
# detector demo iterations (both at their demo batch sizes); used to decide
# whether the segmentation part fits the time budget.
SEG_ITER_COST = 1.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'),
                   help='checkpoints, logs and the result JSON go here (default: %(default)s)')
    p.add_argument('--data-dir', default=osp.join(ROOT, 'data', 'demo'),
                   help='the generated data set (written there if absent; default: %(default)s)')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the data generation and of training (default: %(default)s)')
    p.add_argument('--det-iters', type=int, default=None,
                   help="detector iterations (default: the config's)")
    p.add_argument('--seg-iters', type=int, default=None,
                   help="PSPNet iterations (default: the config's)")
    p.add_argument('--seg', choices=['auto', 'on', 'off'], default='auto',
                   help='auto: train the PSPNet if it fits --budget')
    p.add_argument('--budget', type=float, default=600,
                   help='seconds the whole demo should take (default 600)')
    p.add_argument('--min-map', type=float, default=0.5,
                   help='exit with status 1 if the bbox mAP is below this')
    p.add_argument('--pretrain', action='store_true',
                   help='run the pretrain -> transfer chain instead: pretrain '
                   'a ResNet-18 ACON-C on the generated ImageNet-layout set, '
                   'then train the demo RetinaNet initialised from it')
    p.add_argument('--pretrain-iters', type=int, default=None,
                   help="pretraining iterations (default: the config's)")
    return p.parse_args(argv)


def _config_for(src, work_dir, iters, seed):
    """Write the demo config (schedule scaled to ``iters``) into work_dir."""
    from mmengine.config import Config
    cfg = Config.fromfile(src)
    if iters is not None and iters != cfg.train_cfg.max_iters:
        from acon_mm.analysis import shorten_schedule
        shorten_schedule(cfg, iters)
    cfg.randomness = dict(seed=seed)
    os.makedirs(work_dir, exist_ok=True)
    out = osp.join(work_dir, osp.basename(src))
    cfg.dump(out)
    return out, cfg.train_cfg.max_iters


def _rel(path):
    """``path`` relative to the repository if inside it, else absolute."""
    path = osp.abspath(path)
    return osp.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def _latest_log(work_dir):
    logs = sorted(glob.glob(osp.join(work_dir, '2*', '2*.log')))
    return logs[-1] if logs else ''


def _train_metrics(work_dir):
    found = {}
    for path in sorted(glob.glob(osp.join(work_dir, '2*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if any(k.startswith(('coco/', 'mIoU')) for k in rec):
                    found = rec
    return found


def _command(tool, *args):
    """The equivalent command line, repository paths relative."""
    return f'python tools/{tool} ' + ' '.join(
        _rel(a) if osp.isabs(a) else a for a in args)


def _train(config, work_dir, data_root):
    """``python tools/train.py CONFIG --work-dir W --data-root D --cpu``, in
    this process (``--cpu``: the demo is meant for any machine; with CUDA it
    still uses the GPU)."""
    from acon_mm.engine.run_config import build_train_cfg
    from acon_mm.engine.runner_utils import exit_on_setup_error, run_train
    os.environ.setdefault('LOCAL_RANK', '0')  # as tools/train.py's parse_args
    cfg = build_train_cfg(config, work_dir=work_dir, data_root=data_root)
    with exit_on_setup_error():
        run_train(cfg, config=config, allow_cpu=True)


def _test(config, checkpoint, work_dir, data_root, out=None, show_dir=None):
    """``python tools/test.py CONFIG CHECKPOINT --work-dir W --data-root D
    [--out OUT] [--show-dir DIR] --cpu``, in this process; returns the metrics
    and where the drawn predictions are."""
    from acon_mm.engine.run_config import build_test_cfg
    from acon_mm.engine.runner_utils import exit_on_setup_error, run_test
    os.environ.setdefault('LOCAL_RANK', '0')  # as tools/test.py's parse_args
    cfg, task, drawn = build_test_cfg(config, checkpoint, work_dir=work_dir,
                                      data_root=data_root, out=out,
                                      show_dir=show_dir)
    with exit_on_setup_error():
        return run_test(cfg, task, checkpoint, allow_cpu=True, out=out,
                        drawn=drawn), drawn


def _run(kind, cfg_src, data_root, work_dir, iters, seed):
    cfg_file, iters = _config_for(cfg_src, work_dir, iters, seed)
    print(f'\n=== {kind}: training {iters} iterations\n    '
          + _command('train.py', cfg_file, '--work-dir', work_dir,
                     '--data-root', data_root, '--cpu'), flush=True)
    t0 = time.time()
    _train(cfg_file, work_dir, data_root)
    t_train = time.time() - t0
    ckpt = osp.join(work_dir, f'iter_{iters}.pth')
    show_dir = osp.join(work_dir, 'show')
    out = osp.join(work_dir, 'predictions.pkl')
    test_dir = osp.join(work_dir, 'test')
    print(f'\n=== {kind}: evaluating\n    '
          + _command('test.py', cfg_file, ckpt, '--work-dir', test_dir,
                     '--data-root', data_root, '--out', out, '--show-dir',
                     show_dir, '--cpu'), flush=True)
    t1 = time.time()
    metrics, drawn = _test(cfg_file, ckpt, test_dir, data_root, out=out,
                           show_dir=show_dir)
    t_test = time.time() - t1
    return dict(kind=kind, config=cfg_file, iters=iters, checkpoint=ckpt,
                log=_latest_log(work_dir), metrics=metrics,
                train_metrics=_train_metrics(work_dir), predictions=out,
                drawn=drawn, t_train=t_train, t_test=t_test)


def _pretrain_chain(args, t_start):
    """``--pretrain``: classification pretraining, then the detector from it."""
    from mmengine.config import Config

    from acon_mm.testing import make_demo_data
    print(f'=== data: generating the demo datasets in {args.data_dir}',
          flush=True)
    make_demo_data(args.data_dir, seed=args.seed, which=('coco', 'imagenet'))
    # 1. pretraining (classification; top-1 on the generated val split)
    cls_dir = osp.join(args.work_dir, 'resnet18-aconc_demo_in1k')
    cls_cfg, cls_iters = _config_for(CLS_CONFIG, cls_dir, args.pretrain_iters,
                                     args.seed)
    data_root = osp.join(args.data_dir, 'imagenet')
    print(f'\n=== pretraining: {cls_iters} iterations\n    '
          + _command('train.py', cls_cfg, '--work-dir', cls_dir, '--data-root',
                     data_root, '--cpu'), flush=True)
    t0 = time.time()
    _train(cls_cfg, cls_dir, data_root)
    t_cls = time.time() - t0
    cls_ckpt = osp.join(cls_dir, f'iter_{cls_iters}.pth')
    cls_test_dir = osp.join(cls_dir, 'test')
    print('\n=== pretraining: evaluating\n    '
          + _command('test.py', cls_cfg, cls_ckpt, '--work-dir', cls_test_dir,
                     '--data-root', data_root, '--cpu'), flush=True)
    cls_metrics, _ = _test(cls_cfg, cls_ckpt, cls_test_dir, data_root)
    # 2. the detector, initialised from the pretrained backbone
    det_dir = osp.join(args.work_dir, 'retinanet_r18-aconc_fpn_pretrained_demo')
    os.makedirs(det_dir, exist_ok=True)
    cfg = Config.fromfile(DET_PRETRAINED_CONFIG)
    cfg.model.backbone.init_cfg.checkpoint = cls_ckpt
    src = osp.join(det_dir, 'source_' + osp.basename(DET_PRETRAINED_CONFIG))
    cfg.dump(src)
    det = _run('detection', src, osp.join(args.data_dir, 'coco'), det_dir,
               args.det_iters, args.seed)
    total = time.time() - t_start
    top1 = cls_metrics.get('accuracy/top1')
    mAP = float(det['metrics'].get('coco/bbox_mAP', 0.0))
    line = '=' * 72
    print(f'\n{line}\nacon-mm pretrain -> transfer demo finished in '
          f'{total:.0f} s ({os.cpu_count()} CPU cores visible)')
    print(f'\npretraining: {_rel(cls_cfg)} ({cls_iters} iterations, '
          f'{t_cls:.0f} s)\n  top-1 accuracy (mmpretrain Accuracy, generated '
          f'val split) = {top1} %\n  checkpoint: {_rel(cls_ckpt)}')
    print(f'\ndetection: {_rel(det["config"])} ({det["iters"]} iterations, '
          f'train {det["t_train"]:.0f} s, test {det["t_test"]:.0f} s), '
          "backbone initialised from the pretraining (prefix='backbone.')\n"
          f'  COCO bbox mAP (pycocotools) = {mAP}\n'
          f'  checkpoint: {_rel(det["checkpoint"])}\n{line}', flush=True)
    return 0


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    if args.pretrain:
        return _pretrain_chain(args, t_start)
    from acon_mm.testing import make_demo_data
    print(f'=== data: generating the demo datasets in {args.data_dir}',
          flush=True)
    make_demo_data(args.data_dir, seed=args.seed)
    results = [
        _run('detection', DET_CONFIG, osp.join(args.data_dir, 'coco'),
             osp.join(args.work_dir, 'retinanet_r18-aconc_fpn_demo'),
             args.det_iters, args.seed)
    ]
    det = results[0]
    elapsed = time.time() - t_start
    run_seg = args.seg == 'on'
    seg_note = 'skipped (--seg off)'
    if args.seg == 'auto':
        from mmengine.config import Config
        seg_iters = args.seg_iters or Config.fromfile(
            SEG_CONFIG).train_cfg.max_iters
        est = (det['t_train'] / det['iters'] * SEG_ITER_COST * seg_iters +
               det['t_test'] + 20)
        run_seg = elapsed + est <= args.budget
        if not run_seg:
            seg_note = (f'skipped: {elapsed:.0f} s used, the PSPNet needs about '
                        f'{est:.0f} s more than the {args.budget:.0f} s budget '
                        'allows (run with --seg on)')
    if run_seg:
        results.append(
            _run('segmentation', SEG_CONFIG,
                 osp.join(args.data_dir, 'cityscapes'),
                 osp.join(args.work_dir, 'pspnet_r18-d8-aconc_demo'),
                 args.seg_iters, args.seed))
    total = time.time() - t_start
    _summary(results, total, seg_note if not run_seg else '', args)
    mAP = float(det['metrics'].get('coco/bbox_mAP', 0.0))
    return 0 if mAP >= args.min_map else 1


def _summary(results, total, seg_note, args):
    line = '=' * 72
    print(f'\n{line}\nacon-mm demo finished in {total:.0f} s '
          f'({os.cpu_count()} CPU cores visible)')
    for r in results:
        m = r['metrics']
        print(f'\n{r["kind"]}: {_rel(r["config"])} '
              f'({r["iters"]} iterations, train {r["t_train"]:.0f} s, '
              f'test {r["t_test"]:.0f} s)')
        if r['kind'] == 'detection':
            keys = ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75',
                    'coco/bbox_mAP_s', 'coco/bbox_mAP_m', 'coco/bbox_mAP_l']
            if 'coco/bbox_mAP' not in m:
                print('  no detection scored above the score threshold: '
                      'COCO bbox mAP = 0 (train longer)')
            ok = float(m.get('coco/bbox_mAP', 0)) >= args.min_map
            print(f'  COCO bbox mAP (pycocotools) = {m.get("coco/bbox_mAP", 0.0)}'
                  f' [target >= {args.min_map}: {"met" if ok else "NOT met"}]')
            print('  ' + ', '.join(f'{k.split("/")[-1]}={m.get(k)}'
                                   for k in keys[1:] if k in m))
            tm = r['train_metrics'].get('coco/bbox_mAP')
        else:
            print(f'  mIoU (mmseg IoUMetric) = {m.get("mIoU")} %, '
                  f'aAcc = {m.get("aAcc")} %, mAcc = {m.get("mAcc")} %')
            tm = r['train_metrics'].get('mIoU')
        print(f'  (validation at the end of training reported {tm})')
        print(f'  checkpoint:        {_rel(r["checkpoint"])}')
        print(f'  training log:      {_rel(r["log"])}')
        print(f'  raw predictions:   {_rel(r["predictions"])}')
        print(f'  drawn predictions: {_rel(r["drawn"])}/')
    if seg_note:
        print(f'\nsegmentation: {seg_note}')
    print(line, flush=True)


if __name__ == '__main__':
    sys.exit(main())
