"""tools/activation_search.py end to end on a tiny child (issue 22): real
ResNet-20 children trained and tested by tools/train.py / tools/test.py, a
search killed in the middle of a batch and resumed without re-training any
finished child, the report, and the refusals."""
import csv
import json
import os.path as osp

import pytest

from acon_mm.analysis.study import _execute

pytestmark = pytest.mark.slow  # children trained in subprocesses

CHILD = 'configs/search/resnet20-relu_1xb128-1k_cifar-demo.py'


class Killed(BaseException):
    """Stands for the search process being killed."""


def _trainer(data_root, execute):
    return dict(iters=2, val_interval=2, cpu=True, data_root=data_root, jobs=1,
                cfg_options={'train_dataloader.batch_size': 8}, execute=execute)


def test_search_killed_mid_batch_resumes_and_reports(run_tool, tmp_path, demo_coco):
    from acon_mm.search.runner import STATE_FILE, run_activation_search
    from acon_mm.testing.cifar_demo import make_cifar_demo
    data = make_cifar_demo(str(tmp_path / 'cifar'), num_train=40, num_test=20)['data_root']
    wd = str(tmp_path / 'search')
    kwargs = dict(strategies=['random'], budget=2, batch_size=2, search_seed=0,
                  references=['ReLU'])
    finished, calls = set(), []

    def killing(cmd, log_file, **kw):  # the 4th command (2nd child's training) is killed
        calls.append(log_file)
        if len(calls) == 5:
            raise Killed
        _execute(cmd, log_file, **kw)
        finished.add(log_file)

    with pytest.raises(Killed):
        run_activation_search(CHILD, wd, trainer_kwargs=_trainer(data, killing),
                              log=lambda s: None, **kwargs)
    assert osp.isfile(osp.join(wd, STATE_FILE))
    # references trained and tested, then the batch's first child; the second killed
    assert len(finished) == 4 and calls[4].endswith('study_train.out')

    again, lines = [], []

    def counting(cmd, log_file, **kw):
        again.append(log_file)
        _execute(cmd, log_file, **kw)

    state = run_activation_search(CHILD, wd, trainer_kwargs=_trainer(data, counting),
                                  resume=True, log=lines.append, **kwargs)
    assert not set(again) & finished, 'a finished child was trained again'
    assert again == [calls[4], calls[4].replace('train', 'test')]
    assert any('finished before, reused' in s for s in lines)
    records = state['progress']['random']
    assert sum(r['evaluations'] for r in records) == 2
    evaluated = [r for r in records if r['status'] == 'evaluated']
    assert evaluated and all(0.0 <= r['reward'] <= 100.0 for r in evaluated)

    # the CLI: a second search into the same folder is refused ...
    common = [CHILD, '--strategies', 'random', '--budget', '2', '--batch-size', '2',
              '--references', 'ReLU', '--iters', '2', '--val-interval', '2', '--cpu',
              '--data-root', data, '--work-dir', wd,
              '--cfg-options', 'train_dataloader.batch_size=8']
    proc = run_tool('tools/activation_search.py', *common, timeout=120, check=False)
    assert proc.returncode != 0 and 'pass --resume' in proc.stderr, proc.stderr[-2000:]
    # ... a resume with other settings names them ...
    other = [a if a != '2' or common[i - 1] != '--budget' else '3'
             for i, a in enumerate(common)]
    proc = run_tool('tools/activation_search.py', *other, '--resume', timeout=120,
                    check=False)
    assert proc.returncode != 0 and 'budget: 2 before, 3 now' in proc.stderr, \
        proc.stderr[-2000:]
    # ... and the finished search resumed trains nothing and writes the report
    proc = run_tool('tools/activation_search.py', *common, '--resume', timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ('search.md', 'search.csv', 'search.json', 'search_shapes.png',
                 'search_curves.png'):
        assert osp.getsize(osp.join(wd, name)) > 0, name
    with open(osp.join(wd, 'search.json')) as f:
        report = json.load(f)
    board = report['leaderboard']
    assert [b['rank'] for b in board] == list(range(1, len(board) + 1))
    assert [b['reward'] for b in board] == sorted((b['reward'] for b in board), reverse=True)
    relu = [b for b in board if b['reference']]
    assert [b['expression'] for b in relu] == ['ReLU']
    assert relu[0]['reward'] == state['references'][0]['reward']
    with open(osp.join(wd, 'search.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [r['expression'] for r in rows] == [r['expression'] for r in records]
    md = open(osp.join(wd, 'search.md')).read()
    assert '## Leaderboard' in md and '`ReLU`' in md
    # --report-only rewrites the report from the state alone
    proc = run_tool('tools/activation_search.py', CHILD, '--work-dir', wd, '--report-only',
                    timeout=120)
    assert proc.returncode == 0 and '## Leaderboard' in proc.stdout, proc.stderr[-2000:]

    # --transfer 1: the best find goes to the detection study beside the controls
    proc = run_tool('tools/activation_search.py', CHILD, '--work-dir', wd, '--report-only',
                    '--transfer', '1', '--transfer-config',
                    'configs/demo/retinanet_r18-aconc_fpn_demo.py', '--transfer-data-root',
                    demo_coco['data_root'], '--transfer-iters', '2', '--cpu',
                    # after 2 iterations no score passes the stock 0.05: keep every box
                    '--transfer-cfg-options', 'model.test_cfg.score_thr=0.0', timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(osp.join(wd, 'search.json')) as f:
        report = json.load(f)
    from acon_mm.search.report import top_functions
    best = top_functions(report['leaderboard'], 1)
    assert best and report['transfer']['top'] == best
    study_md = open(report['transfer']['study_md']).read()
    for act in ('ReLU', 'SwishBeta', 'AconC', best[0]):
        assert act in study_md, act
    md = open(osp.join(wd, 'search.md')).read()
    transfer = md.split('## Transfer')[1]
    assert '| activation | config | bbox_mAP' in transfer, md[-2000:]
    assert 'No run reported' not in transfer and 's/iter (train)' not in transfer
