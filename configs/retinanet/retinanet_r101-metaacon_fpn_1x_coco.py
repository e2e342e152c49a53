# RetinaNet, ResNet-101 (meta-ACON-C (channel-wise switch)) + FPN, stock mmdet 1x COCO schedule.
# Default weights: the official meta-ACON-C ResNet-101, converted with
#     python tools/model_converters/acon_official_to_mm.py \
#         OFFICIAL.pth checkpoints/resnet101_metaacon_mm.pth
# To pretrain instead: python tools/train.py configs/imagenet/resnet101-metaacon_8xb32_in1k.py
# and --cfg-options
#     model.backbone.init_cfg.checkpoint=work_dirs/resnet101-metaacon_8xb32_in1k/iter_600000.pth
#     model.backbone.init_cfg.prefix=backbone.
_base_ = './retinanet_r50-metaacon_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet101_metaacon_mm.pth')))
