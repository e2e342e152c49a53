# ImageNet-1k, ResNet-101 with the ReLU baseline; identical to
# resnet101-aconc_8xb32_in1k.py (the official ACON recipe) but for the activation.
_base_ = './resnet101-aconc_8xb32_in1k.py'

model = dict(backbone=dict(acon_cfg=dict(type='ReLU')))
