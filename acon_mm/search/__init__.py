"""The activation search of "Searching for Activation Functions" (Ramachandran,
Zoph & Le, 2017): its space as token sequences, the screening of candidates, the
RNN controller trained with PPO, and the exhaustive / random / controller
strategies. The layer that runs a found expression is
:class:`~acon_mm.models.layers.SearchedActivation`."""
from .controller import Controller
from .screen import Screened, probe_points, screen
from .space import SearchSpace, Tokens
from .strategies import (
    STRATEGIES,
    ControllerStrategy,
    ExhaustiveStrategy,
    Progress,
    RandomStrategy,
    Record,
    build_strategy,
    first_hit,
    run_search,
    search_step,
)

__all__ = [
    'Controller', 'Screened', 'probe_points', 'screen', 'SearchSpace', 'Tokens',
    'STRATEGIES', 'ControllerStrategy', 'ExhaustiveStrategy', 'RandomStrategy', 'Record',
    'Progress', 'search_step',    'build_strategy', 'first_hit', 'run_search'
]
