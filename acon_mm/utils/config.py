"""Walking mmengine configs."""
from typing import Any, Iterator, Tuple

__all__ = ['walk_dicts']


def walk_dicts(node: Any, path: str = '') -> Iterator[Tuple[str, dict]]:
    """Yield ``(dotted_path, dict)`` for ``node`` and every dict inside it.

    Lists and tuples are entered with ``[i]`` in the path, e.g.
    ``model.backbone.init_cfg`` or ``train_dataloader.dataset.pipeline[2]``.
    The dicts are yielded as they are (not copies), so a caller may edit them.
    """
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk_dicts(v, f'{path}.{k}' if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from walk_dicts(v, f'{path}[{i}]')
