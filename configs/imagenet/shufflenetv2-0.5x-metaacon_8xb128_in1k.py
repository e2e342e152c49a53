# ImageNet-1k, ShuffleNetV2 0.5x with meta-ACON-C (channel switch, r=8 as the official 0.5x);
# identical to shufflenetv2-0.5x-aconc_8xb128_in1k.py (the official ACON recipe) but for the
# activation.
_base_ = './shufflenetv2-0.5x-aconc_8xb128_in1k.py'

model = dict(backbone=dict(acon_cfg=dict(type='MetaAconC', r=8)))
