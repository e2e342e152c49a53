"""Optimiser-wrapper constructors, registered in mmengine's root registry."""
from .acon_optim_wrapper_constructor import AconOptimWrapperConstructor, official_decay

__all__ = ['AconOptimWrapperConstructor', 'official_decay']
