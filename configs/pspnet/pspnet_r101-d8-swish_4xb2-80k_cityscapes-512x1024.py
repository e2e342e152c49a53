# PSPNet, dilated ResNet-101 (Swish (trainable beta)), output stride 8, SyncBN, stock mmseg
# 80k Cityscapes 512x1024 schedule.
_base_ = './pspnet_r50-d8-swish_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet101_swish_mm.pth')))
