# RetinaNet, ResNet-50 (Swish (trainable beta)) + FPN, stock mmdet 1x COCO schedule; identical to
# the ACON-C config but for the activation and its ImageNet weights.
# There are no official Swish weights in the ACON layout: the backbone
# weights come from ImageNet pretraining with the official recipe and input
# convention, written by
#     python tools/train.py configs/imagenet/resnet50-swish_8xb32_in1k.py
# (the classifier checkpoint is loaded with prefix='backbone.').
_base_ = './retinanet_r50-aconc_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        acon_cfg=dict(type='SwishBeta'),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/resnet50-swish_8xb32_in1k/iter_600000.pth',
            prefix='backbone.')))
