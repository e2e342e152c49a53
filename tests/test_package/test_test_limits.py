"""No test can hang the suite: the per-test limit is in force, and the fast loop exists.

A test of the configuration (not a sleeping test): pytest-timeout is loaded in this
very session, with the limit and method that ``pyproject.toml`` states, and the
``slow`` marker that ``make test-fast`` deselects is registered.
"""
import os.path as osp
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _ini():
    if tomllib is None:
        pytest.skip('tomllib needs Python >= 3.11')
    with open(osp.join(ROOT, 'pyproject.toml'), 'rb') as f:
        return tomllib.load(f)['tool']['pytest']['ini_options']


def test_the_per_test_limit_is_in_force(request):
    ini = _ini()
    assert request.config.pluginmanager.hasplugin('timeout'), \
        'pytest-timeout is not loaded: install it (tools/setup_env.sh does)'
    assert isinstance(ini['timeout'], int) and 60 <= ini['timeout'] <= 3600
    assert ini['timeout_method'] == 'signal'
    # what this session runs under (a -p no:timeout or a --timeout=0 would show here)
    assert float(request.config.getini('timeout')) == ini['timeout']
    assert request.config.getini('timeout_method') == 'signal'
    assert request.config.getoption('timeout') in (None, ini['timeout'])


def test_the_fast_loop_deselects_the_slow_marker():
    ini = _ini()
    assert any(m.startswith('slow:') for m in ini['markers'])
    with open(osp.join(ROOT, 'Makefile')) as f:
        make = f.read()
    rule = re.search(r'^test-fast:.*\n\t(.*)$', make, re.M)
    assert rule and '-m "not slow"' in rule.group(1), 'make test-fast must skip the slow tests'
