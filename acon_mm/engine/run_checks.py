"""The checks that stop a run before it starts: the weights a config loads.

:func:`~acon_mm.engine.runner_utils.prepare_run` (what ``tools/train.py`` and
``tools/test.py`` run first) calls them; each error names the culprit (file, key,
value) and the fix, and :func:`~acon_mm.engine.runner_utils.exit_on_setup_error`
turns it into ``ERROR: ...`` and exit status 2.

* :func:`check_pretrained_files`: a local ``Pretrained`` file that is missing
  (:class:`MissingPretrainedError`, with the converter or ImageNet config that
  writes it);
* :func:`check_remote_weights`: initial weights the model would download
  (``open-mmlab://``, ``torchvision://``, ``http(s)://``; e.g. the
  ``model.pretrained`` a stock mmseg config passes on) that are not in the local
  cache (:class:`RemoteWeightsError`);
* :func:`resolve_checkpoint` and :func:`check_trained_checkpoint`: the
  checkpoint ``tools/test.py`` evaluates exists (a file, or a work dir's latest)
  and fits the model key for key (:class:`MissingCheckpointError`,
  :class:`~acon_mm.models.utils.CheckpointMismatchError`).
"""
import os.path as osp
from typing import Any, List, Optional, Tuple

import torch
from mmengine.config import Config

from ..models.utils.checkpoint_fit import CheckpointMismatchError, check_checkpoint_fits
from ..models.utils.pretrained import OFFICIAL_WEIGHTS
from ..utils.config import walk_dicts
from ..utils.io import safe_torch_load
from .checkpoint import find_latest_checkpoint

__all__ = [
    'CONVERTER', 'IMAGENET_CONFIG_DIR', 'MissingPretrainedError', 'MissingCheckpointError',
    'find_missing_pretrained', 'check_pretrained_files', 'resolve_checkpoint',
    'check_trained_checkpoint', 'RemoteWeightsError', 'REMOTE_WEIGHT_SCHEMES',
    'find_remote_weights', 'torchvision_layout', 'weight_url', 'download_cache_path',
    'check_remote_weights',
    'check_dataset_classes'
]

CONVERTER = 'tools/model_converters/acon_official_to_mm.py'


class MissingPretrainedError(FileNotFoundError):
    """A ``Pretrained`` ``init_cfg`` names a local file that does not exist."""


class RemoteWeightsError(MissingPretrainedError):
    """The model would download its initial weights at start, and they are not in
    the local cache (``tools/train.py --allow-download`` lets it)."""


class MissingCheckpointError(FileNotFoundError):
    """The checkpoint to test (``tools/test.py CONFIG CHECKPOINT``) does not exist."""


def resolve_checkpoint(path: str) -> str:
    """The checkpoint a tool loads, given a file or a work dir.

    What ``tools/test.py`` and the analysis tools accept as ``CHECKPOINT``: a
    ``.pth`` file as it is, or the work dir of a training run, whose newest
    complete checkpoint is used (:func:`~acon_mm.engine.checkpoint.find_latest_checkpoint`:
    the ``last_checkpoint`` pointer mmengine writes, else the complete
    ``iter_N.pth`` / ``epoch_N.pth`` with the largest ``N``).

    Raises:
        MissingCheckpointError: ``path`` is neither a file nor a work dir that
            holds a complete checkpoint.
    """
    if osp.isdir(path):
        found = find_latest_checkpoint(path)
        if found is None:
            raise MissingCheckpointError(
                f'work dir {path!r} holds no complete checkpoint (no last_checkpoint '
                'pointing to one, no iter_*.pth or epoch_*.pth): train first, or give '
                'the .pth file')
        return found
    if not osp.isfile(path):
        raise MissingCheckpointError(
            f'checkpoint {path!r} does not exist (give a .pth file, or the work dir of '
            'a training run: its latest checkpoint is used)')
    return path


def _is_local(path: Any) -> bool:
    return isinstance(path, str) and '://' not in path


#: the configs that pretrain backbones on ImageNet (tools/train.py writes
#: work_dirs/<config name>/iter_<N>.pth)
IMAGENET_CONFIG_DIR = 'configs/imagenet'


def _imagenet_config_for(ckpt: str) -> Optional[str]:
    """``configs/imagenet/<name>.py`` if ``ckpt`` is in ``.../<name>/``."""
    parent = osp.basename(osp.dirname(osp.normpath(ckpt)))
    cfg = osp.join(IMAGENET_CONFIG_DIR, parent + '.py')
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    found = parent and (osp.isfile(cfg) or osp.isfile(osp.join(root, cfg)))
    return cfg if found else None


def _hint(ckpt: str) -> str:
    name = osp.basename(ckpt)
    imagenet_cfg = _imagenet_config_for(ckpt)
    if imagenet_cfg is not None:
        act = next((a for a in ('relu', 'swish') if a in imagenet_cfg), None)
        lead = ('There is no official ImageNet checkpoint of this activation '
                'in the ACON layout: pretrain it' if act else
                'It is written by ImageNet pretraining')
        return (f'{lead} with the official recipe:\n'
                f'    python tools/train.py {imagenet_cfg}\n'
                f'(or point the init_cfg to another checkpoint of that run)')
    if any(k in ckpt for k in ('relu', 'swish')):
        return (
            'There is no official ImageNet checkpoint of this activation in '
            'the ACON layout: pretrain the same backbone on ImageNet with a '
            f'config of {IMAGENET_CONFIG_DIR}/ (python tools/train.py '
            f"{IMAGENET_CONFIG_DIR}/<network>-<activation>_...py) and load "
            "its checkpoint with prefix='backbone.'")
    arch = name.replace('_mm.pth', '')
    return (f'Convert the official ImageNet checkpoint first (from {OFFICIAL_WEIGHTS}):\n'
            f'    python {CONVERTER} <official {arch} checkpoint> {ckpt}')


def find_missing_pretrained(cfg: Config) -> List[Tuple[str, str]]:
    """``(config key, path)`` of each local ``Pretrained`` file that is missing."""
    missing = []
    for path, d in walk_dicts(cfg.get('model', {}), 'model'):
        if d.get('type') == 'Pretrained' and _is_local(d.get('checkpoint')) \
                and not osp.isfile(d['checkpoint']):
            missing.append((f'{path}.checkpoint', d['checkpoint']))
        if _is_local(d.get('pretrained')) and not osp.isfile(d['pretrained']):
            missing.append((f'{path}.pretrained', d['pretrained']))
    return missing


#: weight sources mmengine downloads (its CheckpointLoader schemes), not local files
REMOTE_WEIGHT_SCHEMES = ('open-mmlab://', 'openmmlab://', 'torchvision://', 'modelzoo://',
                         'mmcls://', 'http://', 'https://')
#: the backbones of this project: no URL holds weights in their layout
_ACON_BACKBONES = ('ResNetACON', 'ShuffleNetV2ACON')


def torchvision_layout(backbone: dict) -> bool:
    """Whether a ``ResNetACON`` config is mmdet's ``ResNet`` in all but name:
    ``acon_cfg=dict(type='ReLU'), conv_bias=False, style='pytorch'`` and the
    torchvision stem (no ``deep_stem``), into which torchvision's and mmdet's
    ReLU ImageNet weights (``torchvision://resnet50``) load as they are."""
    acon = backbone.get('acon_cfg') or {}
    return (backbone.get('type') == 'ResNetACON' and isinstance(acon, dict)
            and acon.get('type') == 'ReLU' and backbone.get('conv_bias') is False
            and backbone.get('style') == 'pytorch' and not backbone.get('deep_stem'))


def find_remote_weights(cfg: Config) -> List[Tuple[str, str]]:
    """``(config key, source)`` of every weight source of ``cfg.model`` that is
    downloaded when the model initialises: a ``Pretrained`` ``init_cfg``'s
    ``checkpoint`` or a ``pretrained`` key (e.g. the ``model.pretrained =
    'open-mmlab://resnet50_v1c'`` a stock mmseg config passes on to whatever
    backbone replaces its own) with one of :data:`REMOTE_WEIGHT_SCHEMES`."""
    found = []
    for path, d in walk_dicts(cfg.get('model', {}), 'model'):
        for key, src in ((f'{path}.checkpoint', d.get('checkpoint'))
                         if d.get('type') == 'Pretrained' else (None, None),
                         (f'{path}.pretrained', d.get('pretrained'))):
            if isinstance(src, str) and src.startswith(REMOTE_WEIGHT_SCHEMES):
                found.append((key, src))
    return found


def weight_url(source: str) -> Optional[str]:
    """The URL mmengine downloads ``source`` from (its own tables, offline), or
    None where they do not name one."""
    from mmengine.runner import checkpoint as ckpt
    scheme, _, name = source.partition('://')
    try:
        if scheme in ('http', 'https'):
            return source
        if scheme in ('torchvision', 'modelzoo'):
            return ckpt.get_torchvision_models()[name]
        if scheme in ('open-mmlab', 'openmmlab'):
            name = ckpt.get_deprecated_model_names().get(name, name)
            url = ckpt.get_external_models()[name]
            return url if url.startswith(('http://', 'https://')) else None
        if scheme == 'mmcls':
            return ckpt.get_mmcls_models()[name]
    except Exception:  # noqa: BLE001 - an unknown name: mmengine will say so
        return None
    return None


def download_cache_path(url: str) -> str:
    """Where a download of ``url`` is kept (``<torch hub dir>/checkpoints/<file>``,
    as mmengine's ``load_from_http`` keeps it): a file there loads offline."""
    from urllib.parse import urlparse
    return osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(urlparse(url).path))


def check_remote_weights(cfg: Config, allow_download: bool = False) -> List[str]:
    """Stop a run that would download its initial weights at start.

    Every source of :func:`find_remote_weights` that is not in the local download
    cache is an error before any data is loaded (offline it would end in a
    ``URLError`` after the model and the data are built), naming the key, the
    source, the URL and cache file, and the fix; under an acon-mm backbone it says
    that no URL holds weights in its layout (``model.pretrained=None``, the converted
    ACON weights in ``model.backbone.init_cfg``).

    Args:
        cfg (Config): the config as the tool will run it.
        allow_download (bool): ``--allow-download``: let them download.

    Returns:
        list[str]: what will be downloaded or loaded from the cache, to log.

    Raises:
        RemoteWeightsError: a source would be downloaded and ``allow_download``
            is False.
    """
    msgs, lines = [], []
    backbone = cfg.get('model', {}).get('backbone', {})
    acon_backbone = isinstance(backbone, dict) and backbone.get('type') in _ACON_BACKBONES \
        and not torchvision_layout(backbone)
    for key, src in find_remote_weights(cfg):
        url = weight_url(src)
        cache = download_cache_path(url) if url else None
        if cache and osp.isfile(cache):
            msgs.append(f'{key} = {src!r}: loaded from the download cache {cache}')
            continue
        if allow_download:
            msgs.append(f'{key} = {src!r}: downloaded from {url or src} (--allow-download)')
            continue
        lines.append(f'  {key} = {src!r}' + (f' (downloads {url} to {cache})' if url else ''))
        if acon_backbone and (key == 'model.pretrained' or key.startswith('model.backbone')):
            lines.append(
                f'  The backbone is {backbone["type"]}: no URL holds weights in its layout '
                '(these are ReLU weights of another network; a stock config passes its '
                '`model.pretrained` on to the backbone that replaces its own). Set '
                f'`{key}=None` (e.g. `--cfg-options {key}=None`) and load the converted '
                'ACON weights with model.backbone.init_cfg=dict(type=\'Pretrained\', '
                "checkpoint='checkpoints/<arch>_mm.pth') (docs/configs.md), or train from "
                'scratch.')
    if lines:
        raise RemoteWeightsError(
            f'config {cfg.filename or "<in memory>"} would download weights at start, and '
            'they are not in the local download cache:\n' + '\n'.join(lines) + '\n'
            'Offline this fails only after the model and the data are built. To download '
            'on purpose (a machine with network), pass --allow-download; or put the file '
            'at the cache path named above.')
    return msgs


def check_pretrained_files(cfg: Config) -> None:
    """Raise :class:`MissingPretrainedError` if pretrained weights are missing.

    The message names each missing file and its config key, the converter
    command that writes it, and how to train from scratch instead.
    """
    missing = find_missing_pretrained(cfg)
    if not missing:
        return
    lines = [f'config {cfg.filename or "<in memory>"} needs pretrained '
             'weights that are not there:']
    for key, ckpt in missing:
        lines.append(f'  {key} = {ckpt!r} (absolute: {osp.abspath(ckpt)}) '
                     'does not exist.')
        lines.append('  ' + _hint(ckpt).replace('\n', '\n  '))
    key0 = missing[0][0].rsplit('.', 2)[0]
    lines.append('To train from scratch instead, add '
                 f'`--cfg-options {key0}.init_cfg=None`.')
    raise MissingPretrainedError('\n'.join(lines))


def check_trained_checkpoint(cfg: Config, checkpoint: str) -> None:
    """Refuse ``checkpoint`` unless it fits ``cfg.model`` key for key and shape for
    shape (:func:`~acon_mm.models.utils.check_checkpoint_fits`).

    mmengine's runner loads ``load_from`` with ``strict=False`` and evaluates
    whatever it got; this builds the model on the CPU (in the config's scope) and
    compares it with the checkpoint first, before any data is loaded.

    Args:
        cfg (Config): the test config (its task's modules registered).
        checkpoint (str): the checkpoint to evaluate.

    Raises:
        CheckpointMismatchError: keys missing, unexpected or of another shape
            (counts and keys named; a backbone-only file named as such).
    """
    import copy

    from mmengine.registry import MODELS, DefaultScope
    ckpt = safe_torch_load(checkpoint, map_location='cpu')
    state_dict = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state_dict, dict):
        raise CheckpointMismatchError(f'checkpoint {checkpoint!r} holds no state dict')
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(copy.deepcopy(cfg.model))
    check_checkpoint_fits(model, state_dict, checkpoint,
                          getattr(cfg, 'filename', None) or 'the config')


#: annotation files above this size are not read before the run (COCO's own
#: train2017 is 450 MB, and its categories are the default ones)
_MAX_ANN_BYTES = 64 << 20


def check_dataset_classes(cfg: Config) -> None:
    """Refuse COCO-format datasets whose classes are none of their file's categories.

    acon-mm's :class:`~acon_mm.datasets.ValidatedCocoDataset` checks this itself;
    this covers the stock mmdet types (``CocoDataset`` and its subclasses) of a
    config that inherits a stock one, whose default classes are COCO's 80: on the
    generated demo data (``--data-root``) they would drop every image and end in
    numpy's ``need at least one array to concatenate``. Each annotation file of up
    to 64 MB is read before anything is built.

    Raises:
        DataValidationError: naming the file, its categories, the config's
            classes and how to set ``metainfo``.
    """
    import json

    from ..datasets.coco import ValidatedCocoDataset, check_coco_classes
    try:
        from mmdet.datasets import CocoDataset
        from mmdet.registry import DATASETS  # the root registry's get() skips children
    except ImportError:  # no mmdet: no COCO datasets to check
        return
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader') or {}
        for _, d in walk_dicts(loader.get('dataset') or {}, 'dataset'):
            if not isinstance(d.get('type'), str) or not isinstance(d.get('ann_file'), str):
                continue
            cls = DATASETS.get(d['type'])
            if not (isinstance(cls, type) and issubclass(cls, CocoDataset)) or \
                    issubclass(cls, ValidatedCocoDataset):
                continue
            path = osp.join(d.get('data_root') or '', d['ann_file'])
            if not osp.isfile(path) or osp.getsize(path) > _MAX_ANN_BYTES:
                continue
            with open(path) as f:
                names = [c.get('name') for c in json.load(f).get('categories', [])]
            classes = (d.get('metainfo') or {}).get('classes') or \
                cls.METAINFO.get('classes', ())
            check_coco_classes(path, names, list(classes))
