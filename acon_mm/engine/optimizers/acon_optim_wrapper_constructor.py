"""The official ACON weight-decay rule as an mmengine optimiser-wrapper constructor.

The official ACON training code (``get_parameters`` in every ``utils.py``) puts
a parameter in the decayed group only if its name contains ``weight`` **and**
it has more than one dimension: conv and linear weights, meta-ACON's switch
convs ``fc1.weight``/``fc2.weight`` included. ACON's ``p1``, ``p2``, ``beta``,
Swish's ``beta``, every bias and every norm weight/bias get
``weight_decay=0``. mmdet/mmseg/mmpretrain configs decay everything, which
pulls ACON's switching parameters towards 0 (towards a linear unit) and is
not how the ImageNet weights were trained.

The rule is by name and shape, so a new activation with per-channel
``(1, C, 1, 1)`` parameters (4-d!) is handled as ACON's are only if its
parameters are not called ``*weight``: ACON's are ``p1``, ``p2``, ``beta``.

Use it in a config::

    optim_wrapper = dict(
        constructor='AconOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
"""
from typing import Dict, List, Optional

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS

__all__ = ['AconOptimWrapperConstructor', 'official_decay']

#: paramwise_cfg options that decide which parameters decay: they contradict
#: the official rule and are refused
CONFLICTING_PARAMWISE = ('bias_decay_mult', 'norm_decay_mult',
                         'dwconv_decay_mult', 'flat_decay_mult')


def official_decay(name: str, param: nn.Parameter) -> bool:
    """Whether the official rule decays parameter ``name``.

    Decayed: the name ends in ``weight`` and the tensor has more than one
    dimension (conv/linear weights). Not decayed: ``p1``, ``p2``, ``beta``,
    biases, norm weights and biases (1-d).
    """
    return name.endswith('weight') and param.ndim > 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class AconOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Two parameter groups as the official ACON code: decay / no decay.

    Without ``paramwise_cfg`` the optimiser gets two groups: the parameters
    :func:`official_decay` accepts, with the optimiser's ``weight_decay``, and
    all others with ``weight_decay=0`` (each group also carries
    ``decay=True/False``). With a ``paramwise_cfg`` (e.g. ``custom_keys`` with
    ``lr_mult``) mmengine's per-parameter groups are built first and the rule
    then sets ``weight_decay=0`` on every parameter it does not decay.

    Args:
        optim_wrapper_cfg (dict): as :class:`DefaultOptimWrapperConstructor`.
        paramwise_cfg (dict, optional): as :class:`DefaultOptimWrapperConstructor`,
            except the options that decide decay (``bias_decay_mult``,
            ``norm_decay_mult``, ``dwconv_decay_mult``, ``flat_decay_mult``,
            ``decay_mult`` in ``custom_keys``), which contradict the rule.

    Raises:
        ValueError: a conflicting ``paramwise_cfg`` option (named).
    """

    def __init__(self, optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        bad = [f'paramwise_cfg.{k}={self.paramwise_cfg[k]!r}'
               for k in CONFLICTING_PARAMWISE if k in self.paramwise_cfg]
        for key, opts in (self.paramwise_cfg.get('custom_keys') or {}).items():
            if isinstance(opts, dict) and 'decay_mult' in opts:
                bad.append(f'paramwise_cfg.custom_keys[{key!r}].decay_mult='
                           f'{opts["decay_mult"]!r}')
        if bad:
            raise ValueError(
                'AconOptimWrapperConstructor applies the official ACON '
                'weight-decay rule (decay only parameters named *weight with '
                'more than one dimension; none on p1, p2, beta, biases, '
                'norms), which ' + ', '.join(bad) + ' would contradict. '
                'Remove them (lr_mult in custom_keys is fine), or use '
                "constructor='DefaultOptimWrapperConstructor' for mmengine's "
                'own rules.')

    def _param_groups(self, model: nn.Module) -> List[dict]:
        names: Dict[int, str] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), name)
        if not self.paramwise_cfg:
            decay, no_decay = [], []
            for name, p in model.named_parameters():
                (decay if official_decay(name, p) else no_decay).append(p)
            groups = []
            if decay:
                groups.append(dict(params=decay, decay=True))
            if no_decay:
                groups.append(dict(params=no_decay, weight_decay=0.0,
                                   decay=False))
            return groups
        groups: List[dict] = []
        self.add_params(groups, model)
        for g in groups:
            ok = all(official_decay(names[id(p)], p) for p in g['params'])
            g['decay'] = ok
            if not ok:
                g['weight_decay'] = 0.0
        return groups

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):
            model = model.module
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        optimizer_cfg = self.optimizer_cfg.copy()
        optimizer_cfg['params'] = self._param_groups(model)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        # the registry made the groups ConfigDicts; torch.compile (mmengine's
        # compile=True compiles train_step, optimizer step included) cannot trace
        # those: plain dicts, as torch builds them
        optimizer.param_groups[:] = [
            {k: (list(v) if k == 'params' else v) for k, v in g.items()}
            for g in optimizer.param_groups]
        return OPTIM_WRAPPERS.build(optim_wrapper_cfg,
                                    default_args=dict(optimizer=optimizer))
