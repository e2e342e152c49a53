# ImageNet-1k classification, ShuffleNetV2 1.0x with ACON-C, the official
# ACON recipe. The base of the ShuffleNetV2 family:
# shufflenetv2-{0.5,1.0,1.5,2.0}x-{relu,aconc,metaacon} inherit it and change
# the width and/or the activation only.
# Sources ("official" = the authors' code, github.com/nmaac/acon,
# ACON/ShuffleNetV2_ACON/{train.py,utils.py,network.py}; "paper" = Ma et al.,
# CVPR 2021, the ImageNet training details):
#   input, augmentation, evaluation  as the ResNets (official: train.py transforms); see
#                                    resnet50-aconc_8xb32_in1k.py
#   batch         1024 = 8 GPUs x 128 (official: --batch-size; paper)
#   schedule      300,000 iterations, lr 0.5 decaying linearly per iteration
#                 to 0 (official: --total-iters,
#                 --learning-rate, LambdaLR)
#   optimiser     SGD, momentum 0.9, weight decay 4e-5 on conv/linear weights
#                 only (official: --weight-decay,
#                 get_parameters)
#   loss          cross entropy with label smoothing 0.1 (official: CrossEntropyLabelSmooth);
#                 mmpretrain's mode='original' is the official
#                 (1 - eps) * one_hot + eps / num_classes
#   last conv     1024 channels (2.0x: 2048) (official: network.py)
_base_ = './resnet50-aconc_8xb32_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ShuffleNetV2ACON',
        widen_factor=1.0,
        acon_cfg=dict(type='AconC'),
        out_indices=(3, ),
        norm_cfg=dict(type='BN', requires_grad=True)),
    head=dict(
        in_channels=1024,
        loss=dict(
            _delete_=True,
            type='LabelSmoothLoss',
            label_smooth_val=0.1,
            mode='original',
            loss_weight=1.0)))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

max_iters = 300000
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.5, weight_decay=4e-5))
# lr(t) = 0.5 * (1 - t / max_iters), stepped every iteration (mmengine's
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
auto_scale_lr = dict(base_batch_size=1024)
