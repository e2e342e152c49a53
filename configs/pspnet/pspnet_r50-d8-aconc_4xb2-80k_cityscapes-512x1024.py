# PSPNet, dilated ResNet-50 (ACON-C), output stride 8, SyncBN, stock mmseg
# 80k Cityscapes 512x1024 schedule (4 GPUs x 2 images).
# Backbone: acon-mm ResNetACON, dilations (1, 1, 2, 4) with contract_dilation
# as mmseg's ResNetV1c, but with the official ACON ImageNet stem (7x7 conv, no
# deep stem) and caffe style, so that the converted official weights load;
# only `acon_cfg` differs between the relu, swish, aconc and metaacon configs.
# Without CUDA, tools/train.py turns SyncBN into BN (with a warning).
# Input: raw BGR 0-255 pixels as the official networks (ToBGRTensor: no mean,
# no std); mmcv loads BGR, so bgr_to_rgb=False. The converted checkpoints
# record this (meta['input_convention']) and tools/train.py refuses a
# contradicting data_preprocessor.
# Weight decay: the official rule (AconOptimWrapperConstructor).
# Default weights: the official ACON-C ResNet-50, converted with
#     python tools/model_converters/acon_official_to_mm.py \
#         OFFICIAL.pth checkpoints/resnet50_acon_mm.pth
# To pretrain instead: python tools/train.py configs/imagenet/resnet50-aconc_8xb32_in1k.py
# and --cfg-options
#     model.backbone.init_cfg.checkpoint=work_dirs/resnet50-aconc_8xb32_in1k/iter_600000.pth
#     model.backbone.init_cfg.prefix=backbone.
_base_ = 'mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        bgr_to_rgb=False),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ResNetACON',
        depth=50,
        acon_cfg=dict(type='AconC'),
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        contract_dilation=True,
        deep_stem=False,
        norm_cfg=norm_cfg,
        norm_eval=False,
        # ImageNet weights written by
        # tools/model_converters/acon_official_to_mm.py (see README, Configs).
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet50_acon_mm.pth')))

# the stock SGD (lr 0.01, momentum 0.9, weight_decay 5e-4) under the official
# ACON weight-decay rule
optim_wrapper = dict(constructor='AconOptimWrapperConstructor')

# kill-safe checkpoints that resume exactly (write aside and rename, point,
# then prune; RNG states saved): acon-mm's hook, selected here by name
default_hooks = dict(checkpoint=dict(type='AconCheckpointHook'))
