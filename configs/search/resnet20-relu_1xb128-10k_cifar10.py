# The paper-scale child of the activation search (Ramachandran et al. 2017, sec. 3:
# ResNet-20 on CIFAR-10, 10K steps per child): the CPU demo child
# (resnet20-relu_1xb128-1k_cifar-demo.py) on the real CIFAR-10 under data/cifar10
# (the python or the binary version, never downloaded; ValidatedCIFAR10 never
# unpickles code) for 10k iterations of batch 128 (~26 epochs), validated every 2k.
# Meant for GPUs: python tools/activation_search.py THIS_FILE --budget 100 ...
# (docs/search.md). Not run here (no GPU, no CIFAR-10 on this machine).
_base_ = './resnet20-relu_1xb128-1k_cifar-demo.py'

data_root = 'data/cifar10'
train_dataloader = dict(num_workers=4, persistent_workers=True,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=2, persistent_workers=True,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

max_iters = 10000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=500),
    dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=False, begin=500,
         end=max_iters + 1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='AconCheckpointHook', by_epoch=False, interval=2000,
                    max_keep_ckpts=1, save_last=True))
