"""Build a model from a project config, load a checkpoint, feed it images
through the config's own test pipeline (for the analysis tools)."""
import copy
import os
import os.path as osp
from typing import Iterable, Optional, Tuple

import numpy as np
import torch.nn as nn
from torch import Tensor

from ..engine.runner_utils import config_task, register_task_modules
from ..models.utils import check_checkpoint_fits
from ..utils.io import safe_torch_load, strip_module_prefix

__all__ = [
    'build_model_from_cfg', 'load_model', 'image_batches', 'test_pipeline_cfg',
    'display_image'
]

# ---------------------------------------------------------------------------
# building a model from a project config and loading a checkpoint
# ---------------------------------------------------------------------------
def build_model_from_cfg(cfg) -> nn.Module:
    """Build ``cfg.model`` in the config's scope (mmdet, mmseg or mmpretrain), CPU, eval,
    SyncBN reverted to BN (the analysis runs on one process)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS
    register_task_modules(config_task(cfg), init_default_scope=True)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model = revert_sync_batchnorm(model)
    model.eval()
    return model


def load_model(config, checkpoint: Optional[str] = None,
               cfg_options: Optional[dict] = None):
    """Build the model of ``config`` (path or :class:`mmengine.Config`) and load
    ``checkpoint`` (``weights_only=True`` through :func:`safe_torch_load`).

    Raises:
        FileNotFoundError: the config or checkpoint does not exist.
        CheckpointMismatchError: (a ``KeyError``) the checkpoint does not fit
            the model: missing, unexpected or reshaped keys, or a backbone-only
            file (:func:`~acon_mm.models.utils.check_checkpoint_fits`, the check
            ``tools/test.py`` runs too).

    Returns:
        tuple: ``(model, cfg)``.
    """
    from mmengine.config import Config
    if isinstance(config, str):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file not found: {config}')
        cfg = Config.fromfile(config)
    else:
        cfg = copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = build_model_from_cfg(cfg)
    if checkpoint is not None:
        ckpt = safe_torch_load(checkpoint, map_location='cpu')
        state_dict = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state_dict, dict):
            raise KeyError(f'checkpoint {checkpoint!r} holds no state dict')
        state_dict = strip_module_prefix(state_dict)
        check_checkpoint_fits(model, state_dict, checkpoint,
                              getattr(cfg, 'filename', None) or 'the config')
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    return model, cfg


# ---------------------------------------------------------------------------
# images for meta-ACON: the config's own test pipeline
# ---------------------------------------------------------------------------
_ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadPanopticAnnotations',
                       'LoadDepthAnnotation')
_IMG_EXT = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def test_pipeline_cfg(cfg) -> list:
    for key in ('test_dataloader', 'val_dataloader'):
        dl = cfg.get(key, None)
        if dl and dl.get('dataset', None) is not None:
            ds = dl['dataset']
            while 'pipeline' not in ds and 'dataset' in ds:  # wrappers
                ds = ds['dataset']
            if 'pipeline' in ds:
                return list(ds['pipeline'])
    if cfg.get('test_pipeline', None):
        return list(cfg.test_pipeline)
    raise KeyError(f'config {getattr(cfg, "filename", "")}: no test pipeline '
                   '(test_dataloader.dataset.pipeline or test_pipeline)')


def image_batches(cfg, images: Optional[str] = None,
                  num_images: int = 8) -> Iterable[Tuple[dict, str]]:
    """Yield ``(data, name)`` with ``data`` ready for ``model.data_preprocessor``.

    * ``images=DIR``: the image files in ``DIR`` (sorted), each through the
      config's test pipeline with the annotation loaders removed — the same
      resize, padding and packing the model sees at test time.
    * ``images=None``: the first ``num_images`` samples of the config's test
      dataset (the demo data for the demo configs).
    """
    from mmengine.dataset import Compose, pseudo_collate
    if images is not None:
        if not osp.isdir(images):
            raise FileNotFoundError(f'--images: not a directory: {images}')
        files = sorted(f for f in os.listdir(images)
                       if f.lower().endswith(_IMG_EXT))
        if not files:
            raise FileNotFoundError(f'--images {images}: no image files '
                                    f'({", ".join(_IMG_EXT)})')
        pipe_cfg = [t for t in test_pipeline_cfg(cfg)
                    if t.get('type') not in _ANNOTATION_LOADERS]
        pipeline = Compose(pipe_cfg)
        for i, f in enumerate(files[:num_images]):
            path = osp.join(images, f)
            data = pipeline(dict(img_path=path, img_id=i, seg_fields=[],
                                 reduce_zero_label=False))
            if data is None:
                raise ValueError(f'test pipeline dropped image {path}')
            yield pseudo_collate([data]), f
    else:
        from mmengine.registry import DATASETS
        dl = cfg.get('test_dataloader', None) or cfg.get('val_dataloader', None)
        if not dl:
            raise KeyError('config has no test_dataloader; pass --images DIR')
        try:
            dataset = DATASETS.build(copy.deepcopy(dl['dataset']))
        except Exception as err:  # missing data on disk etc.
            raise FileNotFoundError(
                f'could not build the test dataset of the config ({err}); '
                'pass --images DIR to use your own images') from err
        for i in range(min(num_images, len(dataset))):
            data = dataset[i]
            name = osp.basename(data['data_samples'].metainfo.get('img_path', str(i)))
            yield pseudo_collate([data]), name


def display_image(model, inputs: Tensor) -> np.ndarray:
    """Undo the data preprocessor's normalisation: (H, W, 3) RGB in [0, 1]."""
    img = inputs[0].detach().float().cpu()
    pre = getattr(model, 'data_preprocessor', None)
    if getattr(pre, '_enable_normalize', False):
        img = img * pre.std.cpu() + pre.mean.cpu()
    img = img[:3]
    if not getattr(pre, '_channel_conversion', False):
        img = img.flip(0)  # BGR -> RGB for display
    img = img.permute(1, 2, 0).numpy()
    lo, hi = float(img.min()), float(img.max())
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
