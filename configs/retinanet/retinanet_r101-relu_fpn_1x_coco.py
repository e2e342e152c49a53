# RetinaNet, ResNet-101 (ReLU baseline) + FPN, stock mmdet 1x COCO schedule.
# Backbone weights written by
#     python tools/train.py configs/imagenet/resnet101-relu_8xb32_in1k.py
_base_ = './retinanet_r50-relu_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/resnet101-relu_8xb32_in1k/iter_600000.pth',
            prefix='backbone.')))
