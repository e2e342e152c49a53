# RetinaNet, ResNet-50 (meta-ACON-C (channel-wise switch)) + FPN, stock mmdet 1x COCO schedule.
# Backbone: acon-mm ResNetACON; its defaults are the official ACON ImageNet
# network (stride on the first 1x1 conv, biased convs), so converted official
# weights load as they are. Only `acon_cfg` differs between the relu, swish,
# aconc and metaacon configs.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetACON',
        depth=50,
        acon_cfg=dict(type='MetaAconC'),
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        # ImageNet weights written by
        # tools/model_converters/acon_official_to_mm.py (see README, Configs).
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet50_metaacon_mm.pth')))
