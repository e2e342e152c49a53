r"""Per-layer analysis of a model's ACON layers, its files and plots
(``tools/analysis_tools/analyze_acon.py``)."""
import csv
import json
import math
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

from ..models.layers import MetaAconC, iter_acon_layers
from .curves import get_pyplot
from .model_loading import display_image
from .parameters import BetaRecorder, layer_parameters

__all__ = [
    'analyze_model', 'write_analysis', 'summary_text'
]

# ---------------------------------------------------------------------------
# the analysis
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
                    image = display_image(model, data['inputs'])
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
    plt = get_pyplot()
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
    plt = get_pyplot()
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
    plt = get_pyplot()
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
