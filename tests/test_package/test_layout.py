"""The package's layout: imports point down only, no cycles, every module imports.

Levels, bottom to top (a module may import its own level and those below):
``version``/``utils`` -> ``ops`` -> ``models`` -> ``datasets`` -> ``engine`` ->
``analysis``/``testing`` -> ``search`` (its runner is the study's machinery) /
``patches`` -> ``acon_mm`` itself. Imports inside
functions count too: a lazy import that points up is a hidden cycle.
"""
import ast
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PKG = osp.join(ROOT, 'acon_mm')

LEVELS = {
    'version': 0, 'utils': 0, 'ops': 1, 'models': 2, 'datasets': 3, 'search': 6,
    'engine': 4, 'analysis': 5, 'testing': 5, 'deployment': 6, 'patches': 6, '': 7
}


def _modules():
    mods = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith('.py'):
                continue
            rel = osp.relpath(osp.join(dirpath, f), ROOT)[:-3].split(os.sep)
            if rel[-1] == '__init__':
                rel = rel[:-1]
            mods['.'.join(rel)] = osp.join(dirpath, f)
    return mods


def _imports(name, path):
    """acon_mm modules imported anywhere in ``path`` (absolute names)."""
    tree = ast.parse(open(path).read(), path)
    is_pkg = path.endswith('__init__.py')
    base = name.split('.') if is_pkg else name.split('.')[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split('.')[0] == 'acon_mm'}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[:len(base) - node.level + 1]
                mod = '.'.join(parts + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            if mod.split('.')[0] != 'acon_mm':
                continue
            out.add(mod)
            for a in node.names:  # `from . import ops` imports a module
                out.add(f'{mod}.{a.name}')
    return out


def _level(mod):
    parts = mod.split('.')
    return LEVELS[parts[1] if len(parts) > 1 else '']


MODULES = _modules()
GRAPH = {m: {i for i in _imports(m, p) if i in MODULES and i != m}
         for m, p in MODULES.items()}


def test_imports_point_down():
    up = [f'{m} imports {i}' for m, deps in GRAPH.items() for i in deps
          if _level(i) > _level(m)]
    assert not up, 'imports pointing up:\n' + '\n'.join(sorted(up))


def test_no_import_cycles():
    # a module's package __init__ runs before it; ignore parent-package edges
    graph = {m: {d for d in deps if not m.startswith(d + '.')}
             for m, deps in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(' -> '.join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_layout_checker_can_fail(tmp_path):
    """The checker sees an upward import (here, ops importing models)."""
    p = tmp_path / 'bad.py'
    p.write_text('def f():\n    from ..models import AconC\n')
    deps = _imports('acon_mm.ops.bad', str(p))
    assert 'acon_mm.models' in deps and _level('acon_mm.models') > _level('acon_mm.ops')


def test_every_module_imports_in_dependency_order():
    """One fresh interpreter imports every module, lowest level first."""
    order = sorted(MODULES, key=lambda m: (_level(m), m.count('.'), m))
    code = ('import importlib, sys\n'
            f'for m in {order!r}:\n'
            '    importlib.import_module(m)\n'
            'print("imported", len(sys.modules))\n')
    res = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize('limit', [500])
def test_no_oversized_python_file(limit):
    big = {m: n for m, p in MODULES.items()
           for n in [sum(1 for _ in open(p))] if n > limit + 20}
    assert not big, f'Python files above ~{limit} lines: {big}'
