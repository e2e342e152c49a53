# RetinaNet, ResNet-101 (ACON-C) + FPN, stock mmdet 1x COCO schedule.
_base_ = './retinanet_r50-aconc_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet101_acon_mm.pth')))
