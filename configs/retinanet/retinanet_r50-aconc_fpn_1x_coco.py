# RetinaNet, ResNet-50 (ACON-C) + FPN, stock mmdet 1x COCO schedule.
# Backbone: acon-mm ResNetACON; its defaults are the official ACON ImageNet
# network (stride on the first 1x1 conv, biased convs), so converted official
# weights load as they are. Only `acon_cfg` differs between the relu, swish,
# aconc and metaacon configs (data preprocessing, optimiser rule and schedule
# are shared through inheritance).
#
# Input: the official ACON networks take raw BGR 0-255 pixels (their
# ToBGRTensor: no mean, no std); mmcv loads images BGR, so bgr_to_rgb=False
# keeps BGR. The converted checkpoints record this convention
# (meta['input_convention']) and tools/train.py refuses a data_preprocessor
# that contradicts it. The ReLU/Swish ImageNet configs (configs/imagenet/)
# use the same convention.
# Weight decay: the official rule (AconOptimWrapperConstructor): only conv /
# linear weights decay; ACON's p1, p2, beta, biases and norms do not.
# Default weights: the official ACON-C ResNet-50, converted with
#     python tools/model_converters/acon_official_to_mm.py \
#         OFFICIAL.pth checkpoints/resnet50_acon_mm.pth
# To pretrain instead: python tools/train.py configs/imagenet/resnet50-aconc_8xb32_in1k.py
# and --cfg-options
#     model.backbone.init_cfg.checkpoint=work_dirs/resnet50-aconc_8xb32_in1k/iter_600000.pth
#     model.backbone.init_cfg.prefix=backbone.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        bgr_to_rgb=False,
        pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='ResNetACON',
        depth=50,
        acon_cfg=dict(type='AconC'),
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        # ImageNet weights written by
        # tools/model_converters/acon_official_to_mm.py (see README, Configs).
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet50_acon_mm.pth')))

# the stock SGD (lr 0.01, momentum 0.9, weight_decay 1e-4) under the official
# ACON weight-decay rule
optim_wrapper = dict(constructor='AconOptimWrapperConstructor')

# ValidatedCocoDataset: CocoDataset that names bad annotations, and a data set
# that is empty after filtering by metainfo classes (file, its categories,
# the config's classes)
train_dataloader = dict(dataset=dict(type='ValidatedCocoDataset'))
val_dataloader = dict(dataset=dict(type='ValidatedCocoDataset'))
test_dataloader = dict(dataset=dict(type='ValidatedCocoDataset'))

# kill-safe checkpoints that resume exactly (write aside and rename, point,
# then prune; RNG states saved): acon-mm's hook, selected here by name
default_hooks = dict(checkpoint=dict(type='AconCheckpointHook'))
