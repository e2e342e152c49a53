"""The members of an activation study and their configs
(:mod:`acon_mm.analysis.study`).

* :func:`load_members`: a family of configs that differ only in the
  activation (found from one of them by their shared name, e.g.
  ``retinanet_r50-{relu,swish,aconc,metaacon}_fpn_1x_coco.py``), or one base
  config with ``acon_cfg`` replaced per activation;
* :func:`config_differences` / :func:`check_family`: refuse members that
  differ in more than the activation;
* :func:`shorten_schedule`: an iteration-based schedule of ``iters``
  iterations from any config (the schedulers rescaled, validation and a
  checkpoint at the end), for quick studies and the demo.
"""
import copy
import hashlib
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from ..models.layers import ACON_TYPES
from ..models.layers.expression import GrammarError, canonical
from ..utils.config import walk_dicts

__all__ = [
    'ACTIVATION_TOKENS', 'StudyError', 'Member', 'find_family', 'load_members',
    'config_differences', 'check_family', 'shorten_schedule',
    'is_iter_based', 'family_name', 'check_members', 'activation_spec'
]

#: Activation names in config file names -> the activation type they select.
ACTIVATION_TOKENS = {
    'relu': 'ReLU', 'swish': 'SwishBeta', 'acona': 'AconA', 'aconb': 'AconB',
    'aconc': 'AconC', 'metaacon': 'MetaAconC'
}
_TYPE_TOKENS = {v: k for k, v in ACTIVATION_TOKENS.items()}
_TOKEN_RE = re.compile(r'(?<=[-_])(' + '|'.join(ACTIVATION_TOKENS) +
                       r')(?=[-_.]|$)')


class StudyError(RuntimeError):
    """A study cannot be planned, run or reported; the message says why."""


@dataclass
class Member:
    """One activation of a study.

    Attributes:
        name (str): short name, the run folders' prefix (``'relu'``).
        activation (str): the activation type of the config (``'ReLU'``).
        source (str): the config file it came from.
        cfg (Config): that config with ``--cfg-options`` and the activation
            applied.
    """
    name: str
    activation: str
    source: str
    cfg: Config = field(repr=False)


# ---------------------------------------------------------------------------
# members
# ---------------------------------------------------------------------------
def _token(path: str) -> Optional[re.Match]:
    found = list(_TOKEN_RE.finditer(osp.splitext(osp.basename(path))[0]))
    return found[0] if len(found) == 1 else None


def find_family(config: str) -> List[str]:
    """The configs next to ``config`` whose names differ from it only in the
    activation token (``relu``, ``swish``, ``acona``, ``aconb``, ``aconc``,
    ``metaacon``), in that order, ``config`` included.

    Raises:
        StudyError: the name holds no (or more than one) activation token.
    """
    m = _token(config)
    if m is None:
        raise StudyError(
            f'cannot tell the activation from the name of {config}: it must '
            f'hold exactly one of {list(ACTIVATION_TOKENS)} between - or _ '
            '(e.g. retinanet_r50-aconc_fpn_1x_coco.py). Pass the configs to '
            'compare, or one config with --activations.')
    stem = osp.splitext(osp.basename(config))[0]
    found = []
    for tok in ACTIVATION_TOKENS:
        name = stem[:m.start()] + tok + stem[m.end():] + '.py'
        path = osp.join(osp.dirname(config), name)
        if osp.isfile(path):
            found.append(path)
    return found


def _load(path: str, cfg_options: Optional[dict]) -> Config:
    if not osp.isfile(path):
        raise StudyError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(copy.deepcopy(cfg_options))
    return cfg


def _get(cfg, key: str):
    node = cfg
    for part in key.split('.'):
        if not isinstance(node, (dict, Config)) or part not in node:
            return None
        node = node[part]
    return node


def _activation_of(cfg: Config) -> str:
    for _, d in walk_dicts(cfg.get('model', {}), 'model'):
        act = d.get('acon_cfg')
        if isinstance(act, dict) and act.get('type'):
            t = act['type']
            return t if isinstance(t, str) else getattr(t, '__name__', str(t))
    return '?'


def activation_spec(act: str) -> Tuple[str, str, dict]:
    """``(member name, activation, activation config)`` of an ``--activations`` item.

    A registered type (``'ReLU'``, ``'AconC'``, ...) gives ``dict(type=act)``; an
    expression of the search's grammar (``'max(x, sigmoid(x))'``: anything that is
    not a plain name) gives a ``SearchedActivation`` of it, named by its canonical
    form (the same function written twice is one member) and, for folders, by a
    slug of it with a short hash (``expr-max_sigmoid_x_x-1a2b3c``).

    Raises:
        StudyError: an expression outside the grammar (the token named).
    """
    if act.isidentifier():
        return _TYPE_TOKENS.get(act, act.lower()), act, dict(type=act)
    try:
        expr = canonical(act)
    except GrammarError as err:
        raise StudyError(f'--activations {act!r}: {err}') from None
    slug = re.sub(r'[^0-9a-zA-Z]+', '_', expr).strip('_')[:40]
    digest = hashlib.sha1(expr.encode()).hexdigest()[:6]
    return f'expr-{slug}-{digest}', expr, dict(type='SearchedActivation', expr=expr)


def load_members(configs: Sequence[str],
                 activations: Optional[Sequence[str]] = None,
                 activation_key: str = 'model.backbone.acon_cfg',
                 cfg_options: Optional[dict] = None) -> List[Member]:
    """The members of a study.

    Args:
        configs (list[str]): one config (its family is found by name, see
            :func:`find_family`) or the configs to compare.
        activations (list[str], optional): activation types (``'ReLU'``,
            ``'SwishBeta'``, ``'AconC'``, ``'MetaAconC'``, ...): one member
            per type, each the single config in ``configs`` with
            ``activation_key`` replaced by ``dict(type=<type>)``.
        activation_key (str): the dotted key the activations replace.
        cfg_options (dict, optional): ``--cfg-options`` applied to every
            member first.

    Raises:
        StudyError: a config is missing, the family has fewer than two
            members, ``activation_key`` is not in the config, or the base
            config starts the backbone from pretrained weights (they belong
            to one activation).
    """
    configs = list(configs)
    if activations:
        if len(configs) != 1:
            raise StudyError('--activations takes one base config, got '
                             f'{len(configs)}: {configs}')
        base = _load(configs[0], cfg_options)
        if not isinstance(_get(base, activation_key), dict):
            raise StudyError(f'{configs[0]}: no {activation_key} in the '
                             'config to replace; pass --activation-key')
        init = _get(base, 'model.backbone.init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            raise StudyError(
                f'{configs[0]}: model.backbone.init_cfg loads {init.get("checkpoint")!r}, '
                f'weights of one activation ({_activation_of(base)}); every member of '
                '--activations would start from them. Compare the config family '
                'instead (each with its own weights), or train from scratch with '
                '--cfg-options model.backbone.init_cfg=None')
        specs = [activation_spec(a) for a in activations]
        labels = [label for _, label, _ in specs]
        if len(set(labels)) != len(labels):
            raise StudyError(f'--activations lists a type twice: {activations}')
        members = []
        for name, label, act_cfg in specs:
            cfg = copy.deepcopy(base)
            parent, _, last = activation_key.rpartition('.')
            (_get(cfg, parent) if parent else cfg)[last] = ConfigDict(act_cfg)
            members.append(Member(name, label, configs[0], cfg))
        return members
    if len(configs) == 1:
        configs = find_family(configs[0])
        if len(configs) < 2:
            raise StudyError(
                f'{configs[0]} has no siblings differing in the activation '
                'only; pass the configs to compare, or --activations')
    names = [_token(c).group(1) if _token(c) else
             osp.splitext(osp.basename(c))[0] for c in configs]
    if len(set(names)) != len(names):
        names = [osp.splitext(osp.basename(c))[0] for c in configs]
    members = []
    for name, path in zip(names, configs):
        cfg = _load(path, cfg_options)
        members.append(Member(name, _activation_of(cfg), path, cfg))
    return members


# ---------------------------------------------------------------------------
# comparing the members
# ---------------------------------------------------------------------------
def _flatten(node, path='', out=None) -> Dict[str, str]:
    out = {} if out is None else out
    if isinstance(node, dict):
        if not node and path:
            out[path] = '{}'
        for k, v in node.items():
            _flatten(v, f'{path}.{k}' if path else str(k), out)
    elif isinstance(node, (list, tuple)):
        if not node:
            out[path] = repr(type(node)())
        for i, v in enumerate(node):
            _flatten(v, f'{path}[{i}]', out)
    else:
        out[path] = node if isinstance(node, (int, float, str, bool,
                                              type(None))) else repr(node)
    return out


def _masked(paths_by_member: List[Dict[str, object]]) -> set:
    """Keys that may differ: anything under ``acon_cfg``, under an ``act_cfg``
    of an ACON type in some member, the backbone's pretrained weights
    (``init_cfg.checkpoint`` and the ``prefix`` its state dict is read with,
    ``pretrained``); ``init_cfg.type`` (pretrained or not) is compared."""
    acon = set()
    for flat in paths_by_member:
        for k, v in flat.items():
            if k.endswith('act_cfg.type') and v in ACON_TYPES:
                acon.add(k[:-len('.type')])
    masked = set()
    for flat in paths_by_member:
        for k in flat:
            parts = re.split(r'[.\[]', k)
            if ('acon_cfg' in parts or k == 'work_dir'
                    or any(k == a or k.startswith(a + '.') for a in acon)
                    or re.search(r'backbone\.(init_cfg\.(checkpoint|prefix)|pretrained)$', k)):
                masked.add(k)
    return masked


def config_differences(members: Sequence[Member]) -> Dict[str, Dict[str, object]]:
    """Resolved config keys whose values differ between members, the
    activation keys masked (see :func:`_masked`).

    Returns:
        dict: ``{dotted key: {member name: value or '<absent>'}}``.
    """
    flats = [_flatten(m.cfg.to_dict()) for m in members]
    masked = _masked(flats)
    diffs = {}
    for key in sorted(set().union(*flats) - masked):
        vals = [f.get(key, '<absent>') for f in flats]
        if any(v != vals[0] for v in vals[1:]):
            diffs[key] = {m.name: v for m, v in zip(members, vals)}
    return diffs


def check_family(members: Sequence[Member], allow_differences: bool = False,
                 limit: int = 20) -> Dict[str, Dict[str, object]]:
    """Refuse members that differ in more than the activation.

    Returns:
        dict: the differences (empty, or allowed by ``allow_differences``).

    Raises:
        StudyError: naming each differing key with every member's value.
    """
    diffs = config_differences(members)
    if diffs and not allow_differences:
        lines = [f'  {k}: ' + ', '.join(f'{n}={v!r}' for n, v in d.items())
                 for k, d in list(diffs.items())[:limit]]
        more = len(diffs) - limit
        raise StudyError(
            'the members of this study differ in more than the activation '
            f'({len(diffs)} config keys besides acon_cfg, act_cfg of ACON types '
            'and the backbone init_cfg.checkpoint/prefix):\n' + '\n'.join(lines)
            + (f'\n  ... and {more} more' if more > 0 else '') + '\nmembers: '
            + ', '.join(f'{m.name}={m.source}' for m in members)
            + '\nCompare like with like, or pass --allow-differences.')
    return diffs


# ---------------------------------------------------------------------------
# a shorter schedule
# ---------------------------------------------------------------------------
def is_iter_based(train_cfg) -> bool:
    """Whether ``train_cfg`` is an iteration-based loop."""
    return 'Iter' in str(train_cfg.get('type', '')) or (
        'max_iters' in train_cfg and not train_cfg.get('by_epoch', False))


def shorten_schedule(cfg: Config, iters: int,
                     val_interval: Optional[int] = None) -> List[str]:
    """Make ``cfg`` train for ``iters`` iterations (in place).

    The loop becomes ``IterBasedTrainLoop(max_iters=iters)`` validating every
    ``val_interval`` (default: once, at the end). Each ``param_scheduler``
    keeps its shape: iteration boundaries (``begin``, ``end``, ``T_max``,
    ``milestones``) of an iteration-based config are scaled by
    ``iters / max_iters``; in an epoch-based config, epoch boundaries become
    iterations scaled by ``iters / max_epochs`` and iteration-based ones (a
    warm-up) are clipped to ``iters``. A checkpoint is saved every
    ``max(1, iters // 4)`` iterations and at the end, the logger writes at
    least ~10 lines (``interval <= iters // 10``).

    Returns:
        list[str]: what changed, one line each.
    """
    if iters < 1:
        raise StudyError(f'--iters must be >= 1, got {iters}')
    tc = cfg.train_cfg
    iter_based = is_iter_based(tc)
    old = tc.get('max_iters') if iter_based else tc.get('max_epochs')
    if not old:
        raise StudyError(f'config {cfg.filename}: train_cfg {dict(tc)} has '
                         'neither max_iters nor max_epochs')
    val_interval = val_interval or iters
    cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=iters,
                               val_interval=val_interval)
    unit = 'iterations' if iter_based else 'epochs'
    notes = [f'train_cfg: {old} {unit} -> IterBasedTrainLoop of {iters} '
             f'iterations, validation every {val_interval}']
    scheds = cfg.get('param_scheduler') or []
    if isinstance(scheds, dict):
        scheds = [scheds]
    for s in scheds:
        scale = s.get('by_epoch', True) or iter_based
        f = iters / old if scale else 1.0

        def conv(v, f=f):
            return min(iters, round(v * f))
        begin = conv(s.get('begin', 0))
        s['begin'] = begin
        if 'end' in s:
            s['end'] = max(begin + 1, conv(min(s['end'], 1e12)))
        if 'milestones' in s:
            s['milestones'] = [conv(m) for m in s['milestones']]
        if 'T_max' in s:
            s['T_max'] = (s['end'] - begin) if 'end' in s else conv(s['T_max'])
        s['by_epoch'] = False
        s.pop('convert_to_iter_based', None)
    cfg.param_scheduler = scheds
    if scheds:
        notes.append(f'param_scheduler: boundaries scaled to {iters} iterations')
    hooks = cfg.setdefault('default_hooks', ConfigDict())
    ckpt = hooks.setdefault('checkpoint', ConfigDict(type='AconCheckpointHook'))
    ckpt.update(by_epoch=False, interval=max(1, iters // 4), save_last=True)
    logger = hooks.setdefault('logger', ConfigDict(type='LoggerHook'))
    logger['interval'] = max(1, min(logger.get('interval', 50), iters // 10))
    cfg.setdefault('log_processor', ConfigDict())['by_epoch'] = False
    notes.append(f'checkpoint every {ckpt["interval"]} iterations, log every '
                 f'{logger["interval"]}')
    return notes




def family_name(config: str) -> str:
    """The config's name without its activation token
    (``retinanet_r50-aconc_fpn_1x_coco`` -> ``retinanet_r50_fpn_1x_coco``)."""
    stem = osp.splitext(osp.basename(config))[0]
    m = _token(config)
    return (stem[:m.start() - 1] + stem[m.end():]) if m else stem


def _reason(err: Exception) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else err
    return f'{type(err).__name__}: {text}'


def check_members(members: Sequence[Member]) -> None:
    """Check that every member can run, before the first one does.

    Each member's model is built (on the CPU, as ``tools/train.py`` would build it:
    an unknown activation type, a bad ``acon_cfg`` or any other build error shows
    here) and its local pretrained files are looked for. ``--dry-run`` runs this
    check too, so a dry run reports exactly the errors the real run would stop at.

    Args:
        members (list[Member]): the study's members (:func:`load_members`).

    Raises:
        StudyError: naming every member that cannot run, with its config and
            each problem, and saying that nothing was started.
    """
    from ..engine.runner_utils import find_missing_pretrained
    from .model_loading import build_model_from_cfg
    problems, weights_missing = [], False
    for m in members:
        found = []
        try:
            build_model_from_cfg(m.cfg)
        except Exception as err:  # noqa: BLE001 - every build error is named
            found.append(f'its model does not build: {_reason(err)}')
        for key, path in find_missing_pretrained(m.cfg):
            found.append(f'{key} = {path!r} does not exist')
            weights_missing = True
        if found:
            problems.append(f'  {m.name} ({m.source}): ' + '; '.join(found))
    if not problems:
        return
    hint = ''
    if weights_missing:
        hint = ('\nThe ImageNet weights: convert the official ones with '
                'tools/model_converters/acon_official_to_mm.py or train them with the '
                'configs/imagenet/ config the file name points to (docs/configs.md), or '
                'start every member from scratch with --cfg-options '
                'model.backbone.init_cfg=None.')
    raise StudyError(f'{len(problems)} of the {len(members)} members cannot run; '
                     'nothing was started:\n' + '\n'.join(problems) + hint)
