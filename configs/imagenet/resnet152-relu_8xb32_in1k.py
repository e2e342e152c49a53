# ImageNet-1k, ResNet-152 with the ReLU baseline; identical to
# resnet152-aconc_8xb32_in1k.py (the official ACON recipe) but for the activation.
_base_ = './resnet152-aconc_8xb32_in1k.py'

model = dict(backbone=dict(acon_cfg=dict(type='ReLU')))
