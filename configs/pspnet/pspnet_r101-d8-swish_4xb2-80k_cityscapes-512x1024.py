# PSPNet, dilated ResNet-101 (Swish (trainable beta)), output stride 8, SyncBN, stock mmseg
# 80k Cityscapes 512x1024 schedule.
# Backbone weights written by
#     python tools/train.py configs/imagenet/resnet101-swish_8xb32_in1k.py
_base_ = './pspnet_r50-d8-swish_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/resnet101-swish_8xb32_in1k/iter_600000.pth',
            prefix='backbone.')))
