# PSPNet, dilated ResNet-50 (meta-ACON-C (channel-wise switch)), output stride 8, SyncBN, stock
# mmseg 80k Cityscapes 512x1024 schedule; identical to the ACON-C config but for the activation and
# its ImageNet weights.
# Default weights: the official meta-ACON-C ResNet-50, converted with
#     python tools/model_converters/acon_official_to_mm.py \
#         OFFICIAL.pth checkpoints/resnet50_metaacon_mm.pth
# To pretrain instead: python tools/train.py configs/imagenet/resnet50-metaacon_8xb32_in1k.py
# and --cfg-options
#     model.backbone.init_cfg.checkpoint=work_dirs/resnet50-metaacon_8xb32_in1k/iter_600000.pth
#     model.backbone.init_cfg.prefix=backbone.
_base_ = './pspnet_r50-d8-aconc_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        # The switch generator's BatchNorms follow the backbone's norm_cfg
        # (SyncBN): they normalise one pooled value per image and channel,
        # i.e. 2 values per GPU with 2 crops/GPU, far too few for batch
        # statistics; synchronised they pool all 8 crops of the 4 GPUs.
        # AconSwitchSyncBN is SyncBN that still trains with a single image
        # and runs per process on CPU (acon_mm/models/layers/switch_norm.py).
        acon_cfg=dict(
            type='MetaAconC',
            norm_cfg=dict(type='AconSwitchSyncBN', requires_grad=True)),
        init_cfg=dict(checkpoint='checkpoints/resnet50_metaacon_mm.pth')))
