"""Helpers of the models: the strict checks of ``Pretrained`` checkpoints and of
trained checkpoints loaded for testing or analysis."""
from .checkpoint_fit import CheckpointMismatchError, check_checkpoint_fits
from .pretrained import CONVERTER, check_pretrained_keys, pretrained_path, pretrained_spec

__all__ = ['CONVERTER', 'check_pretrained_keys', 'pretrained_path',
           'pretrained_spec', 'CheckpointMismatchError', 'check_checkpoint_fits']
