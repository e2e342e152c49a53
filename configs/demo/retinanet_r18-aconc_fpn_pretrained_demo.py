# The demo detector (configs/demo/retinanet_r18-aconc_fpn_demo.py) initialised
# from the demo pretraining (configs/demo/resnet18-aconc_demo_in1k.py): the
# pretrain -> transfer chain of the full configs, on generated data, on CPU.
# Two differences from the from-scratch demo: the backbone loads the
# classifier checkpoint's 'backbone.*' tensors (checked key for key), and
# the input is raw BGR 0-255 (no mean/std), the convention the backbone was
# pretrained with (tools/train.py refuses a contradicting data_preprocessor).
# `python tools/demo.py --pretrain` runs both steps.
_base_ = './retinanet_r18-aconc_fpn_demo.py'

model = dict(
    data_preprocessor=dict(
        mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    backbone=dict(
        init_cfg=dict(
            _delete_=True,  # the base trains from scratch (init_cfg=None)
            type='Pretrained',
            checkpoint='work_dirs/resnet18-aconc_demo_in1k/iter_200.pth',
            prefix='backbone.')))
