"""The ``ACON_MM_*`` environment variables the code reads are exactly those of the one
table in ``docs/environment.md``."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_NAME = re.compile(r'\bACON_MM_[A-Z0-9_]*[A-Z0-9]\b')
#: where variables are read: the package, the tools, the Makefile and CI
_SOURCES = ('acon_mm', 'tools', 'Makefile', '.ci')
_SUFFIXES = ('.py', '.sh', '.cpp', '.h', 'Makefile', 'run')


def _names_in_code() -> dict:
    found = {}
    for top in _SOURCES:
        path = os.path.join(ROOT, top)
        files = [path] if os.path.isfile(path) else [
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
        for f in files:
            if not f.endswith(_SUFFIXES):
                continue
            with open(f, encoding='utf-8', errors='replace') as fh:
                for name in _NAME.findall(fh.read()):
                    found.setdefault(name, os.path.relpath(f, ROOT))
    return found


def _names_in_table() -> set:
    with open(os.path.join(ROOT, 'docs', 'environment.md'), encoding='utf-8') as f:
        rows = [line for line in f if line.startswith('| `ACON_MM_')]
    return {re.match(r'\| `(ACON_MM_[A-Z0-9_]+)`', row).group(1) for row in rows}


def test_code_and_table_name_the_same_variables():
    code, table = _names_in_code(), _names_in_table()
    undocumented = {n: f for n, f in code.items() if n not in table}
    assert not undocumented, f'read by the code, not in docs/environment.md: {undocumented}'
    unused = table - set(code)
    assert not unused, f'in docs/environment.md, read by no code: {sorted(unused)}'


def test_the_checker_sees_a_variable(tmp_path):
    """The scan finds names (so an empty scan cannot pass the test above)."""
    assert {'ACON_MM_IMPL', 'ACON_MM_NO_PATCHES', 'ACON_MM_VENV'} <= set(_names_in_code())
