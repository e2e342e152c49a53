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

The constants of ``acon_constants.h`` (``ABI_VERSION``, ``SEG``, ...) are attributes
of the compiled module; :func:`ext_constants` returns them. Python never repeats them.

If the extension cannot be built (no compiler, no ninja, no torch headers), or with
``ACON_MM_DISABLE_EXT=1`` (``ACON_MM_DISABLE_CPU_KERNEL=1`` is an alias),
:func:`load_cpu_ext` returns ``None`` and :mod:`acon_mm.ops.acon_func` uses the
pure-PyTorch fused function (same results and memory, slower); the reason is in
:func:`cpu_ext_error`.
"""
import hashlib
import os
import os.path as osp
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ['load_cpu_ext', 'cpu_ext_error', 'kernel_cache_dir', 'ext_constants',
           'build_key', 'source_files', 'CSRC_DIR']

#: Root of the C++ sources (package data).
CSRC_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')
#: Translation units, relative to :data:`CSRC_DIR` (the headers are included).
_SOURCES = ('pytorch/acon_cpu.cpp', )
_INCLUDE_DIRS = ('common', )
_SUFFIXES = ('.h', '.cpp')
#: What the compiled module must provide.
_REQUIRED = ('acon_fused', 'meta_channel', 'ABI_VERSION', 'SEG')
_DISABLE_VARS = ('ACON_MM_DISABLE_EXT', 'ACON_MM_DISABLE_CPU_KERNEL')

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


def _build():
    from torch.utils.cpp_extension import load
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
            os.makedirs(build_dir, exist_ok=True)
            try:
                ext = load(name, sources=[osp.join(CSRC_DIR, s) for s in _SOURCES],
                           extra_include_paths=[osp.join(CSRC_DIR, d) for d in _INCLUDE_DIRS],
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
        or is disabled (see :func:`cpu_ext_error`).
    """
    global _ext, _tried, _error
    if _tried:
        return _ext
    with _lock:
        if _tried:
            return _ext
        disabled = [v for v in _DISABLE_VARS if os.environ.get(v, '0') not in ('', '0')]
        if disabled:
            _error = f'disabled by {disabled[0]}'
        else:
            try:
                _ext = _build()
            except Exception as e:  # noqa: BLE001  (any build failure: fall back)
                _error = f'{type(e).__name__}: {str(e)[-1200:]}'
        _tried = True
        if _ext is None and warn and not disabled:
            warnings.warn('acon_mm: the fused ACON C++ extension could not be built; the '
                          'pure-PyTorch fused function is used (same results and memory, '
                          f'slower). Reason: {_error}')
        return _ext


def cpu_ext_error() -> Optional[str]:
    """Why :func:`load_cpu_ext` returned ``None`` (``None`` if it did not)."""
    return _error


def ext_constants() -> Optional[Dict[str, int]]:
    """The constants of ``csrc/common/acon_constants.h`` as the built extension
    exports them (``ABI_VERSION``, ``SEG``, ``VECTOR_WIDTH``, ...), or ``None``
    without the extension."""
    ext = load_cpu_ext(warn=False)
    if ext is None:
        return None
    return {k: getattr(ext, k) for k in dir(ext) if k.isupper()}
