"""The study fails early and reports honestly.

* a run whose evaluator returned nothing is reported *missing* with its folder, in a
  well-formed report, and the tool exits non-zero (``--allow-missing`` accepts it);
* every member is checked before the first run: an unknown activation type, a
  config that does not build, missing pretrained files; ``--dry-run`` reports the
  same errors; nothing is trained or written.
"""
import importlib.util
import json
import os
import os.path as osp
import re

import pytest

import acon_mm  # noqa: F401
from acon_mm.analysis.study import StudyError, run_study

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
DEMO = osp.join(ROOT, 'configs', 'demo', 'retinanet_r18-aconc_fpn_demo.py')
R50 = osp.join(ROOT, 'configs', 'retinanet', 'retinanet_r50-aconc_fpn_1x_coco.py')


def _tool():
    path = osp.join(ROOT, 'tools', 'analysis_tools', 'study.py')
    spec = importlib.util.spec_from_file_location('acon_tool_study_checks', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _empty_test_result(run_dir, ckpt):
    """A tools/test.py run whose evaluator returned no metric (its log line too)."""
    d = osp.join(run_dir, 'test', '20260101_000000')
    os.makedirs(d)
    with open(osp.join(d, '20260101_000000.json'), 'w') as f:
        json.dump({'data_time': 0.1, 'time': 0.2}, f)
    with open(osp.join(d, '20260101_000000.log'), 'w') as f:
        f.write(f'x - acon-mm: detection metrics of {ckpt}: {{}}\n')


def _tables(md):
    """Each Markdown table of ``md`` as its list of rows (cells per row)."""
    tables, cur = [], []
    for line in md.splitlines() + ['']:
        if line.startswith('|'):
            cur.append([c.strip() for c in line.strip().strip('|').split('|')])
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def test_a_run_without_metrics_is_reported_missing(tmp_path):
    wd = str(tmp_path / 'study')
    for name in ('relu_seed0', 'aconc_seed0'):
        _empty_test_result(osp.join(wd, name), f'{name}.pth')
    args = [DEMO, '--activations', 'ReLU', 'AconC', '--work-dir', wd, '--collect-only',
            '--no-flops']
    with pytest.raises(SystemExit) as exit_info:
        _tool().main(args)
    assert exit_info.value.code == 1
    md = open(osp.join(wd, 'study.md')).read()
    for table in _tables(md):  # well-formed: header, separator and rows of one width
        assert len({len(row) for row in table}) == 1, table
        assert all(re.fullmatch(r'-+:?', c) for c in table[1]), table
    assert 'No run reported a metric' in md
    for name in ('relu_seed0', 'aconc_seed0'):
        assert f'(work dir {osp.join(wd, name)})' in md
    rep = json.load(open(osp.join(wd, 'study.json')))
    assert {(m['member'], m['work_dir']) for m in rep['missing']} == {
        ('relu', osp.join(wd, 'relu_seed0')), ('aconc', osp.join(wd, 'aconc_seed0'))}
    assert all('reported none' in m['what'] for m in rep['missing'])
    # accepted on request: the same report, exit status 0
    rep = _tool().main(args + ['--allow-missing'])
    assert len(rep['missing']) == 2


def test_an_unknown_activation_fails_before_any_run(tmp_path):
    wd = tmp_path / 'study'
    ran = []
    for dry in (False, True):
        with pytest.raises(StudyError, match=r"aconcc.*unknown activation type 'AconCC'"):
            run_study([DEMO], ['ReLU', 'AconCC'], work_dir=str(wd), iters=2, cpu=True,
                      dry_run=dry, flops=False, log=lambda _m: None,
                      execute=lambda *a, **k: ran.append(a))
    assert not ran and not wd.exists()  # nothing trained, nothing written


def test_the_cli_dry_run_names_the_typo(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _tool().main([DEMO, '--activations', 'ReLU', 'AconCC', '--work-dir',
                      str(tmp_path / 'study'), '--cpu', '--dry-run'])
    assert exit_info.value.code == 2
    assert "unknown activation type 'AconCC'" in capsys.readouterr().err


def test_missing_pretrained_files_fail_before_any_run(tmp_path):
    # the R50 family loads converted ImageNet weights that are not here
    with pytest.raises(StudyError) as err:
        run_study([R50], work_dir=str(tmp_path / 'study'), dry_run=True,
                  flops=False, log=lambda _m: None)
    msg = str(err.value)
    assert 'model.backbone.init_cfg.checkpoint' in msg and 'does not exist' in msg
    assert 'aconc (' in msg and 'metaacon (' in msg, msg  # every member named


def test_expressions_are_members_by_their_canonical_form(tmp_path):
    from acon_mm.analysis.study_config import check_members, load_members
    members = load_members([DEMO], activations=['ReLU', 'max(x, sigmoid(x))',
                                                'x*sigmoid(beta*x)'])
    assert [m.activation for m in members] == ['ReLU', 'max(sigmoid(x), x)',
                                               'sigmoid(beta*x)*x']
    assert members[1].cfg.model.backbone.acon_cfg == dict(type='SearchedActivation',
                                                          expr='max(sigmoid(x), x)')
    assert re.fullmatch(r'expr-max_sigmoid_x_x-[0-9a-f]{6}', members[1].name)
    check_members(members)  # they build
    with pytest.raises(StudyError, match='lists a type twice'):
        load_members([DEMO], activations=['max(x, sigmoid(x))', 'max(sigmoid(x),x)'])
    with pytest.raises(StudyError, match=r"--activations 'relu\(x\)\*2': call of 'relu'"):
        run_study([DEMO], activations=['ReLU', 'relu(x)*2'], work_dir=str(tmp_path),
                  dry_run=True)
    assert not os.listdir(tmp_path)
