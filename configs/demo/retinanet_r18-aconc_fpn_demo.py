# Demo detector: RetinaNet with a ResNet-18 ACON-C backbone (trained from
# scratch) and a 64-channel FPN, on the generated COCO-format shapes data
# (tools/misc/make_demo_data.py -> data/demo/coco). Runs on 2 CPU cores.
# It inherits the stock mmdet RetinaNet config like the full-size configs in
# configs/retinanet/; only the sizes, the schedule and the data differ.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)

data_root = 'data/demo/coco/'
metainfo = dict(
    classes=('circle', 'square', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 0), (0, 0, 230)])
img_scale = (128, 128)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetACON',
        depth=18,
        acon_cfg=dict(type='AconC'),
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(
        in_channels=[128, 256, 512],
        out_channels=64,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        num_classes=3,
        in_channels=64,
        feat_channels=64,
        # shapes are 18-56 px: anchors of 24-38 px on the stride-8 level
        anchor_generator=dict(octave_base_scale=3),
        # GroupNorm in the head's conv towers (as FCOS/ATSS) and lr 2e-3:
        # from scratch, the stock unnormalised head at lr 1e-3 learnt the
        # classes too slowly for the 600-iteration CPU budget (seed 0: bbox
        # mAP 0.64 here, 0.505 on an Intel machine); docs/demo.md has the
        # spread over seeds of this recipe
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_iters = 600
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters - 50,
        eta_min=1e-5,
        by_epoch=False,
        begin=50,
        end=max_iters)
]
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(
        type='AconCheckpointHook',  # acon-mm's kill-safe hook
        by_epoch=False, interval=200, max_keep_ckpts=2, save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=8)
