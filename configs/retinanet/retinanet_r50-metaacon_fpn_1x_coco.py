# RetinaNet, ResNet-50 (meta-ACON-C (channel-wise switch)) + FPN, stock mmdet 1x COCO schedule; identical to
# the ACON-C config but for the activation and its ImageNet weights.
_base_ = './retinanet_r50-aconc_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        acon_cfg=dict(type='MetaAconC'),
        init_cfg=dict(checkpoint='checkpoints/resnet50_metaacon_mm.pth')))
