# ImageNet-1k classification, ResNet-50 with ACON-C, the official ACON recipe.
# The base of the ResNet family: resnet{50,101,152}-{relu,swish,aconc,metaacon}
# inherit it and change the depth and/or the activation only, so the ReLU and
# Swish baselines are pretrained exactly as the published ACON networks were.
# Sources of the numbers ("official" = the authors' code, github.com/nmaac/acon,
# ACON/ResNet_ACON/train.py and ACON/ShuffleNetV2_ACON/utils.py; "paper" = Ma
# et al., CVPR 2021, the ImageNet training details):
#   input         raw BGR 0-255, no mean/std (official: ToBGRTensor)
#   train aug     RandomResizedCrop 224, ColorJitter(0.4, 0.4, 0.4),
#                 horizontal flip 0.5 (official: train transforms)
#   eval          short side 256 (OpenCV INTER_LINEAR on the BGR array),
#                 center crop 224 (official: OpencvResize, val transforms)
#   batch         256 = 8 GPUs x 32 (official: --batch-size; paper)
#   schedule      600,000 iterations, lr 0.1 decaying linearly per iteration
#                 to 0 (official: --total-iters,
#                 --learning-rate, LambdaLR)
#   optimiser     SGD, momentum 0.9, weight decay 1e-4 on conv/linear weights
#                 only (official: --weight-decay, get_parameters) ->
#                 AconOptimWrapperConstructor
#   loss          cross entropy, no label smoothing (official: CrossEntropyLabelSmooth(1000, 0.0))
# Ours (not in the official recipe): validation every 20k iterations, a
# checkpoint every 20k iterations (the last one is iter_600000.pth, which the
# transfer configs load with prefix='backbone.').
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

# raw BGR 0-255 (mmcv decodes BGR; to_rgb=False keeps it), as the official
# networks and the converted official checkpoints
data_preprocessor = dict(
    type='ClsDataPreprocessor',
    num_classes=1000,
    mean=[0.0, 0.0, 0.0],
    std=[1.0, 1.0, 1.0],
    to_rgb=False)

model = dict(
    type='ImageClassifier',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNetACON',
        depth=50,
        acon_cfg=dict(type='AconC'),
        out_indices=(3, ),
        norm_cfg=dict(type='BN', requires_grad=True)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))

dataset_type = 'ValidatedImageNet'  # ImageNet layout, names bad data
data_root = 'data/imagenet/'
# PIL decodes as the official code (mmcv then gives BGR)
train_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        backend='pillow',
        interpolation='bilinear'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='OfficialResizeShortSide', size=256),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='meta/train.txt',
        data_prefix='train',
        num_classes=1000,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='meta/val.txt',
        data_prefix='val',
        num_classes=1000,
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_iters = 600000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=20000)
val_cfg = dict()
test_cfg = dict()

optim_wrapper = dict(
    constructor='AconOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
# lr(t) = 0.1 * (1 - t / max_iters), stepped every iteration (mmengine's
# LinearLR reaches end_factor at step end - begin - 1, hence max_iters + 1)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1.0,
        end_factor=0.0,
        by_epoch=False,
        begin=0,
        end=max_iters + 1)
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(
        type='AconCheckpointHook',  # acon-mm's kill-safe hook
        by_epoch=False,
        interval=20000,
        max_keep_ckpts=3,
        save_last=True))
log_processor = dict(by_epoch=False)
# the learning rate is for 8 GPUs x 32 images
auto_scale_lr = dict(base_batch_size=256)
