"""Helpers of the models: the strict check of ``Pretrained`` checkpoints."""
from .pretrained import CONVERTER, check_pretrained_keys, pretrained_path, pretrained_spec

__all__ = ['CONVERTER', 'check_pretrained_keys', 'pretrained_path',
           'pretrained_spec']
