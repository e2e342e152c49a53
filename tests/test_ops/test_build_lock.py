"""The CPU extension's build is safe to interrupt (acon_mm.ops.cpu_ext.BuildLock).

torch's ``cpp_extension.load`` leaves a ``lock`` file behind when its builder is
killed, and every later load of the same sources then waits forever. These tests
build the real extension into fresh ``ACON_MM_CACHE_DIR`` folders in subprocesses
(each with a timeout: a hang fails the test instead of the suite) and check that
a build killed mid-compile, a stale lock and two racing processes all end with the
extension loaded, not the PyTorch fallback.
"""
import glob
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from acon_mm.ops import cpu_ext

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# one build takes ~40-90 s on 2 cores; a load that hangs is stopped at this
LOAD_TIMEOUT_S = 600
COMPILERS = ('cc1plus', 'c++', 'g++', 'clang++', 'clang', 'cc1')

LOADER = textwrap.dedent("""
    import json, time
    t = time.time()
    from acon_mm.ops import cpu_ext
    ext = cpu_ext.load_cpu_ext(warn=False)
    print(json.dumps({'loaded': ext is not None, 'error': cpu_ext.cpu_ext_error(),
                      'seconds': time.time() - t}))
""")


def _env(cache):
    env = dict(os.environ, ACON_MM_CACHE_DIR=str(cache), PYTHONWARNINGS='ignore')
    env.setdefault('MAX_JOBS', '2')
    return env


def _start_loader(cache):
    return subprocess.Popen([sys.executable, '-c', LOADER], env=_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _result(proc, what):
    try:
        out, err = proc.communicate(timeout=LOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f'{what}: the extension load still waited after {LOAD_TIMEOUT_S} s')
    assert proc.returncode == 0, f'{what}: exit {proc.returncode}\n{err[-3000:]}'
    res = json.loads(out.strip().splitlines()[-1])
    assert res['loaded'], f'{what}: fell back to PyTorch: {res["error"]}'
    return res


def _session_processes(sid):
    """(pid, command name) of every process in session ``sid``."""
    found = []
    for stat in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index('(') + 1:text.rindex(')')]
        fields = text[text.rindex(')') + 2:].split()
        if int(fields[3]) == sid:  # field 6 of stat: the session id
            found.append((int(stat.split('/')[2]), comm))
    return found


def _build_dirs(cache):
    return [d for d in glob.glob(osp.join(str(cache), 'acon_mm_ext_*')) if osp.isdir(d)]


def _ninja_builds(build_dir, suffix):
    """How many times ninja recorded building an output ending in ``suffix``."""
    with open(osp.join(build_dir, '.ninja_log')) as f:
        return sum(1 for line in f
                   if not line.startswith('#') and line.split('\t')[3].endswith(suffix))


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_build_killed_mid_compile_does_not_block_the_next_load(tmp_path):
    cache = tmp_path / 'cache'
    proc = _start_loader(cache)
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    try:
        while not any(c in COMPILERS for _, c in _session_processes(proc.pid)):
            assert proc.poll() is None, 'the build ended before a compiler was seen'
            assert time.monotonic() < deadline, 'no compiler started'
            time.sleep(0.2)
        time.sleep(2)  # mid-compile
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # as Ctrl-C, scancel or a time limit do
        proc.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # the killed compiler is reaped
    (build_dir, ) = _build_dirs(cache)
    # the trap itself: torch's lock is left behind, its build unfinished
    assert osp.exists(osp.join(build_dir, 'lock'))
    assert not glob.glob(osp.join(build_dir, '*.so'))

    res = _result(_start_loader(cache), 'load after a killed build')
    assert not osp.exists(osp.join(build_dir, 'lock'))
    assert glob.glob(osp.join(build_dir, '*.so'))
    print(f'load after a killed build: {res["seconds"]:.0f} s')


@pytest.fixture(scope='module')
def raced_cache(tmp_path_factory):
    """Two processes started together on an empty cache: their results and the cache."""
    cache = tmp_path_factory.mktemp('raced') / 'cache'
    procs = [_start_loader(cache) for _ in range(2)]
    results = [_result(p, f'racing load {i}') for i, p in enumerate(procs)]
    return cache, results


def test_two_processes_on_an_empty_cache_build_once(raced_cache):
    cache, results = raced_cache
    assert all(r['loaded'] for r in results)
    (build_dir, ) = _build_dirs(cache)
    assert _ninja_builds(build_dir, '.o') == 1
    assert _ninja_builds(build_dir, '.so') == 1
    assert not osp.exists(osp.join(build_dir, 'lock'))


def test_stale_torch_lock_in_a_built_cache_is_cleared(raced_cache):
    cache, results = raced_cache
    (build_dir, ) = _build_dirs(cache)
    stale = osp.join(build_dir, 'lock')
    open(stale, 'w').close()  # as a builder killed at any moment leaves it
    res = _result(_start_loader(cache), 'load with a stale lock')
    assert not osp.exists(stale)
    # at once: no rebuild, no wait (a build takes >= 40 s here)
    assert res['seconds'] < 30, res
    assert _ninja_builds(build_dir, '.o') == 1


HOLDER = textwrap.dedent("""
    import sys, time
    from acon_mm.ops.cpu_ext import BuildLock
    with BuildLock(sys.argv[1]):
        print('held', flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_a_long_wait_names_the_lock_and_its_holder(tmp_path, monkeypatch):
    build_dir = str(tmp_path / 'acon_mm_ext_x')
    holder = subprocess.Popen([sys.executable, '-c', HOLDER, build_dir, '3'],
                              env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        monkeypatch.setattr(cpu_ext, 'LOCK_WARN_AFTER_S', 1.0)
        with pytest.warns(UserWarning) as record:
            with cpu_ext.BuildLock(build_dir) as lock:
                pass
        holder.wait(timeout=60)
    finally:
        holder.kill()
    msg = str(record[0].message)
    assert build_dir + '.lock' in msg and f'pid {holder.pid}' in msg, msg
    assert 1.0 <= lock.waited_s < 30
    assert not osp.exists(build_dir + '.owner')  # the holder's record goes with it
