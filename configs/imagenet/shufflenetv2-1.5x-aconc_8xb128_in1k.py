# ImageNet-1k, ShuffleNetV2 1.5x with ACON-C, the official recipe (see
# shufflenetv2-1.0x-aconc_8xb128_in1k.py for the source of each number).
_base_ = './shufflenetv2-1.0x-aconc_8xb128_in1k.py'

model = dict(
    backbone=dict(widen_factor=1.5))
