# ImageNet-1k, ShuffleNetV2 1.0x with ReLU (baseline); identical to
# shufflenetv2-1.0x-aconc_8xb128_in1k.py (the official ACON recipe) but for the
# activation.
_base_ = './shufflenetv2-1.0x-aconc_8xb128_in1k.py'

model = dict(backbone=dict(acon_cfg=dict(type='ReLU')))
