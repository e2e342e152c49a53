# PSPNet, dilated ResNet-50 (ReLU baseline), output stride 8, SyncBN, stock mmseg
# 80k Cityscapes 512x1024 schedule; identical to the ACON-C config but for
# the activation and its ImageNet weights.
# There are no official ReLU weights in the ACON layout: the backbone
# weights come from ImageNet pretraining with the official recipe and input
# convention, written by
#     python tools/train.py configs/imagenet/resnet50-relu_8xb32_in1k.py
# (the classifier checkpoint is loaded with prefix='backbone.').
_base_ = './pspnet_r50-d8-aconc_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        acon_cfg=dict(type='ReLU'),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/resnet50-relu_8xb32_in1k/iter_600000.pth',
            prefix='backbone.')))
