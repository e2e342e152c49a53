from .acon_func import (ACON_IMPLS, AconFunction, acon, acon_backend, acon_impl,
                        acon_naive, get_acon_impl, set_acon_impl)
from .cpu_ext import cpu_ext_error, kernel_cache_dir, load_cpu_ext
from .mean import spatial_mean

__all__ = [
    'acon', 'acon_naive', 'AconFunction', 'set_acon_impl', 'get_acon_impl', 'acon_impl',
    'acon_backend', 'ACON_IMPLS', 'kernel_cache_dir', 'spatial_mean', 'load_cpu_ext',
    'cpu_ext_error'
]
