# RetinaNet, ShuffleNetV2 1.0x (meta-ACON-C in every activation, as the
# official network) + FPN, stock mmdet 1x COCO schedule.
# The FPN takes stages 1-3 (strides 8, 16, 32; 116, 232, 464 channels) and
# adds two levels on top, giving RetinaNet's five levels (strides 8-128).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['acon_mm'], allow_failed_imports=False)

# Input: raw BGR 0-255 as the official network (see retinanet_r50-aconc_fpn_1x_coco.py).
model = dict(
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        bgr_to_rgb=False,
        pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='ShuffleNetV2ACON',
        widen_factor=1.0,
        acon_cfg=dict(type='MetaAconC'),
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        # ImageNet weights written by
        # tools/model_converters/acon_official_to_mm.py (see README, Configs).
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/shufflenetv2_1.0x_metaacon_mm.pth')),
    neck=dict(
        in_channels=[116, 232, 464],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))

# the stock SGD under the official ACON weight-decay rule
optim_wrapper = dict(constructor='AconOptimWrapperConstructor')
train_dataloader = dict(dataset=dict(type='ValidatedCocoDataset'))
val_dataloader = dict(dataset=dict(type='ValidatedCocoDataset'))
test_dataloader = dict(dataset=dict(type='ValidatedCocoDataset'))

# kill-safe checkpoints that resume exactly (write aside and rename, point,
# then prune; RNG states saved): acon-mm's hook, selected here by name
default_hooks = dict(checkpoint=dict(type='AconCheckpointHook'))
