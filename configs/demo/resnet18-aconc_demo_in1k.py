# Demo pretraining: ResNet-18 with ACON-C classifying the generated
# ImageNet-layout shapes set (tools/misc/make_demo_data.py --only imagenet ->
# data/demo/imagenet: train/<class>/*.JPEG, val/<class>/*.JPEG; classes
# circle, square, triangle). A few CPU minutes. It inherits the official ACON
# ImageNet recipe (configs/imagenet/): raw BGR 0-255 input, the official
# weight-decay rule, SGD with linear decay to 0, RandomResizedCrop +
# ColorJitter + flip; only sizes, schedule and data are the demo's.
# Its checkpoint initialises configs/demo/retinanet_r18-aconc_fpn_pretrained_demo.py
# (prefix='backbone.'); `python tools/demo.py --pretrain` runs the chain.
_base_ = '../imagenet/resnet50-aconc_8xb32_in1k.py'

data_root = 'data/demo/imagenet/'
classes = ('circle', 'square', 'triangle')
img_size = 64

data_preprocessor = dict(num_classes=3)
model = dict(
    data_preprocessor=dict(num_classes=3),
    backbone=dict(depth=18),
    head=dict(num_classes=3, in_channels=512, topk=(1, )))

train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.5, 1.0),
        backend='pillow',
        interpolation='bilinear'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='OfficialResizeShortSide', size=img_size),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        ann_file='',
        data_prefix='train',
        metainfo=dict(classes=classes),
        num_classes=3,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        ann_file='',
        data_prefix='val',
        metainfo=dict(classes=classes),
        num_classes=3,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_iters = 200
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(
        type='LinearLR',
        start_factor=1.0,
        end_factor=0.0,
        by_epoch=False,
        begin=20,
        end=max_iters + 1)
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=32)
