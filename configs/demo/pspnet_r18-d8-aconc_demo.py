# Demo segmentor: PSPNet with a dilated ResNet-18 ACON-C backbone (output
# stride 8, trained from scratch) on the generated Cityscapes-layout data
# (tools/misc/make_demo_data.py -> data/demo/cityscapes, 128x256 images).
# As the full-size configs train on 512x1024 crops of 1024x2048 images, it
# trains on 64x128 crops and tests on whole 128x256 images.
# It inherits the stock mmseg PSPNet Cityscapes config like the full-size
# configs in configs/pspnet/; only the sizes, the schedule, BN instead of
# SyncBN and the data differ.
_base_ = 'mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)

data_root = 'data/demo/cityscapes/'
crop_size = (64, 128)
img_scale = (256, 128)  # (w, h) as mmcv's Resize takes it
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ResNetACON',
        depth=18,
        acon_cfg=dict(type='AconC'),
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        contract_dilation=True,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=None),
    decode_head=dict(in_channels=512, channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=32, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 200
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=20,
        end=max_iters,
        by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(
        type='AconCheckpointHook',  # acon-mm's kill-safe hook
        by_epoch=False, interval=50, max_keep_ckpts=2, save_last=True))
randomness = dict(seed=0)
