from .acon_func import acon, acon_naive

__all__ = ['acon', 'acon_naive']
