"""Build and load the fused ACON CPU extension (``acon_mm/ops/csrc``).

The CPU kernels are C++ sources shipped with the package, laid out as mmcv's
``mmcv/ops/csrc``::

    csrc/common/acon_constants.h    constants shared by C++ and Python (defined once)
    csrc/common/acon_vec.h          vector primitives (AVX-512 / AVX2 / SSE, exp, sigmoid)
    csrc/common/acon_kernel.h       fused ACON forward / backward drivers
    csrc/common/acon_meta_kernel.h  fused meta-ACON-C (channel switch)
    csrc/pytorch/acon_cpu.cpp       the torch binding: C++ autograd functions

They are compiled on first use with ``torch.utils.cpp_extension.load`` (C++17,
``-O3 -march=native -fopenmp``; about a minute on two cores, once) into
``$ACON_MM_CACHE_DIR`` (default ``~/.cache/acon_mm``), in a directory named by a hash
of the source files, the flags, the compiler and its version, the torch and Python
versions and the CPU's flags (see :func:`build_key`): any change to any of them builds
anew. Where ``-march=native`` does not compile, a portable flag set is tried.

Builds are safe to interrupt: :class:`BuildLock` serialises them with an OS ``flock``
that dies with its holder and clears the ``lock`` file torch leaves behind when a
builder is killed (which would otherwise make every later load wait forever); a wait
on a live holder longer than a build is logged with the holder's pid.

Because the build directory is named by that hash, a module built from other sources
is never loaded: there is no separate interface version to compare.

The constants of ``acon_constants.h`` (``SEG``, ``VECTOR_WIDTH``, ...) are attributes
of the compiled module; :func:`ext_constants` returns them. Python never repeats them.

If the extension cannot be built (no compiler, no ninja, no torch headers),
:func:`load_cpu_ext` returns ``None`` and :func:`acon_mm.ops.acon_backend` never
chooses ``'cpu'``: the pure-PyTorch fused function runs (same results and memory,
slower); the reason is in :func:`cpu_ext_error`. To run without the extension on
purpose, use the ``'torch'`` implementation (``ACON_MM_IMPL=torch`` or
:func:`acon_mm.ops.set_acon_impl`): it is then never built.
"""
import hashlib
import importlib
import logging
import os
import os.path as osp
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ['load_cpu_ext', 'cpu_ext_error', 'kernel_cache_dir', 'ext_constants',
           'build_key', 'source_files', 'BuildLock', 'import_cpp_extension', 'CSRC_DIR']

#: Root of the C++ sources (package data).
CSRC_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')
#: Translation units, relative to :data:`CSRC_DIR` (the headers are included).
_SOURCES = ('pytorch/acon_cpu.cpp', )
_INCLUDE_DIRS = ('common', )
_SUFFIXES = ('.h', '.cpp')
#: What the compiled module must provide (the functions Python calls).
_REQUIRED = ('acon_fused', 'meta_channel')

_BASE_FLAGS = ['-O3', '-std=c++17', '-fopenmp', '-fno-trapping-math', '-Wno-psabi']
# x86: let the auto-vectorised loops (the meta-ACON switch network) use full-width
# AVX-512 registers where the CPU has them (GCC's tuning often prefers 256 bits).
_X86 = platform.machine().lower() in ('x86_64', 'amd64', 'i686', 'x86')
_NATIVE = ['-march=native'] + (['-mprefer-vector-width=512'] if _X86 else [])
#: Tried in order: the first that builds is used.
_FLAG_SETS = (_BASE_FLAGS + _NATIVE, _BASE_FLAGS)

_lock = threading.Lock()
_ext = None
_tried = False
_error: Optional[str] = None


def kernel_cache_dir() -> str:
    """Directory of the compiled extension (``$ACON_MM_CACHE_DIR`` or
    ``~/.cache/acon_mm``)."""
    env = os.environ.get('ACON_MM_CACHE_DIR')
    if env:
        return env
    return osp.join(osp.expanduser('~'), '.cache', 'acon_mm')


def _writable_cache_dir() -> str:
    """:func:`kernel_cache_dir`, or a per-user temporary directory if it is not
    writable."""
    cache = kernel_cache_dir()
    try:
        os.makedirs(cache, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=cache, delete=True).close()
    except OSError:
        cache = osp.join(tempfile.gettempdir(), f'acon_mm_{os.getuid()}')
        os.makedirs(cache, exist_ok=True)
    return cache


def _cpu_signature() -> str:
    """Machine and CPU flags: the build uses ``-march=native``."""
    flags = ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    flags = line
                    break
    except OSError:
        pass
    return platform.machine() + flags


def _compiler() -> Optional[str]:
    for name in (os.environ.get('CXX'), 'g++', 'c++', 'clang++'):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, '--version'], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ''


def source_files(csrc_dir: str = CSRC_DIR) -> List[str]:
    """Every C++ source and header under ``csrc_dir``, as sorted relative paths."""
    found = []
    for root, _, files in os.walk(csrc_dir):
        for name in files:
            if name.endswith(_SUFFIXES):
                found.append(osp.relpath(osp.join(root, name), csrc_dir))
    return sorted(found)


def build_key(flags: Sequence[str], cxx: str, csrc_dir: str = CSRC_DIR,
              compiler_version: Optional[str] = None) -> str:
    """The build cache key: a hash of the source files (names and contents), the
    flags, the compiler (path and version), the torch and Python versions and the
    CPU signature.

    Args:
        flags (Sequence[str]): compiler flags.
        cxx (str): path of the C++ compiler.
        csrc_dir (str): root of the sources. Defaults to :data:`CSRC_DIR`.
        compiler_version (str, optional): ``cxx --version``; run if not given.

    Returns:
        str: 16 hex digits.
    """
    h = hashlib.sha256()
    for rel in source_files(csrc_dir):
        h.update(rel.encode() + b'\0')
        with open(osp.join(csrc_dir, rel), 'rb') as f:
            h.update(f.read() + b'\0')
    if compiler_version is None:
        compiler_version = _compiler_version(cxx)
    h.update('\0'.join([' '.join(flags), cxx, compiler_version, torch.__version__,
                        sys.version, _cpu_signature()]).encode())
    return h.hexdigest()[:16]


class _DropCudaHomeProbe(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith('No CUDA runtime is found')


def import_cpp_extension():
    """``torch.utils.cpp_extension``, imported without its CUDA probe's warning.

    Importing it looks for a CUDA toolkit and, where it finds one (``nvcc`` on the
    ``PATH``, ``/usr/local/cuda``) on a machine without a GPU, logs ``No CUDA runtime
    is found, using CUDA_HOME=...``: on a CPU run that reads like a CUDA fault, and the
    CPU build never uses CUDA. That one record is dropped during the import (torch
    logs it only then); everything else torch logs is kept. ``import acon_mm`` imports
    it this way, so that mmengine's environment report (which imports it too) stays
    quiet as well.

    Returns:
        module: ``torch.utils.cpp_extension``.
    """
    name = 'torch.utils.cpp_extension'
    if name not in sys.modules:
        logger, drop = logging.getLogger(name), _DropCudaHomeProbe()
        logger.addFilter(drop)
        try:
            importlib.import_module(name)
        finally:
            logger.removeFilter(drop)
    return sys.modules[name]


#: Seconds a build lock may be held by another live process before the wait is logged
#: (a build takes about 1.5 min on 2 cores), and then every this many seconds again.
LOCK_WARN_AFTER_S = 300.0
_LOCK_POLL_S = 0.5


def _lock_owner(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip() or 'unknown'
    except OSError:
        return 'unknown'


class BuildLock:
    """An exclusive, interrupt-safe lock on one build directory.

    ``torch.utils.cpp_extension.load`` guards its build directory with a ``lock``
    file that a killed builder never removes (``FileBaton``: ``O_CREAT | O_EXCL``;
    every later ``load`` then waits forever, pytorch/pytorch#189245). acon-mm takes
    this lock first: an OS ``flock`` on ``<build_dir>.lock``, which the kernel releases
    when its holder dies however it dies (SIGKILL, Ctrl-C, the OOM killer,
    ``scancel``). Holding it, no other acon-mm process can be building there, so a
    torch ``lock`` file found inside is a dead builder's and is removed before
    ``load`` runs. Two processes that start on an empty cache (a 2-rank DDP run,
    ``study --jobs 2``) build once: the second waits here, then finds the build done
    (ninja rebuilds nothing; it does relink or recompile what a killed build left
    unfinished, since an interrupted step is never recorded in its log).

    A wait longer than :data:`LOCK_WARN_AFTER_S` is logged with the lock's path,
    its holder (pid, host, since when) and the time waited, and again as long as it
    lasts; the holder is alive (a dead one holds no ``flock``).

    Args:
        build_dir (str): the build directory (created if missing).
    """

    def __init__(self, build_dir: str):
        self.build_dir = build_dir
        self.path = build_dir.rstrip(os.sep) + '.lock'
        self.owner_path = build_dir.rstrip(os.sep) + '.owner'
        self._fd = None
        #: Seconds spent waiting for another process in the last ``__enter__``.
        self.waited_s = 0.0

    def __enter__(self) -> 'BuildLock':
        try:
            import fcntl
        except ImportError:  # no flock (Windows): torch's own lock file only
            os.makedirs(self.build_dir, exist_ok=True)
            return self
        os.makedirs(osp.dirname(self.path) or '.', exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        start = time.monotonic()
        next_warn = start + LOCK_WARN_AFTER_S
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                now = time.monotonic()
                if now >= next_warn:
                    warnings.warn(
                        f'acon_mm: waiting {now - start:.0f} s for the kernel build lock '
                        f'{self.path}, held by {_lock_owner(self.owner_path)} (a live '
                        'process: a dead one holds no lock). If that process is not '
                        'building (a stopped job, a hung compiler), stop it or set '
                        'ACON_MM_CACHE_DIR to another directory; see docs/installation.md, '
                        '"Troubleshooting".', stacklevel=3)
                    next_warn = now + LOCK_WARN_AFTER_S
                time.sleep(_LOCK_POLL_S)
        except BaseException:
            os.close(fd)
            raise
        self.waited_s = time.monotonic() - start
        self._fd = fd
        try:
            with open(self.owner_path, 'w') as f:
                f.write(f'pid {os.getpid()} on {platform.node()} since '
                        f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n')
        except OSError:
            pass
        os.makedirs(self.build_dir, exist_ok=True)
        stale = osp.join(self.build_dir, 'lock')  # torch's FileBaton, left by a dead builder
        if osp.exists(stale):
            os.remove(stale)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                os.remove(self.owner_path)
            except OSError:
                pass
            os.close(self._fd)  # releases the flock
            self._fd = None


def _build():
    load = import_cpp_extension().load
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError('no C++ compiler found (tried $CXX, g++, c++, clang++)')
    cache, version = _writable_cache_dir(), _compiler_version(cxx)
    errors = []
    old_cxx = os.environ.get('CXX')
    os.environ.setdefault('CXX', cxx)
    try:
        for flags in _FLAG_SETS:
            name = f'acon_mm_ext_{build_key(flags, cxx, compiler_version=version)}'
            build_dir = osp.join(cache, name)
            try:
                with BuildLock(build_dir):
                    ext = load(name, sources=[osp.join(CSRC_DIR, s) for s in _SOURCES],
                               extra_include_paths=[osp.join(CSRC_DIR, d)
                                                    for d in _INCLUDE_DIRS],
                               extra_cflags=list(flags), extra_ldflags=['-fopenmp'],
                               build_directory=build_dir, verbose=False)
            except Exception as e:  # noqa: BLE001  (a failed build: next flag set)
                errors.append(f'{" ".join(flags)}: {type(e).__name__}: {str(e)[-600:]}')
                continue
            missing = [a for a in _REQUIRED if not hasattr(ext, a)]
            if missing:
                errors.append(f'{name} lacks {missing}')
                continue
            return ext
    finally:
        if old_cxx is None:
            os.environ.pop('CXX', None)
    raise RuntimeError('; '.join(errors))


def load_cpu_ext(warn: bool = True):
    """The compiled C++ extension, building it on first use.

    Args:
        warn (bool): warn once if it cannot be built. Defaults to True.

    Returns:
        module | None: the extension (``acon_fused``, ``meta_channel`` and the
        constants of ``acon_constants.h``), or ``None`` where it cannot be built
        (see :func:`cpu_ext_error`).
    """
    global _ext, _tried, _error
    if _tried:
        return _ext
    with _lock:
        if _tried:
            return _ext
        try:
            _ext = _build()
        except Exception as e:  # noqa: BLE001  (any build failure: fall back)
            _error = f'{type(e).__name__}: {str(e)[-1200:]}'
        _tried = True
        if _ext is None and warn:
            warnings.warn('acon_mm: the fused ACON C++ extension could not be built; the '
                          'pure-PyTorch fused function is used (same results and memory, '
                          f'slower). Reason: {_error}')
        return _ext


def cpu_ext_error() -> Optional[str]:
    """Why :func:`load_cpu_ext` returned ``None`` (``None`` if it did not)."""
    return _error


def ext_constants() -> Optional[Dict[str, int]]:
    """The constants of ``csrc/common/acon_constants.h`` as the built extension
    exports them (``SEG``, ``VECTOR_WIDTH``, ...), or ``None``
    without the extension."""
    ext = load_cpu_ext(warn=False)
    if ext is None:
        return None
    return {k: getattr(ext, k) for k in dir(ext) if k.isupper()}
