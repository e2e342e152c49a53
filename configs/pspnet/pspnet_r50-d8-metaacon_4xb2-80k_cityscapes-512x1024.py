# PSPNet, dilated ResNet-50 (meta-ACON-C (channel-wise switch)), output stride 8, SyncBN, stock mmseg
# 80k Cityscapes 512x1024 schedule (4 GPUs x 2 images).
# Backbone: acon-mm ResNetACON, dilations (1, 1, 2, 4) with contract_dilation
# as mmseg's ResNetV1c, but with the official ACON ImageNet stem (7x7 conv, no
# deep stem) and caffe style, so that the converted official weights load;
# only `acon_cfg` differs between the relu, swish, aconc and metaacon configs.
# Without CUDA, tools/train.py turns SyncBN into BN (with a warning).
_base_ = 'mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ResNetACON',
        depth=50,
        acon_cfg=dict(type='MetaAconC'),
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
            checkpoint='checkpoints/resnet50_metaacon_mm.pth')))
