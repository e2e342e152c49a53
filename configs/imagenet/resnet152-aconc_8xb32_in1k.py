# ImageNet-1k, ResNet-152 with ACON-C, the official recipe (see
# resnet50-aconc_8xb32_in1k.py for the source of each number).
_base_ = './resnet50-aconc_8xb32_in1k.py'

model = dict(backbone=dict(depth=152))
