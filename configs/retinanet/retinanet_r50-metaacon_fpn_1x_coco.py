# RetinaNet, ResNet-50 (meta-ACON-C (channel-wise switch)) + FPN, stock mmdet 1x COCO schedule;
# identical to the ACON-C config but for the activation and its ImageNet weights.
# Default weights: the official meta-ACON-C ResNet-50, converted with
#     python tools/model_converters/acon_official_to_mm.py \
#         OFFICIAL.pth checkpoints/resnet50_metaacon_mm.pth
# To pretrain instead: python tools/train.py configs/imagenet/resnet50-metaacon_8xb32_in1k.py
# and --cfg-options
#     model.backbone.init_cfg.checkpoint=work_dirs/resnet50-metaacon_8xb32_in1k/iter_600000.pth
#     model.backbone.init_cfg.prefix=backbone.
_base_ = './retinanet_r50-aconc_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        acon_cfg=dict(type='MetaAconC'),
        init_cfg=dict(checkpoint='checkpoints/resnet50_metaacon_mm.pth')))
