# PSPNet, dilated ResNet-50 (Swish (trainable beta)), output stride 8, SyncBN, stock mmseg
# 80k Cityscapes 512x1024 schedule; identical to the ACON-C config but for
# the activation and its ImageNet weights.
_base_ = './pspnet_r50-d8-aconc_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        acon_cfg=dict(type='SwishBeta'),
        init_cfg=dict(checkpoint='checkpoints/resnet50_swish_mm.pth')))
