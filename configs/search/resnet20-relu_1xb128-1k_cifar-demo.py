# The activation search's child network (issue 22): He et al.'s CIFAR ResNet-20
# (ResNetCIFARACON: 16/32/64 channels, 3 x 3 basic blocks, every activation the
# candidate's) classifying 32x32 images, trained by the toolkit's own stack.
# The search replaces acon_cfg per candidate
# (model.backbone.acon_cfg=dict(type='SearchedActivation', expr=...)); ReLU here is
# the control. Data: the generated CIFAR-format set (make_demo_data.py --only cifar
# -> data/demo/cifar) or the real CIFAR-10 (--cfg-options data_root=..., either the
# python or the binary version; ValidatedCIFAR10 never unpickles code).
# Schedule sized for a CPU proxy: 1k iterations of batch 128, SGD 0.1 with linear
# decay (the paper: 10k steps; its preset is still to come). Time per child on
# 2 CPU cores: not measured yet.
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)
data_root = 'data/demo/cifar'

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes=10,
        # CIFAR-10's RGB mean/std (mmpretrain's cifar10 config); images load as RGB
        mean=[125.307, 122.961, 113.8575],
        std=[51.5865, 50.847, 51.255],
        to_rgb=False),
    backbone=dict(type='ResNetCIFARACON', depth=20, acon_cfg=dict(type='ReLU')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ValidatedCIFAR10', data_root=data_root, split='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=250,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ValidatedCIFAR10', data_root=data_root, split='test',
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_iters = 1000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    constructor='AconOptimWrapperConstructor',  # no decay on betas, biases, norms
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=False, begin=50,
         end=max_iters + 1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='AconCheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1, save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
