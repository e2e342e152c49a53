#!/usr/bin/env python
"""Train a full-size acon-mm config for a few iterations on generated data and
measure it: seconds per iteration, peak GPU memory, whether the losses stay
finite. Used by ``tools/gpu_check.sh``; no pretrained weights, no download.

    python tools/misc/gpu_train_probe.py CONFIG --data-root DIR [--iters 30]
        [--amp] [--device cuda|cpu] [--json OUT.json] [--work-dir DIR]

``--data-root`` is a folder written by ``tools/misc/make_demo_data.py`` in the
layout the config reads (``coco`` for mmdet configs, ``cityscapes`` for mmseg
ones). The config is built exactly as ``tools/train.py`` builds it
(:func:`acon_mm.engine.run_config.build_train_cfg`: data root, AMP,
``--cfg-options``), then for a short probe: the backbone's
``init_cfg`` is dropped (random weights), the schedule becomes
``--iters`` iterations without validation, checkpoints or LR schedule, and a
COCO dataset takes its class names from the generated annotation file (the
head keeps the config's number of classes). The JSON holds ``s_per_iter`` (the
median of the last 20 iterations, data loading included), ``compute_s_per_iter``
(forward + backward + step only), ``peak_mem_mib``
(``torch.cuda.max_memory_allocated``) and ``losses_finite``.
"""
import argparse
import json
import math
import os
import os.path as osp
import statistics
import sys
import time
import traceback

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='the config to train (e.g. a RetinaNet or PSPNet of configs/)')
    p.add_argument('--data-root', required=True,
                   help="the data set's root (e.g. the generated one of make_demo_data.py)")
    p.add_argument('--iters', type=int, default=30,
                   help='training iterations to time (default: %(default)s)')
    p.add_argument('--amp', action='store_true', help='AmpOptimWrapper (as tools/train.py --amp)')
    p.add_argument('--device', choices=['cuda', 'cpu'], default='cuda',
                   help='where to train (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=None,
                   help="images per iteration (default: the config's)")
    p.add_argument('--num-workers', type=int, default=None,
                   help="dataloader workers (default: the config's)")
    p.add_argument('--work-dir', default=None,
                   help='where the run writes (default: a temporary directory)')
    p.add_argument('--json', default=None, help='write the result here')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                   help="override settings of the config, as tools/train.py's "
                   '--cfg-options')
    return p.parse_args(argv)


def _coco_classes(cfg, data_root):
    """Class names of the generated COCO annotation file the train set reads."""
    ds = cfg.train_dataloader.dataset
    while 'dataset' in ds:  # RepeatDataset / ClassBalancedDataset wrappers
        ds = ds.dataset
    ann = osp.join(data_root, ds.get('ann_file', 'annotations/instances_train2017.json'))
    with open(ann) as f:
        cats = json.load(f)['categories']
    return ds, tuple(c['name'] for c in sorted(cats, key=lambda c: c['id']))


def probe_cfg(args):
    """The config of tools/train.py, shortened into a probe."""
    from acon_mm.engine.run_config import build_train_cfg, parse_cfg_options
    work_dir = args.work_dir or osp.join(ROOT, 'work_dirs', 'gpu_probe',
                                         osp.splitext(osp.basename(args.config))[0])
    os.environ.setdefault('LOCAL_RANK', '0')  # as tools/train.py's parse_args
    cfg = build_train_cfg(
        args.config, work_dir=work_dir, data_root=args.data_root, amp=args.amp,
        cfg_options=parse_cfg_options(args.cfg_options or []) or None)
    cfg.model.backbone.init_cfg = None
    if 'pretrained' in cfg.model:
        cfg.model.pretrained = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters,
                         val_interval=args.iters + 1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)
    cfg.log_processor = dict(by_epoch=False)
    cfg.load_from, cfg.resume = None, False
    loader = cfg.train_dataloader
    if args.batch_size:
        loader.batch_size = args.batch_size
    if args.num_workers is not None:
        loader.num_workers = args.num_workers
        loader.persistent_workers = args.num_workers > 0
    if cfg.get('default_scope') == 'mmdet':
        ds, classes = _coco_classes(cfg, args.data_root)
        ds.metainfo = dict(classes=classes)
        # the generated shapes are small: keep every image
        ds.filter_cfg = dict(filter_empty_gt=True, min_size=0)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    result = dict(config=args.config, device=args.device, iters=args.iters,
                  amp=bool(args.amp), ok=False)
    t_start = time.time()
    try:
        import torch
        from mmengine.hooks import Hook
        from mmengine.runner import Runner

        if args.device == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError('--device cuda but torch.cuda.is_available() is False')
        if args.device == 'cpu':
            os.environ['CUDA_VISIBLE_DEVICES'] = ''
            os.environ.setdefault('ACON_MM_ALLOW_CPU', '1')
        from acon_mm.engine.runner_utils import (
            adapt_cfg_to_device,
            config_task,
            init_cpu_distributed,
            register_task_modules,
            warn_all,
        )
        cfg = probe_cfg(args)
        task = config_task(cfg)
        register_task_modules(task)
        msgs = adapt_cfg_to_device(cfg, 'none', allow_cpu=args.device == 'cpu')
        init_cpu_distributed('none')
        result.update(task=task, batch_size=cfg.train_dataloader.batch_size,
                      torch=torch.__version__, torch_cuda=torch.version.cuda)
        if args.device == 'cuda':
            result['gpu'] = torch.cuda.get_device_name(0)
            torch.cuda.reset_peak_memory_stats()

        sync = torch.cuda.synchronize if args.device == 'cuda' else (lambda: None)
        rec = dict(iter_s=[], compute_s=[], losses=[])

        class ProbeHook(Hook):
            priority = 'LOWEST'

            def before_train(self, runner):
                sync()
                self.last = time.perf_counter()

            def before_train_iter(self, runner, batch_idx, data_batch=None):
                sync()
                self.t0 = time.perf_counter()

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                sync()
                now = time.perf_counter()
                rec['iter_s'].append(now - self.last)
                rec['compute_s'].append(now - self.t0)
                self.last = now
                loss = (outputs or {}).get('loss')
                rec['losses'].append(float(loss) if loss is not None else float('nan'))

        runner = Runner.from_cfg(cfg)
        warn_all(msgs)
        runner.register_hook(ProbeHook(), priority='LOWEST')
        runner.train()

        tail = slice(-20, None)
        result.update(
            iters_done=len(rec['iter_s']),
            s_per_iter=statistics.median(rec['iter_s'][tail]),
            compute_s_per_iter=statistics.median(rec['compute_s'][tail]),
            first_iter_s=rec['iter_s'][0],
            losses_first_last=[rec['losses'][0], rec['losses'][-1]],
            losses_finite=all(math.isfinite(v) for v in rec['losses']),
        )
        if args.device == 'cuda':
            result['peak_mem_mib'] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result['ok'] = result['losses_finite'] and result['iters_done'] == args.iters
    except BaseException as e:  # noqa: BLE001 - the JSON must say what failed
        result['error'] = f'{type(e).__name__}: {e}'
        result['traceback'] = traceback.format_exc()[-4000:]
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        result['wall_s'] = round(time.time() - t_start, 1)
        text = json.dumps(result, indent=2)
        print('GPU_TRAIN_PROBE ' + json.dumps({k: v for k, v in result.items()
                                                if k != 'traceback'}), flush=True)
        if args.json:
            os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
            with open(args.json, 'w') as f:
                f.write(text)
    return 0 if result['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
