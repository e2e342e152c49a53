# ImageNet-1k, ShuffleNetV2 2.0x with ACON-C, the official recipe (see
# shufflenetv2-1.0x-aconc_8xb128_in1k.py for the source of each number).
_base_ = './shufflenetv2-1.0x-aconc_8xb128_in1k.py'

model = dict(
    backbone=dict(widen_factor=2.0),
    head=dict(in_channels=2048))
