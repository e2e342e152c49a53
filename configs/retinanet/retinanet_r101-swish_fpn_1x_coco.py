# RetinaNet, ResNet-101 (Swish (trainable beta)) + FPN, stock mmdet 1x COCO schedule.
_base_ = './retinanet_r50-swish_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet101_swish_mm.pth')))
