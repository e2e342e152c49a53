"""Activation studies (``tools/analysis_tools/study.py``).

The fast tests plan studies from the real configs (families found by name,
refused when they differ in more than the activation, shortened schedules)
and report / resume studies whose run folders are written by hand, with a
recording stand-in for the tools. One test runs a real study: the demo
RetinaNet with ACON-C and ReLU, one seed, 2 iterations on 64x64 images of the
generated demo data, through tools/train.py and tools/test.py; its report is
checked against the runs' own logs.
"""
import csv
import glob
import importlib.util
import json
import os
import os.path as osp

import pytest
import torch

import acon_mm  # noqa: F401
from acon_mm.analysis.study import (
    StudyError,
    check_family,
    find_family,
    load_members,
    run_study,
    shorten_schedule,
)

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
DEMO = osp.join(ROOT, 'configs', 'demo', 'retinanet_r18-aconc_fpn_demo.py')
RETINA = osp.join(ROOT, 'configs', 'retinanet')
COCO_KEYS = ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75',
             'coco/bbox_mAP_s', 'coco/bbox_mAP_m', 'coco/bbox_mAP_l']
# 2 iterations, validated after each, on 64x64 images, every box kept
TINY = ['train_dataloader.batch_size=2', 'model.test_cfg.score_thr=0.0',
        'train_dataloader.dataset.pipeline.2.scale=(64,64)',
        'val_dataloader.dataset.pipeline.1.scale=(64,64)',
        'test_dataloader.dataset.pipeline.1.scale=(64,64)']


def _tool():
    path = osp.join(ROOT, 'tools', 'analysis_tools', 'study.py')
    spec = importlib.util.spec_from_file_location('acon_tool_study', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _quiet(_msg):
    pass


# --------------------------------------------------------------------------
# members and families
def test_family_found_by_name():
    fam = find_family(osp.join(RETINA, 'retinanet_r50-metaacon_fpn_1x_coco.py'))
    assert [osp.basename(f) for f in fam] == [
        f'retinanet_r50-{a}_fpn_1x_coco.py'
        for a in ('relu', 'swish', 'aconc', 'metaacon')]
    members = load_members([fam[0]])
    assert [(m.name, m.activation) for m in members] == [
        ('relu', 'ReLU'), ('swish', 'SwishBeta'), ('aconc', 'AconC'),
        ('metaacon', 'MetaAconC')]
    # they differ in acon_cfg and the ImageNet weights only: accepted
    assert check_family(members) == {}


def test_family_differing_in_more_than_activation_refused(capsys):
    cfgs = [osp.join(RETINA, 'retinanet_r50-relu_fpn_1x_coco.py'),
            osp.join(RETINA, 'retinanet_r101-aconc_fpn_1x_coco.py')]
    members = load_members(cfgs)
    with pytest.raises(StudyError) as err:
        check_family(members)
    msg = str(err.value)
    assert 'model.backbone.depth: relu=50, aconc=101' in msg, msg
    assert 'acon_cfg' not in msg.split('\n', 1)[1].split('members:')[0]
    assert '--allow-differences' in msg
    diffs = check_family(members, allow_differences=True)
    assert list(diffs) == ['model.backbone.depth']
    # the tool refuses it with exit status 2 before running anything
    with pytest.raises(SystemExit) as ex:
        _tool().main([*cfgs, '--dry-run', '--no-flops'])
    assert ex.value.code == 2
    assert 'model.backbone.depth' in capsys.readouterr().err
    # --cfg-options that makes one member differ is caught as well
    with pytest.raises(StudyError, match='train_cfg.max_iters'):
        check_family(load_members([DEMO], ['ReLU', 'AconC']) + [
            m for m in load_members([DEMO], ['SwishBeta'],
                                    cfg_options={'train_cfg.max_iters': 7})])


def test_activations_on_pretrained_base_refused():
    with pytest.raises(StudyError, match='init_cfg=None'):
        load_members([osp.join(RETINA, 'retinanet_r50-aconc_fpn_1x_coco.py')],
                     ['ReLU', 'AconC'])


def test_shorten_schedule():
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO)  # 600 iterations: warm-up 50, cosine to 600
    shorten_schedule(cfg, 60)
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=60,
                                 val_interval=60)
    warm, cos = cfg.param_scheduler
    assert (warm['begin'], warm['end']) == (0, 5)
    assert (cos['begin'], cos['end'], cos['T_max']) == (5, 60, 55)
    assert cfg.default_hooks.checkpoint.interval == 15
    assert cfg.default_hooks.checkpoint.by_epoch is False
    # the stock mmdet 1x schedule: 12 epochs, steps at 8 and 11, 500-iter warm-up
    cfg = Config.fromfile(osp.join(RETINA, 'retinanet_r50-relu_fpn_1x_coco.py'))
    shorten_schedule(cfg, 120, val_interval=40)
    assert cfg.train_cfg.max_iters == 120 and cfg.train_cfg.val_interval == 40
    warm, step = cfg.param_scheduler
    assert (warm['begin'], warm['end']) == (0, 120)  # clipped
    assert step['milestones'] == [80, 110] and step['end'] == 120
    assert not step['by_epoch'] and not cfg.log_processor.by_epoch


# --------------------------------------------------------------------------
# reports and resuming from hand-written run folders
def _fake_test(run_dir, metrics, ckpt):
    d = osp.join(run_dir, 'test', '20260101_000000')
    os.makedirs(d)
    with open(osp.join(d, '20260101_000000.json'), 'w') as f:
        json.dump({**metrics, 'data_time': 0.1, 'time': 0.2}, f)
    with open(osp.join(d, '20260101_000000.log'), 'w') as f:
        f.write(f'x - acon-mm: detection metrics of {ckpt}: '
                + json.dumps(metrics) + '\n')


def _fake_train(run_dir, losses, times):
    d = osp.join(run_dir, '20260101_000000', 'vis_data')
    os.makedirs(d)
    with open(osp.join(d, 'scalars.json'), 'w') as f:
        for i, (loss, t) in enumerate(zip(losses, times), 1):
            f.write(json.dumps(dict(lr=1e-3, loss=loss, time=t, data_time=0.0,
                                    iter=i, step=i)) + '\n')


def test_missing_metric_reported_not_filled(tmp_path):
    wd = str(tmp_path / 'study')
    full = {k: 0.1 * (i + 1) for i, k in enumerate(COCO_KEYS)}
    _fake_train(osp.join(wd, 'relu_seed0'), [2.0, 1.5], [0.9, 0.5])
    _fake_test(osp.join(wd, 'relu_seed0'), full, 'R.pth')
    _fake_train(osp.join(wd, 'aconc_seed0'), [2.0, 1.0], [0.9, 0.7])
    _fake_test(osp.join(wd, 'aconc_seed0'),
               {k: v + 0.05 for k, v in full.items() if k != 'coco/bbox_mAP_l'},
               'A.pth')
    rep = run_study([DEMO], ['ReLU', 'AconC'], seeds=[0, 1], work_dir=wd,
                    iters=2, collect_only=True, flops=False, log=_quiet)
    relu, aconc = rep['activations']
    assert aconc['metrics']['coco/bbox_mAP_l']['n'] == 0
    assert aconc['metrics']['coco/bbox_mAP_l']['mean'] is None
    # one seed reported it: the mean is that value, not averaged with a zero
    assert aconc['metrics']['coco/bbox_mAP']['values'] == {'0': pytest.approx(0.15)}
    assert aconc['metrics']['coco/bbox_mAP']['mean'] == pytest.approx(0.15)
    assert aconc['metrics']['coco/bbox_mAP']['delta'] == pytest.approx(0.05)
    assert relu['checkpoints'] == {'0': 'R.pth', '1': None}
    assert aconc['sec_per_iter']['mean'] == pytest.approx(0.7)
    missing = {(m['member'], m['seed']): m for m in rep['missing']}
    assert set(missing) == {('aconc', 0), ('relu', 1), ('aconc', 1)}
    assert 'coco/bbox_mAP_l' in missing['aconc', 0]['what']
    assert missing['aconc', 0]['work_dir'] == osp.join(wd, 'aconc_seed0')
    assert 'does not exist' in missing['aconc', 1]['what']
    md = open(osp.join(wd, 'study.md')).read()
    assert f'{osp.join(wd, "aconc_seed0")})' in md and '| missing |' in md
    row = {r['name']: r for r in csv.DictReader(open(osp.join(wd, 'study.csv')))}
    assert row['aconc']['coco/bbox_mAP_l_mean'] == ''
    assert row['aconc']['coco/bbox_mAP_l_n'] == '0'


def test_resume_skips_finished_runs(tmp_path):
    wd = str(tmp_path / 'study')
    opts = dict(configs=[DEMO], activations=['ReLU', 'AconC'], seeds=[0, 1],
                work_dir=wd, iters=2, flops=False, log=_quiet)
    os.makedirs(osp.join(wd, 'relu_seed0'))
    with open(osp.join(wd, 'relu_seed0', 'study_run.json'), 'w') as f:
        json.dump({}, f)  # tested: skipped
    os.makedirs(osp.join(wd, 'aconc_seed0'))  # interrupted after iteration 1
    torch.save({'meta': {}}, osp.join(wd, 'aconc_seed0', 'iter_1.pth'))
    os.makedirs(osp.join(wd, 'relu_seed1'))  # trained, not tested
    torch.save({'meta': {}}, osp.join(wd, 'relu_seed1', 'iter_2.pth'))
    with pytest.raises(StudyError, match='--resume'):
        run_study(**opts)
    done = []

    def execute(cmd, log_file):
        done.append(cmd)
        if 'train' in osp.basename(cmd[1]):  # training writes the final one
            run_dir = cmd[cmd.index('--work-dir') + 1]
            os.makedirs(run_dir, exist_ok=True)
            torch.save({'meta': {}}, osp.join(run_dir, 'iter_2.pth'))

    run_study(**opts, resume=True, execute=execute)
    summary = [(osp.basename(c[1]), osp.basename(c[c.index('--work-dir') + 1]),
                '--resume' in c) for c in done]
    # relu_seed0 skipped; relu_seed1 tested only; aconc_seed0 resumed; new
    assert summary == [('test.py', 'test', False),
                       ('train.py', 'aconc_seed0', True),
                       ('test.py', 'test', False),
                       ('train.py', 'aconc_seed1', False),
                       ('test.py', 'test', False)]
    assert done[0][3] == osp.join(wd, 'relu_seed1', 'iter_2.pth')
    assert done[2][3] == osp.join(wd, 'aconc_seed0', 'iter_2.pth')
    assert os.path.isfile(osp.join(wd, 'configs', 'aconc_seed1.py'))
    assert all(osp.isfile(osp.join(wd, f'{m}_seed{s}', 'study_run.json'))
               for m in ('relu', 'aconc') for s in (0, 1))
    # resuming with other options would mix two schedules: refused up front
    done.clear()
    with pytest.raises(StudyError, match='differs'):
        run_study(**{**opts, 'iters': 3}, resume=True, execute=execute)
    assert done == []


# stand-ins for tools/train.py and tools/test.py (real subprocesses through
# the study's own _execute): train writes the final checkpoint and when it ran
FAKE_TRAIN = """import json, os, sys, time, zipfile
wd = sys.argv[sys.argv.index('--work-dir') + 1]
os.makedirs(wd, exist_ok=True)
t0 = time.time()
if os.path.basename(wd) in os.environ.get('FAKE_FAIL', '').split(','):
    print('fake training failed'); sys.exit(3)
time.sleep(float(os.environ.get('FAKE_SECONDS', '0')))
with zipfile.ZipFile(os.path.join(wd, 'iter_2.pth'), 'w') as z:
    z.writestr('archive/data.pkl', b'x')
with open(os.path.join(wd, 'fake_train.json'), 'w') as f:
    json.dump(dict(start=t0, end=time.time(),
                   threads=os.environ.get('OMP_NUM_THREADS')), f)
"""


@pytest.fixture()
def fake_tools(tmp_path):
    tools = tmp_path / 'tools'
    tools.mkdir()
    (tools / 'train.py').write_text(FAKE_TRAIN)
    (tools / 'test.py').write_text('print("fake test")\n')
    return str(tools)


@pytest.mark.slow
def test_jobs_run_side_by_side(tmp_path, fake_tools, monkeypatch):
    wd = str(tmp_path / 'study')
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setenv('FAKE_SECONDS', '1.5')
    monkeypatch.setattr(os, 'cpu_count', lambda: 4)
    opts = dict(configs=[DEMO], activations=['ReLU', 'AconC'], seeds=[0, 1],
                work_dir=wd, iters=2, flops=False, log=_quiet,
                tools_dir=fake_tools, cpu=True)
    with pytest.raises(StudyError, match='--cpu'):
        run_study(**{**opts, 'cpu': False}, jobs=2)
    with pytest.raises(StudyError, match='--jobs must be >= 1'):
        run_study(**opts, jobs=0)
    assert not osp.exists(wd)  # refused before anything was written
    rep = run_study(**opts, jobs=2)
    names = ['relu_seed0', 'relu_seed1', 'aconc_seed0', 'aconc_seed1']
    runs = {n: json.load(open(osp.join(wd, n, 'fake_train.json')))
            for n in names}
    assert all(osp.isfile(osp.join(wd, n, 'study_run.json')) for n in names)
    assert len(rep['executed']) == 8  # a train and a test per run
    # two at a time: the first two overlap, and never three at once
    assert runs['relu_seed0']['start'] < runs['relu_seed1']['end']
    assert runs['relu_seed1']['start'] < runs['relu_seed0']['end']
    for n in names:
        live = [m for m in names if runs[m]['start'] <= runs[n]['start']
                < runs[m]['end']]
        assert len(live) <= 2, live
    assert {r['threads'] for r in runs.values()} == {'2'}  # 4 cores / 2 jobs


def test_jobs_stop_at_the_first_failure(tmp_path, fake_tools, monkeypatch):
    wd = str(tmp_path / 'study')
    monkeypatch.setenv('FAKE_FAIL', 'relu_seed0')
    monkeypatch.setenv('FAKE_SECONDS', '1')
    with pytest.raises(StudyError, match='relu_seed0') as err:
        run_study([DEMO], ['ReLU', 'AconC'], seeds=[0, 1], work_dir=wd,
                  iters=2, flops=False, log=_quiet, tools_dir=fake_tools,
                  cpu=True, jobs=2)
    assert 'fake training failed' in str(err.value)
    # the run beside it finished and is marked done; none started after it
    assert osp.isfile(osp.join(wd, 'relu_seed1', 'study_run.json'))
    assert not osp.exists(osp.join(wd, 'aconc_seed0', 'fake_train.json'))
    assert not osp.exists(osp.join(wd, 'aconc_seed1', 'fake_train.json'))


# --------------------------------------------------------------------------
# a real study
@pytest.fixture(scope='module')
def demo_study(tmp_path_factory, demo_coco, run_tool):
    wd = str(tmp_path_factory.mktemp('study') / 'demo')
    argv = [DEMO, '--activations', 'AconC', 'ReLU', '--seeds', '0', '--iters',
            '2', '--val-interval', '1', '--cpu', '--data-root',
            demo_coco['data_root'], '--work-dir', wd, '--cfg-options', *TINY]
    proc = run_tool('tools/analysis_tools/study.py', *argv, timeout=600)
    return wd, argv, proc


def _scalars(run_dir):
    (path, ) = glob.glob(osp.join(run_dir, '2*', 'vis_data', 'scalars.json'))
    return [json.loads(line) for line in open(path)]


@pytest.mark.slow
def test_demo_study_report(demo_study):
    wd, _, proc = demo_study
    for name in ('study.md', 'study.csv', 'study.json', 'study_curves.png',
                 'study_metrics.png'):
        assert osp.getsize(osp.join(wd, name)) > 0, name
    import matplotlib.image as mpimg
    for name in ('study_curves.png', 'study_metrics.png'):
        img = mpimg.imread(osp.join(wd, name))
        assert img.ndim == 3 and min(img.shape[:2]) > 200
        assert img[..., :3].std() > 0.01  # not blank
    rep = json.load(open(osp.join(wd, 'study.json')))
    assert [(a['name'], a['activation']) for a in rep['activations']] == [
        ('aconc', 'AconC'), ('relu', 'ReLU')]
    assert rep['baseline'] == 'relu' and rep['metrics'] == COCO_KEYS
    assert rep['primary'] == 'coco/bbox_mAP'
    acts = {a['name']: a for a in rep['activations']}
    # COCO's -1 (no ground truth of a size) is listed, never averaged
    not_scored = sorted((m['member'], m['what'].split(' ')[0])
                        for m in rep['missing'])
    for run in rep['runs']:
        rd = osp.join(wd, f'{run["member"]}_seed0')
        # metrics: what test.py's evaluator dumped
        (tj, ) = glob.glob(osp.join(rd, 'test', '2*', '2*.json'))
        logged = json.load(open(tj))
        assert run['metrics'] == {k: logged[k] for k in COCO_KEYS}
        a = acts[run['member']]
        for k in COCO_KEYS:
            if logged[k] == -1:
                assert a['metrics'][k]['n'] == 0
                not_scored.remove((run['member'], k))
                continue
            assert a['metrics'][k]['values'] == {'0': logged[k]}
            assert a['metrics'][k]['std'] is None and a['metrics'][k]['n'] == 1
        assert osp.samefile(run['checkpoint'], osp.join(rd, 'iter_2.pth'))
        assert a['checkpoints']['0'] == run['checkpoint']
        # loss curve, validation after each iteration, s/iter: the scalars
        train = [r for r in _scalars(rd) if 'loss' in r]
        assert run['train_curve'] == [[r['iter'], r['loss']] for r in train]
        assert [r['iter'] for r in train] == [1, 2]
        assert [v[0] for v in run['val_curve']] == [1, 2]
        assert run['sec_per_iter'] == pytest.approx(train[1]['time'])
        assert run['peak_memory_mb'] is None  # CPU: mmengine logs none
        assert a['flops_input'] == [1, 3, 64, 64] and a['flops'] > 0
    assert not_scored == []  # nothing else is missing
    d = (acts['aconc']['metrics']['coco/bbox_mAP']['mean']
         - acts['relu']['metrics']['coco/bbox_mAP']['mean'])
    assert acts['aconc']['metrics']['coco/bbox_mAP']['delta'] == pytest.approx(d)
    assert acts['relu']['metrics']['coco/bbox_mAP']['delta'] is None
    # ACON-C learns p1, p2, beta per channel: more parameters than ReLU
    assert acts['aconc']['params'] > acts['relu']['params']
    rows = list(csv.DictReader(open(osp.join(wd, 'study.csv'))))
    assert [r['activation'] for r in rows] == ['AconC', 'ReLU']
    assert float(rows[0]['coco/bbox_mAP_mean']) == pytest.approx(
        acts['aconc']['metrics']['coco/bbox_mAP']['mean'])
    md = open(osp.join(wd, 'study.md')).read()
    assert '| bbox_mAP | mAP_50 |' in md and '(baseline)' in md
    assert 'not logged: no CUDA' in md


@pytest.mark.slow
def test_demo_study_resume_runs_nothing(demo_study):
    wd, argv, _ = demo_study
    args = _tool().parse_args(argv + ['--resume', '--no-flops'])
    msgs, done = [], []
    with pytest.raises(StudyError, match='started before'):
        run_study(args.configs, args.activations, seeds=args.seeds,
                  work_dir=wd, iters=args.iters, val_interval=args.val_interval,
                  cfg_options=args.cfg_options, flops=False, log=_quiet,
                  execute=lambda c, f: done.append(c))
    rep = run_study(args.configs, args.activations, seeds=args.seeds,
                    work_dir=wd, iters=args.iters,
                    val_interval=args.val_interval,
                    cfg_options=args.cfg_options, resume=True, flops=False,
                    log=msgs.append, execute=lambda c, f: done.append(c))
    assert done == [] and rep['executed'] == []
    assert sum('finished before, skipped' in m for m in msgs) == 2
    assert all('= -1: COCO' in m['what'] for m in rep['missing'])
