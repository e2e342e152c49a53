r"""What ACON learned: curves, per-layer switching factors and model cost.

This module holds the logic behind ``tools/analysis_tools/plot_acon_curves.py``,
``analyze_acon.py`` and ``get_flops.py`` (the scripts only parse arguments).

Every member of the ACON family is the smooth maximum of two linear units,

.. math::
    f(x) = (p_1 - p_2)\,x\,\sigma\big(\beta (p_1 - p_2) x\big) + p_2 x,

with :math:`p_1 = 1, p_2 = 0` for ACON-A / Swish-beta and :math:`p_1 = 1,
p_2 = p` for ACON-B. The *effective switching factor*

.. math::
    \eta = |\beta\,(p_1 - p_2)|

decides whether a unit activates: :math:`\eta \to 0` makes :math:`f` linear
(:math:`f \to (p_1 + p_2)x/2`), a large :math:`\eta` makes it
:math:`\max(p_1 x, p_2 x)`. For meta-ACON :math:`\beta = G(x)` is generated per
sample (and channel or pixel), so :math:`\eta` is measured over a set of images.

Nothing here imports matplotlib at module import time; plotting functions
import it lazily with the ``Agg`` backend.
"""
import copy
import csv
import json
import math
import os
import os.path as osp
import warnings
from collections import OrderedDict, defaultdict
from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..activations import (ACON_TYPES, AconA, AconB, AconC, BaseAcon,
                           MetaAconC, SwishBeta)
from ..ops import acon_naive
from .misc import iter_acon_layers

__all__ = [
    'DEFAULT_OUT_ROOT', 'acon_curve', 'acon_curve_grad', 'plot_acon_curves',
    'layer_parameters', 'BetaRecorder', 'analyze_model', 'load_model',
    'swap_acon_for_relu', 'complexity', 'naive_acon_ops',
    'ELEMENTWISE_OPS'
]

#: Root of every analysis tool's default output directory.
DEFAULT_OUT_ROOT = osp.join('work_dirs', 'analysis')


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


# ---------------------------------------------------------------------------
# 1. the ACON family as curves
# ---------------------------------------------------------------------------
def acon_curve(x: np.ndarray, p1: float = 1.0, p2: float = 0.0,
               beta: float = 1.0) -> np.ndarray:
    r"""ACON :math:`f(x) = (p_1-p_2)x\sigma(\beta(p_1-p_2)x) + p_2 x` (float64).

    ``beta=math.inf`` gives the limit :math:`\max(p_1 x, p_2 x)`.
    """
    x = np.asarray(x, dtype=np.float64)
    if math.isinf(beta):
        return np.maximum(p1 * x, p2 * x)
    # the project's functional op, so the curves are what the layers compute
    t = torch.from_numpy(x)
    out = acon_naive(t, torch.tensor(p1, dtype=torch.float64),
                     torch.tensor(p2, dtype=torch.float64),
                     torch.tensor(beta, dtype=torch.float64))
    return out.numpy()


def acon_curve_grad(x: np.ndarray, p1: float = 1.0, p2: float = 0.0,
                    beta: float = 1.0) -> np.ndarray:
    r"""First derivative :math:`df/dx`, by autograd through the project's op.

    Closed form: :math:`d\sigma(\beta d x) + \beta d^2 x \sigma(\beta d x)
    (1 - \sigma(\beta d x)) + p_2` with :math:`d = p_1 - p_2`; for
    ``beta=inf`` the derivative of the maximum (``p1`` where ``p1 x > p2 x``).
    """
    x = np.asarray(x, dtype=np.float64)
    if math.isinf(beta):
        return np.where(p1 * x >= p2 * x, p1, p2).astype(np.float64)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    out = acon_naive(t, torch.tensor(p1, dtype=torch.float64),
                     torch.tensor(p2, dtype=torch.float64),
                     torch.tensor(beta, dtype=torch.float64))
    (grad, ) = torch.autograd.grad(out.sum(), t)
    return grad.numpy()


#: The panels of the curve figure: (title, family, [(label, p1, p2, beta)]).
def _curve_panels(betas: Sequence[float]) -> List[Tuple[str, str, list]]:
    def b(v):
        return '∞' if math.isinf(v) else f'{v:g}'

    p = 0.25
    p1, p2 = 1.2, -0.8
    return [
        ('ACON-A  max(x, 0)', 'ACON-A',
         [(f'β={b(v)}', 1.0, 0.0, v) for v in betas]),
        (f'ACON-B  max(x, px), p={p:g}', 'ACON-B',
         [(f'β={b(v)}', 1.0, p, v) for v in betas]),
        (f'ACON-C  max(p1x, p2x), p1={p1:g}, p2={p2:g}', 'ACON-C',
         [(f'β={b(v)}', p1, p2, v) for v in betas]),
        ('ACON-C  β=1, learned bounds (p1≈p2: linear)', 'ACON-C',
         [(f'p1={a:g}, p2={c:g}', a, c, 1.0)
          for a, c in ((1.0, 0.0), (1.2, -0.8), (1.5, 0.5), (0.5, -0.5),
                       (0.8, 0.6))]),
    ]


def plot_acon_curves(out_dir: str, betas: Sequence[float] = (0.0, 0.5, 1.0, 2.0,
                                                             10.0, math.inf),
                     x_range: Tuple[float, float] = (-6.0, 6.0),
                     num_points: int = 601, dpi: int = 120) -> Dict[str, str]:
    """Draw ACON-A/B/C at several beta, p1, p2 and their first derivatives.

    Writes ``acon_curves.png`` (top row: f(x); bottom row: df/dx; dashed lines
    on ACON-C's derivative mark the bounds learned by p1 and p2) and
    ``acon_curves.csv`` (one row per x and curve: ``panel, family, label, p1,
    p2, beta, x, f, df``) to ``out_dir``.

    Returns:
        dict: ``{'png': path, 'csv': path}``.
    """
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    x = np.linspace(x_range[0], x_range[1], num_points)
    panels = _curve_panels(betas)
    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 8.2))
    rows = []
    for col, (title, family, curves) in enumerate(panels):
        ax_f, ax_d = axes[0, col], axes[1, col]
        for label, p1, p2, beta in curves:
            f = acon_curve(x, p1, p2, beta)
            df = acon_curve_grad(x, p1, p2, beta)
            style = dict(ls='--', color='k', lw=1.0) if math.isinf(beta) else {}
            ax_f.plot(x, f, label=label, **style)
            ax_d.plot(x, df, label=label, **style)
            for xi, fi, di in zip(x, f, df):
                rows.append((col, family, label, p1, p2, beta, xi, fi, di))
        if family == 'ACON-C' and col == 2:
            _, p1, p2, _ = curves[0]
            # bounds of the derivative for beta > 0 (Ma et al., Sec. 3.2)
            for bound in (1.0998 * p1 - 0.0998 * p2, 1.0998 * p2 - 0.0998 * p1):
                ax_d.axhline(bound, color='grey', ls=':', lw=1)
        ax_f.set_title(title, fontsize=10)
        ax_d.set_title('first derivative', fontsize=10)
        for ax in (ax_f, ax_d):
            ax.axhline(0, color='grey', lw=0.5)
            ax.axvline(0, color='grey', lw=0.5)
            ax.grid(alpha=0.3)
            ax.set_xlabel('x')
        ax_f.set_ylabel('f(x)')
        ax_d.set_ylabel("f'(x)")
        ax_f.legend(fontsize=8, loc='upper left')
    fig.suptitle('The ACON family: f(x) = (p1−p2)·x·σ(β(p1−p2)x) + p2·x  '
                 '(β→0: linear, β→∞: max)', fontsize=12)
    fig.tight_layout()
    png = osp.join(out_dir, 'acon_curves.png')
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    csv_path = osp.join(out_dir, 'acon_curves.csv')
    with open(csv_path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['panel', 'family', 'label', 'p1', 'p2', 'beta', 'x', 'f', 'df'])
        for r in rows:
            w.writerow([r[0], r[1], r[2], repr(r[3]), repr(r[4]),
                        'inf' if math.isinf(r[5]) else repr(r[5]),
                        repr(float(r[6])), repr(float(r[7])), repr(float(r[8]))])
    return dict(png=png, csv=csv_path)


# ---------------------------------------------------------------------------
# 2. learned parameters of one layer
# ---------------------------------------------------------------------------
def _vec(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().reshape(-1).numpy().astype(np.float64)


def layer_parameters(layer: BaseAcon) -> Dict[str, Optional[np.ndarray]]:
    """Per-channel ``p1``, ``p2`` and ``beta`` of an ACON layer as float64 arrays.

    ACON-A / Swish-beta have ``p1 = 1, p2 = 0``; ACON-B ``p1 = 1, p2 = p``.
    ``beta`` is ``None`` for :class:`MetaAconC` (it is generated, see
    :class:`BetaRecorder`). A scalar Swish-beta gives arrays of length 1.
    """
    if isinstance(layer, MetaAconC):
        p1, p2, beta = _vec(layer.p1), _vec(layer.p2), None
    elif isinstance(layer, AconC):
        p1, p2, beta = _vec(layer.p1), _vec(layer.p2), _vec(layer.beta)
    elif isinstance(layer, AconB):
        p2, beta = _vec(layer.p), _vec(layer.beta)
        p1 = np.ones_like(p2)
    elif isinstance(layer, (AconA, SwishBeta)):
        beta = _vec(layer.beta)
        p1, p2 = np.ones_like(beta), np.zeros_like(beta)
    else:
        raise TypeError(f'layer_parameters: unsupported ACON layer '
                        f'{type(layer).__name__}')
    return dict(p1=p1, p2=p2, beta=beta)


# ---------------------------------------------------------------------------
# 3. the generated beta of meta-ACON over a set of images
# ---------------------------------------------------------------------------
class BetaRecorder:
    """Records the beta that every :class:`MetaAconC` of a model generates.

    A forward hook per layer recomputes ``layer.switch_beta(input)`` (in eval
    mode this is exactly the value the forward pass used) and accumulates, per
    layer: the per-channel mean over samples (and pixels), the per-channel
    mean of :math:`\\eta = |\\beta (p_1 - p_2)|` (:math:`= |p_1 - p_2|\\,
    \\bar\\beta` since :math:`\\beta > 0`), global mean/std over every
    generated value, and the first ``keep_maps`` pixel-switch maps.

    Use as a context manager around forward passes::

        with BetaRecorder(model) as rec:
            model(inputs)
        rec.summary()['backbone.layer1.0.act']['mean']
    """

    def __init__(self, model: nn.Module, keep_maps: int = 1):
        self.layers = OrderedDict(
            (n, m) for n, m in iter_acon_layers(model) if isinstance(m, MetaAconC))
        self.keep_maps = keep_maps
        self._handles = []
        self.reset()

    def reset(self) -> None:
        self.sum = {}
        self.sq = {}
        self.count = defaultdict(int)
        self.chan_sum = {}
        self.d_abs = {}
        self.chan_count = defaultdict(int)
        self.samples = defaultdict(int)
        self.per_sample_means = defaultdict(list)
        self.maps = defaultdict(list)

    def _hook(self, name):
        def hook(module: MetaAconC, inputs, output):
            with torch.no_grad():
                x = inputs[0]
                beta = module.switch_beta(x).double()
                n = beta.shape[0]
                self.sum[name] = self.sum.get(name, 0.0) + beta.sum().item()
                self.sq[name] = self.sq.get(name, 0.0) + (beta ** 2).sum().item()
                self.count[name] += beta.numel()
                self.samples[name] += n
                self.per_sample_means[name] += beta.reshape(n, -1).mean(1).tolist()
                # per channel (one entry for the layer / pixel switches)
                cs = beta.sum(dim=[0] + list(range(2, beta.dim()))).reshape(-1)
                self.chan_sum[name] = cs if name not in self.chan_sum else \
                    self.chan_sum[name] + cs
                self.chan_count[name] += beta.numel() // beta.shape[1]
                self.d_abs[name] = (module.p1 - module.p2).detach().double().abs() \
                    .reshape(-1)
                if module.switch == 'pixel' and len(self.maps[name]) < self.keep_maps:
                    for m in beta[:self.keep_maps - len(self.maps[name]), 0]:
                        self.maps[name].append(m.float().cpu().numpy())
        return hook

    def __enter__(self):
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []

    def summary(self) -> Dict[str, dict]:
        """Per layer: ``mean``, ``std`` (over every generated value),
        ``sample_std`` (spread of the per-image means), ``per_channel``
        (mean beta per channel), ``eta_per_channel``, ``num_images``."""
        out = OrderedDict()
        for name in self.layers:
            if not self.count.get(name):
                continue
            c = self.count[name]
            mean = self.sum[name] / c
            var = max(self.sq[name] / c - mean ** 2, 0.0)
            n = self.samples[name]
            per_channel = self.chan_sum[name] / self.chan_count[name]
            out[name] = dict(
                mean=mean, std=math.sqrt(var),
                sample_std=float(np.std(self.per_sample_means[name])),
                per_channel=per_channel.cpu().numpy(),
                # beta = sigmoid(.) > 0, so mean |beta (p1 - p2)| = |p1 - p2| mean beta
                eta_per_channel=(self.d_abs[name] * per_channel).cpu().numpy(),
                num_images=n, maps=self.maps.get(name, []))
        return out


# ---------------------------------------------------------------------------
# 4. building a model from a project config and loading a checkpoint
# ---------------------------------------------------------------------------
def _register_scope(cfg) -> str:
    from mmengine.registry import init_default_scope
    scope = cfg.get('default_scope', None)
    if scope is None:
        # infer from the data preprocessor / model type
        text = cfg.pretty_text
        scope = 'mmseg' if 'SegDataPreProcessor' in text or \
            'EncoderDecoder' in text else 'mmdet'
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=False)
    elif scope == 'mmseg':
        from mmseg.utils import register_all_modules
        register_all_modules(init_default_scope=False)
    else:
        raise ValueError(f"config default_scope={scope!r}: acon-mm's analysis "
                         "tools support 'mmdet' and 'mmseg' configs")
    init_default_scope(scope)
    return scope


def build_model_from_cfg(cfg) -> nn.Module:
    """Build ``cfg.model`` in the config's scope (mmdet or mmseg), CPU, eval,
    SyncBN reverted to BN (the analysis runs on one process)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS
    _register_scope(cfg)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model = revert_sync_batchnorm(model)
    model.eval()
    return model


def _strip_prefix(state_dict: dict) -> dict:
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def load_model(config, checkpoint: Optional[str] = None,
               cfg_options: Optional[dict] = None):
    """Build the model of ``config`` (path or :class:`mmengine.Config`) and load
    ``checkpoint`` (``weights_only=True`` through :func:`safe_torch_load`).

    Raises:
        FileNotFoundError: the config or checkpoint does not exist.
        KeyError: the checkpoint lacks ACON parameters the model has (the
            message names the checkpoint and up to 10 missing keys).

    Returns:
        tuple: ``(model, cfg)``.
    """
    from mmengine.config import Config
    from .checkpoint import safe_torch_load
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
        state_dict = _strip_prefix(state_dict)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        acon_prefixes = tuple(n + '.' for n, _ in iter_acon_layers(model))
        acon_missing = [k for k in missing if k.startswith(acon_prefixes)]
        if acon_missing:
            raise KeyError(
                f'checkpoint {checkpoint!r} does not match the model of '
                f'{getattr(cfg, "filename", "the config")}: {len(acon_missing)} '
                f'ACON parameters are missing, e.g. {acon_missing[:10]}')
        if missing or unexpected:
            warnings.warn(f'checkpoint {checkpoint}: {len(missing)} missing keys '
                          f'(e.g. {missing[:5]}), {len(unexpected)} unexpected '
                          f'keys (e.g. {unexpected[:5]})')
    model.eval()
    return model, cfg


# ---------------------------------------------------------------------------
# 5. images for meta-ACON: the config's own test pipeline
# ---------------------------------------------------------------------------
_ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadPanopticAnnotations',
                       'LoadDepthAnnotation')
_IMG_EXT = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def _test_pipeline_cfg(cfg) -> list:
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
        pipe_cfg = [t for t in _test_pipeline_cfg(cfg)
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


def _display_image(model, inputs: Tensor) -> np.ndarray:
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


# ---------------------------------------------------------------------------
# 6. the analysis
# ---------------------------------------------------------------------------
def _stats(v: Optional[np.ndarray], prefix: str) -> dict:
    if v is None or len(v) == 0:
        return {f'{prefix}_{k}': None for k in ('mean', 'std', 'min', 'max')}
    return {f'{prefix}_mean': float(np.mean(v)), f'{prefix}_std': float(np.std(v)),
            f'{prefix}_min': float(np.min(v)), f'{prefix}_max': float(np.max(v))}


def analyze_model(model: nn.Module, batches: Optional[Iterable] = None,
                  linear_thresh: float = 0.1) -> dict:
    """Per ACON layer of ``model`` (in module order, i.e. by depth): its
    learned ``p1``, ``p2``, ``beta`` and the effective switching factor
    :math:`\\eta = |\\beta (p_1 - p_2)|` per channel.

    For :class:`MetaAconC` layers ``beta`` is the generated one, recorded over
    ``batches`` (an iterable of ``(data, name)`` as :func:`image_batches`
    yields; each goes through ``model.data_preprocessor`` and the model's
    ``'tensor'`` forward).

    A layer is *nearly linear* when the median of :math:`\\eta` over its
    channels is below ``linear_thresh``: then :math:`\\sigma(\\eta x) \\approx
    1/2 + \\eta x / 4` for inputs of unit scale and the unit is
    :math:`\\approx (p_1 + p_2) x / 2` ("not activate").

    Returns:
        dict: ``{'layers': [row, ...], 'channels': {name: {...arrays}},
        'maps': {name: [HxW arrays]}, 'image': RGB array or None,
        'images': [names]}``.
    """
    layers = list(iter_acon_layers(model))
    if not layers:
        raise ValueError('the model has no ACON layer (AconA/AconB/AconC/'
                         'MetaAconC/SwishBeta): nothing to analyse')
    has_meta = any(isinstance(m, MetaAconC) for _, m in layers)
    image, names = None, []
    gen = {}
    if has_meta and batches is not None:
        model.eval()
        with BetaRecorder(model) as rec, torch.no_grad():
            for data, name in batches:
                data = model.data_preprocessor(data, False)
                model(data['inputs'], data['data_samples'], mode='tensor')
                if image is None:
                    image = _display_image(model, data['inputs'])
                names.append(name)
        gen = rec.summary()
    rows, channels, maps = [], OrderedDict(), OrderedDict()
    for depth, (name, layer) in enumerate(layers):
        par = layer_parameters(layer)
        p1, p2, beta = par['p1'], par['p2'], par['beta']
        row = OrderedDict(depth=depth, layer=name, type=type(layer).__name__,
                          switch=getattr(layer, 'switch', ''),
                          channels=int(len(p1)))
        beta_std_img = None
        if isinstance(layer, MetaAconC):
            g = gen.get(name)
            if g is None:
                source, beta_c, eta = 'generated (no images)', None, None
                row.update(beta_source=source, num_images=0)
            else:
                beta_c = g['per_channel']
                if len(beta_c) == 1 and len(p1) > 1:  # layer/pixel switch
                    beta_c = np.full(len(p1), beta_c[0])
                eta = g['eta_per_channel']
                row.update(beta_source='generated', num_images=g['num_images'])
                beta_std_img = g['sample_std']
                if g['maps']:
                    maps[name] = g['maps']
        else:
            beta_c = beta if len(beta) == len(p1) else np.full(len(p1), beta[0])
            eta = np.abs(beta_c * (p1 - p2))
            row.update(beta_source='learned', num_images=0)
        row.update(_stats(p1, 'p1'))
        row.update(_stats(p2, 'p2'))
        row.update(_stats(beta_c, 'beta'))
        if isinstance(layer, MetaAconC) and name in gen:
            row['beta_std'] = gen[name]['std']  # over all generated values
            row['beta_mean'] = gen[name]['mean']
        row['beta_image_std'] = beta_std_img
        row.update(_stats(eta, 'eta'))
        if eta is not None:
            row['eta_median'] = float(np.median(eta))
            row['linear_frac'] = float(np.mean(eta < linear_thresh))
            row['nearly_linear'] = bool(np.median(eta) < linear_thresh)
        else:
            row.update(eta_median=None, linear_frac=None, nearly_linear=None)
        rows.append(row)
        channels[name] = OrderedDict(p1=p1, p2=p2, beta=beta_c, eta=eta)
    return dict(layers=rows, channels=channels, maps=maps, image=image,
                images=names, linear_thresh=linear_thresh)


def _fmt(v):
    if v is None:
        return ''
    if isinstance(v, float):
        return repr(v)
    return v


def write_analysis(result: dict, out_dir: str, meta: Optional[dict] = None,
                   dpi: int = 110) -> Dict[str, str]:
    """Write the tables, plots and summary of :func:`analyze_model`.

    Files: ``acon_layers.csv`` / ``acon_layers.json`` (one row per layer),
    ``acon_channels.csv`` (one row per layer and channel: p1, p2, beta, eta),
    ``acon_switch_by_depth.png`` (distribution over channels per layer of beta,
    p1 − p2 and eta), ``meta_acon_beta.png`` (generated beta: mean and spread
    per layer; meta-ACON only), ``pixel_beta_overlay.png`` (pixel switch only),
    ``summary.txt``.
    """
    os.makedirs(out_dir, exist_ok=True)
    rows = result['layers']
    files = {}
    keys = list(rows[0].keys())
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    path = osp.join(out_dir, 'acon_layers.csv')
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in keys})
    files['layers_csv'] = path
    path = osp.join(out_dir, 'acon_layers.json')
    with open(path, 'w') as f:
        json.dump(dict(meta=meta or {}, linear_thresh=result['linear_thresh'],
                       images=result['images'], layers=rows), f, indent=1)
    files['layers_json'] = path
    path = osp.join(out_dir, 'acon_channels.csv')
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['depth', 'layer', 'channel', 'p1', 'p2', 'beta', 'eta'])
        for depth, (name, ch) in enumerate(result['channels'].items()):
            for c in range(len(ch['p1'])):
                w.writerow([depth, name, c] + [
                    '' if ch[k] is None else repr(float(ch[k][c]))
                    for k in ('p1', 'p2', 'beta', 'eta')])
    files['channels_csv'] = path
    files['depth_png'] = _plot_by_depth(result, osp.join(out_dir,
                                                         'acon_switch_by_depth.png'), dpi)
    meta_rows = [r for r in rows if r['beta_source'] == 'generated']
    if meta_rows:
        files['meta_png'] = _plot_meta(meta_rows, osp.join(out_dir,
                                                           'meta_acon_beta.png'), dpi)
    if result['maps'] and result['image'] is not None:
        files['pixel_png'] = _plot_pixel(result, osp.join(out_dir,
                                                          'pixel_beta_overlay.png'), dpi)
    text = summary_text(result, meta)
    path = osp.join(out_dir, 'summary.txt')
    with open(path, 'w') as f:
        f.write(text + '\n')
    files['summary'] = path
    return files


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else '…' + name[-(n - 1):]


def _plot_by_depth(result, path, dpi):
    plt = _plt()
    ch = result['channels']
    names = list(ch)
    series = [('β (learned, or generated mean per channel)', 'beta'),
              ('p1 − p2', None), ('η = |β(p1 − p2)|  (0: linear)', 'eta')]
    fig, axes = plt.subplots(len(series), 1,
                             figsize=(max(8, 0.38 * len(names) + 3), 10), sharex=True)
    pos = np.arange(len(names))
    for ax, (title, key) in zip(axes, series):
        data, where = [], []
        for i, n in enumerate(names):
            v = ch[n]['p1'] - ch[n]['p2'] if key is None else ch[n][key]
            if v is not None and len(v):
                data.append(v)
                where.append(i)
        if data:
            ax.boxplot(data, positions=where, widths=0.6, showfliers=False)
            for i, v in zip(where, data):
                jitter = (np.random.RandomState(i).rand(len(v)) - 0.5) * 0.35
                ax.scatter(i + jitter, v, s=3, alpha=0.35, color='tab:blue')
        if key == 'eta':
            ax.axhline(result['linear_thresh'], color='tab:red', ls='--', lw=1,
                       label=f'nearly linear below {result["linear_thresh"]:g}')
            ax.set_yscale('symlog', linthresh=max(result['linear_thresh'], 1e-3))
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].set_xticks(pos)
    axes[-1].set_xticklabels([_short(n) for n in names], rotation=75, fontsize=7)
    axes[-1].set_xlim(-0.7, len(names) - 0.3)
    fig.suptitle('ACON layers by depth: distribution over channels', fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _plot_meta(rows, path, dpi):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7, 0.38 * len(rows) + 3), 4.5))
    x = np.arange(len(rows))
    mean = np.array([r['beta_mean'] for r in rows])
    std = np.array([r['beta_std'] for r in rows])
    img_std = np.array([r['beta_image_std'] or 0.0 for r in rows])
    ax.errorbar(x, mean, yerr=std, fmt='o', capsize=3,
                label='mean ± std over all generated values')
    ax.errorbar(x + 0.15, mean, yerr=img_std, fmt='none', ecolor='tab:orange',
                capsize=3, label='± std of the per-image means')
    ax.set_xticks(x)
    ax.set_xticklabels([f"{_short(r['layer'])} ({r['switch']})" for r in rows],
                       rotation=75, fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel('generated β = G(x)')
    n = rows[0]['num_images']
    ax.set_title(f'meta-ACON: generated switching factor over {n} image(s)',
                 fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _plot_pixel(result, path, dpi, max_layers: int = 8):
    plt = _plt()
    img = result['image']
    items = list(result['maps'].items())[:max_layers]
    cols = min(4, len(items))
    rows_n = int(math.ceil(len(items) / cols))
    h, w = img.shape[:2]
    cell_h = 3.6 * h / w + 0.6
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols + 1.2, cell_h * rows_n + 0.6),
                             squeeze=False, layout='constrained')
    for ax in axes.flat:
        ax.axis('off')
    for ax, (name, maps) in zip(axes.flat, items):
        m = torch.from_numpy(maps[0])[None, None]
        m = torch.nn.functional.interpolate(m, size=(h, w), mode='nearest')[0, 0]
        ax.imshow(img)
        im = ax.imshow(m.numpy(), cmap='jet', alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f'{_short(name, 34)}\nβ {maps[0].min():.2f}…{maps[0].max():.2f}',
                     fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label='generated β')
    fig.suptitle(f'pixel-wise meta-ACON β on {result["images"][0]}', fontsize=11)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def summary_text(result: dict, meta: Optional[dict] = None) -> str:
    """A short human-readable summary: one line per layer, then the layers
    that turned nearly linear."""
    t = result['linear_thresh']
    lines = []
    if meta:
        lines.append('  '.join(f'{k}: {v}' for k, v in meta.items()))
    rows = result['layers']
    lines.append(f'{len(rows)} ACON layers (ordered by depth); η = |β(p1−p2)| per '
                 f'channel, nearly linear: median η < {t:g}')
    if result['images']:
        lines.append(f'generated β measured on {len(result["images"])} image(s)')
    w = max(len(r['layer']) for r in rows)
    lines.append(f'{"#":>3} {"layer":<{w}} {"type":<10} {"C":>5} {"β mean":>8} '
                 f'{"β std":>7} {"η median":>9} {"lin%":>5}')
    for r in rows:
        r = dict(r, linear_pct=None if r['linear_frac'] is None
                 else 100 * r['linear_frac'])

        def f(k, spec):
            return format(r[k], spec) if r.get(k) is not None else '-'.rjust(
                int(spec.split('.')[0]) if spec[0].isdigit() else 1)
        lines.append(f'{r["depth"]:>3} {r["layer"]:<{w}} {r["type"]:<10} '
                     f'{r["channels"]:>5} {f("beta_mean", "8.3f")} '
                     f'{f("beta_std", "7.3f")} {f("eta_median", "9.3f")} '
                     f'{f("linear_pct", "5.0f")}')
    lin = [r['layer'] for r in rows if r['nearly_linear']]
    unk = [r['layer'] for r in rows if r['nearly_linear'] is None]
    if lin:
        lines.append(f'nearly linear ({len(lin)}/{len(rows)}): ' + ', '.join(lin))
    else:
        lines.append(f'no layer turned nearly linear (all {len(rows) - len(unk)} '
                     f'measured layers have median η ≥ {t:g})')
    most = max((r for r in rows if r['eta_median'] is not None),
               key=lambda r: r['eta_median'], default=None)
    if most is not None:
        lines.append(f'most non-linear: {most["layer"]} (median η '
                     f'{most["eta_median"]:.3f})')
    if unk:
        lines.append(f'{len(unk)} meta-ACON layers not measured (no images): '
                     'pass --images DIR or make the test dataset available')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# 7. cost: parameters and FLOPs with mmengine's analyzer
# ---------------------------------------------------------------------------
def swap_acon_for_relu(model_cfg) -> List[str]:
    """Replace, in place, every ``acon_cfg`` / ``act_cfg`` of an ACON type
    (``AconA``, ``AconB``, ``AconC``, ``MetaAconC``, ``SwishBeta``) in a model
    config by ``dict(type='ReLU')``.

    Returns:
        list[str]: the swapped paths, e.g. ``['model.backbone.acon_cfg: AconC']``.
    """
    swapped = []

    def walk(node, path):
        if isinstance(node, dict):
            for k in list(node.keys()):
                v = node[k]
                if k in ('acon_cfg', 'act_cfg') and isinstance(v, dict):
                    t = v.get('type')
                    tname = t if isinstance(t, str) else getattr(t, '__name__', '')
                    if tname in ACON_TYPES:
                        node[k] = dict(type='ReLU')
                        swapped.append(f'{path}.{k}: {tname}')
                        continue
                walk(v, f'{path}.{k}')
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f'{path}[{i}]')

    walk(model_cfg, 'model')
    return swapped


@contextmanager
def naive_acon_ops():
    """Route the ACON layers through the plain-op formula while tracing, so
    that the analyzer sees its real elementwise ops (a fused autograd Function
    would be one opaque ``prim::PythonOp``)."""
    from .. import ops
    if hasattr(ops, 'acon_impl'):  # the fused op's own switch
        with ops.acon_impl('naive'):
            yield
        return
    import importlib
    acon_module = importlib.import_module('acon_mm.activations.acon')
    old = getattr(acon_module, 'acon', None)
    acon_module.acon = acon_naive
    try:
        yield
    finally:
        acon_module.acon = old


def _numel(value) -> int:
    from mmengine.analysis.jit_handles import get_shape
    shape = get_shape(value)
    return int(np.prod(shape)) if shape else 1


def _out_elementwise(inputs, outputs) -> int:
    """One FLOP per output element."""
    return _numel(outputs[0])


def _in_reduction(inputs, outputs) -> int:
    """One FLOP per input element (a sum over the reduced dims)."""
    return _numel(inputs[0])


#: Ops counted at one FLOP per element by ``get_flops.py`` on top of
#: mmengine's defaults (which ignore elementwise ops).
ELEMENTWISE_OPS = {
    **{op: _out_elementwise for op in (
        'aten::add', 'aten::add_', 'aten::sub', 'aten::sub_', 'aten::rsub',
        'aten::mul', 'aten::mul_', 'aten::div', 'aten::div_', 'aten::sigmoid',
        'aten::sigmoid_', 'aten::relu', 'aten::relu_', 'aten::silu',
        'aten::silu_', 'aten::abs', 'aten::neg', 'aten::exp', 'aten::tanh',
        'aten::clamp', 'aten::clamp_', 'aten::hardtanh', 'aten::hardtanh_')},
    **{op: _in_reduction for op in ('aten::mean', 'aten::sum')},
}


def complexity(model: nn.Module, inputs: Tensor) -> dict:
    """Parameters and FLOPs of ``model`` on ``inputs`` with mmengine's analyzer.

    One trace with :class:`mmengine.analysis.FlopAnalyzer` (the counter behind
    :func:`mmengine.analysis.get_model_complexity_info`) with its default op
    handles plus :data:`ELEMENTWISE_OPS`; the counts are then split by op:

    * ``flops``: the default handles only, i.e. exactly what
      ``get_model_complexity_info`` reports — multiply-accumulates of convs,
      linear layers, norms, upsampling and pooling. Elementwise ops (ReLU,
      ACON's sigmoid and products, residual adds) are ignored there, so
      ACON-C's cost is invisible while meta-ACON's switch generator (real 1x1
      convs and BNs) is counted.
    * ``flops_elementwise``: ``flops`` plus one FLOP per element for every
      elementwise op of *every* layer (add, mul, sub, sigmoid, relu, ...) and
      one per input element for means. The ACON layers are traced through the
      plain formula (:func:`naive_acon_ops`): ACON-C is 6 elementwise ops per
      element (2 scalings, the beta product, sigmoid, product, add), ReLU 1.
    * ``params``: :func:`mmengine.analysis.parameter_count`.
    * ``acon_params`` / ``acon_flops`` / ``acon_flops_elementwise``: the part
      that belongs to the ACON modules themselves.
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.logging import MMLogger
    model.eval()
    acon_names = [n for n, _ in iter_acon_layers(model)]
    ew_names = {k.split('::', 1)[-1] for k in ELEMENTWISE_OPS}
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')  # the analyzer's notes on ignored ops
    try:
        with naive_acon_ops(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            analyzer = FlopAnalyzer(model, (inputs, )).set_op_handle(**ELEMENTWISE_OPS)
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            counts = analyzer.by_module_and_operator()
    finally:
        logger.setLevel(level)

    def split(name):
        c = counts.get(name, {})
        ew = sum(v for k, v in c.items() if k in ew_names)
        return sum(c.values()) - ew, sum(c.values())

    flops, flops_ew = split('')
    acon = [split(n) for n in acon_names]
    params = parameter_count(model)
    return dict(
        params=int(params['']), flops=int(flops), flops_elementwise=int(flops_ew),
        acon_layers=len(acon_names),
        acon_params=int(sum(params.get(n, 0) for n in acon_names)),
        acon_flops=int(sum(a[0] for a in acon)),
        acon_flops_elementwise=int(sum(a[1] for a in acon)),
        input_shape=list(inputs.shape))
