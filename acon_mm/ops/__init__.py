"""The fused ACON op: the functional :func:`acon`, its implementations and their dispatch.

* :mod:`.dispatch`: the implementation setting (:func:`set_acon_impl`, :func:`acon_impl`,
  ``ACON_MM_IMPL``) and :func:`acon_backend`, the one choice of the code that runs;
* :mod:`.acon_func`: :func:`acon`, :func:`acon_naive`, :class:`AconFunction`;
* :mod:`.cpu_ext` (C++ sources in ``csrc/``) and :mod:`.triton` (CUDA, optional): the
  compiled kernels; :mod:`.layout`: how the Triton kernels see their arguments;
* :mod:`.meta_func`: meta-ACON-C's channel switch fused with ACON (CPU);
* :mod:`.mean`: :func:`spatial_mean`.
"""
from .acon_func import AconFunction, acon, acon_naive
from .cpu_ext import cpu_ext_error, import_cpp_extension, kernel_cache_dir, load_cpu_ext
from .dispatch import ACON_IMPLS, acon_backend, acon_impl, get_acon_impl, set_acon_impl
from .mean import spatial_mean

# Before mmengine's environment report (Runner start-up) imports it and, on a CPU
# machine that has a CUDA toolkit, logs "No CUDA runtime is found, using CUDA_HOME=...".
import_cpp_extension()

__all__ = [
    'acon', 'acon_naive', 'AconFunction', 'set_acon_impl', 'get_acon_impl', 'acon_impl',
    'acon_backend', 'ACON_IMPLS', 'kernel_cache_dir', 'spatial_mean', 'load_cpu_ext',
    'cpu_ext_error'
]
