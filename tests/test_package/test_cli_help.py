"""Every command-line option of the tools says what it does, once.

Read from the sources (ast), so a new option without ``help=`` fails here; the
converter's ``--help`` lists its ``--arch`` names once; the Slurm scripts do not
echo every line (``set -x``) and pick the project's Python as ``dist_*.sh`` do.
"""
import ast
import glob
import os.path as osp
import subprocess
import sys

import pytest

from acon_mm.models.official_ckpt import OFFICIAL_ARCHS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = sorted(glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True))


def _bare_options(path):
    tree = ast.parse(open(path).read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'add_argument' \
                and not any(k.arg == 'help' for k in node.keywords):
            yield f'{osp.relpath(path, ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}'


def test_every_option_of_every_tool_has_a_help_text():
    assert len(TOOLS) > 10
    bare = [b for path in TOOLS for b in _bare_options(path)]
    assert not bare, '\n'.join(bare)


def test_the_converter_lists_its_arch_names_once():
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/model_converters/acon_official_to_mm.py'),
         '--help'], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for arch in OFFICIAL_ARCHS:
        assert proc.stdout.count(arch) == 1, (arch, proc.stdout)


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_scripts_are_quiet_and_pick_the_project_python(script):
    text = open(osp.join(ROOT, 'tools', script)).read()
    sets = [line for line in text.splitlines() if line.startswith('set -')]
    assert sets == ['set -euo pipefail'], sets
    picker = open(osp.join(ROOT, 'tools', 'dist_train.sh')).read()
    block = picker[picker.index('if [ -z "${PYTHON:-}" ]'):]
    block = block[:block.index('\nfi\n') + 4]
    assert block in text
