# RetinaNet, ResNet-50 (ReLU baseline from torchvision's ImageNet weights) + FPN, stock mmdet 1x
# COCO schedule: the ReLU comparison to retinanet_r50-{aconc,metaacon}_fpn_1x_coco.py without a
# 600k-iteration ImageNet run of our own.
# ResNetACON with acon_cfg=dict(type='ReLU'), conv_bias=False and style='pytorch' *is* mmdet's
# ResNet-50 (same keys, same features; tests/test_models/test_torchvision_baseline.py), so
# torchvision's ReLU weights load into it, every tensor.
# What differs from the ACON configs beyond the activation (say so next to any comparison):
# torchvision's ImageNet recipe (90 epochs, its own augmentation) instead of the official ACON one;
# no conv biases; the stride on the 3x3 conv (style='pytorch'); and its input: RGB with the ImageNet
# mean/std (the stock mmdet preprocessing), not raw BGR 0-255.
# The weights: torchvision://resnet50 (mmengine downloads
# https://download.pytorch.org/models/resnet50-0676ba61.pth into <torch hub dir>/checkpoints/).
# tools/train.py refuses to start a download unless --allow-download is given, or the file is
# already in that cache (copy it there on a machine without network).
_base_ = './retinanet_r50-aconc_fpn_1x_coco.py'

model = dict(
    # torchvision's input convention (the stock mmdet one)
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        acon_cfg=dict(type='ReLU'),
        conv_bias=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')))
