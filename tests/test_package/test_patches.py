"""What ``import acon_mm`` changes in other packages: the two patches of
:mod:`acon_mm.patches`, nothing else, and none of them with ``ACON_MM_NO_PATCHES=1``.

Each case runs in a fresh interpreter, so what the test process imported earlier
cannot hide a change.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # fresh interpreters importing the whole stack

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Records, before and after ``import acon_mm``, every upstream object acon-mm
# touches now or touched before the review (registry entries, functions).
_PROBE = r'''
import json, sys
import mmengine.runner as mm_runner_pkg
import mmengine.runner.checkpoint as mm_ckpt
import mmengine.runner.runner as mm_runner
from mmcv.cnn import ConvModule
from mmengine.fileio.backends import LocalBackend
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import CheckpointLoader


def state():
    return dict(
        conv_module_init=id(ConvModule.__init__),
        local_loader=id(CheckpointLoader._schemes['']),
        local_put=id(LocalBackend.put),
        local_put_text=id(LocalBackend.put_text),
        find_latest=[id(m.find_latest_checkpoint) for m in (mm_ckpt, mm_runner, mm_runner_pkg)],
        checkpoint_hook=id(HOOKS.get('CheckpointHook')),
        hook_names=sorted(HOOKS.module_dict),
    )


before = state()
import acon_mm
from acon_mm.patches import PATCHES
after = state()
print(json.dumps(dict(before=before, after=after, patches=sorted(PATCHES),
                      acon_hook='AconCheckpointHook' in HOOKS.module_dict)))
'''


def _probe(no_patches: bool) -> dict:
    env = dict(os.environ)
    env.pop('ACON_MM_NO_PATCHES', None)
    if no_patches:
        env['ACON_MM_NO_PATCHES'] = '1'
    out = subprocess.run([sys.executable, '-c', _PROBE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def patched():
    return _probe(no_patches=False)


def test_only_the_listed_patches_change_upstream_objects(patched):
    before, after = patched['before'], patched['after']
    assert patched['patches'] == ['conv_module_acon_width', 'safe_checkpoint_loading']
    changed = {k for k in before if k != 'hook_names' and before[k] != after[k]}
    assert changed == {'conv_module_init', 'local_loader'}


def test_registries_gain_names_and_replace_none(patched):
    before, after = patched['before'], patched['after']
    # mmengine's own CheckpointHook stays what every other config in the process gets
    assert before['checkpoint_hook'] == after['checkpoint_hook']
    assert set(before['hook_names']) <= set(after['hook_names'])
    assert patched['acon_hook']
    assert 'AtomicCheckpointHook' not in after['hook_names']


def test_no_patches_changes_nothing():
    probe = _probe(no_patches=True)
    before, after = probe['before'], probe['after']
    assert {k: v for k, v in before.items() if k != 'hook_names'} == \
        {k: v for k, v in after.items() if k != 'hook_names'}
