# PSPNet, dilated ResNet-101 (meta-ACON-C (channel-wise switch)), output stride 8, SyncBN, stock
# mmseg 80k Cityscapes 512x1024 schedule.
# Default weights: the official meta-ACON-C ResNet-101, converted with
#     python tools/model_converters/acon_official_to_mm.py \
#         OFFICIAL.pth checkpoints/resnet101_metaacon_mm.pth
# To pretrain instead: python tools/train.py configs/imagenet/resnet101-metaacon_8xb32_in1k.py
# and --cfg-options
#     model.backbone.init_cfg.checkpoint=work_dirs/resnet101-metaacon_8xb32_in1k/iter_600000.pth
#     model.backbone.init_cfg.prefix=backbone.
_base_ = './pspnet_r50-d8-metaacon_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet101_metaacon_mm.pth')))
