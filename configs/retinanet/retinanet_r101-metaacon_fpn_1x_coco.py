# RetinaNet, ResNet-101 (meta-ACON-C (channel-wise switch)) + FPN, stock mmdet 1x COCO schedule.
_base_ = './retinanet_r50-metaacon_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet101_metaacon_mm.pth')))
