"""Helpers of the models: the strict check of ``Pretrained`` checkpoints."""
from .pretrained import CONVERTER, check_pretrained_keys, pretrained_path

__all__ = ['CONVERTER', 'check_pretrained_keys', 'pretrained_path']
