r"""The expression grammar of searched activations, and the paper's search space.

"Searching for Activation Functions" (Ramachandran, Zoph & Le, 2017) builds an
activation from *core units* :math:`b(u_1(x_1), u_2(x_2))`: unary functions
:math:`u` feed a binary function :math:`b`. This module holds

* the **grammar** of an activation written as text (Python syntax, parsed with
  :mod:`ast` and checked node by node, **never evaluated as Python**):

  - the input ``x``; numeric constants; ``eps`` (:data:`EPS`);
  - ``beta``: a trainable per-channel parameter, **each occurrence its own**;
    ``beta_1``, ``beta_2``, ...: trainable per-channel parameters **shared**
    wherever the same name appears (the paper's :math:`\beta x_1 + (1-\beta)x_2`
    is ``beta_1*x1 + (1 - beta_1)*x2``);
  - ``+ - * / **`` and unary ``-``;
  - the functions of :data:`FUNCTIONS` (``max``/``min`` of two arguments, the
    others of one);

* :func:`parse` (text -> :class:`Node` tree, with a :class:`GrammarError` naming
  the offending token and the valid names otherwise), :func:`canonical` (the
  stable name of an expression: the same function written twice, with operands
  of ``+``, ``*``, ``max``, ``min`` in another order, other spacing, parentheses
  or number spelling, gets one name; what checkpoints and reports record);
* :func:`compile_expression`: the tree compiled once into one
  :class:`torch.fx.GraphModule` ``f(x, beta_0, beta_1, ...)`` (no parsing and no
  walk over the tree at run time);
* the paper's space: the 25 :data:`UNARY` and 10 :data:`BINARY` functions
  (section 3 of the paper), as templates of this grammar over ``x`` (unary) and
  ``x1``, ``x2`` (binary), and :func:`core_unit` that composes them.

Choices the paper leaves open, made here: :data:`EPS` = 1e-5 in
:math:`\log(|x|+\epsilon)` and :math:`x_1/(x_2+\epsilon)`; ``sinc`` is the
unnormalised :math:`\sin(x)/x` (1 at 0), not :func:`torch.sinc`'s
:math:`\sin(\pi x)/(\pi x)`; ``sqrt`` is :func:`torch.sqrt` (NaN below 0: the
search rejects a candidate whose output is not finite on its probe); every
``beta`` starts at 1 (so ``x*sigmoid(beta*x)`` starts as SiLU and
``beta_1*x1 + (1 - beta_1)*x2`` as ``x1``).
"""
import ast
import math
import operator
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn.functional as F

__all__ = [
    'EPS', 'FUNCTIONS', 'NAMES', 'UNARY', 'BINARY', 'GrammarError', 'Node', 'parse',
    'canonical', 'canonical_beta_order', 'num_betas', 'depends_on_x',
    'compile_expression', 'core_unit', 'unsinc'
]

#: the epsilon of ``log(abs(x) + eps)`` and ``x1 / (x2 + eps)``
EPS = 1e-5
#: longest expression text accepted (a guard against pathological input)
MAX_LENGTH = 2000
#: deepest expression tree accepted
MAX_DEPTH = 64


def unsinc(x: torch.Tensor) -> torch.Tensor:
    """The unnormalised sinc, :math:`\\sin(x)/x` with value 1 at 0."""
    return torch.sinc(x / math.pi)


#: name -> (number of arguments, torch function) of every function of the grammar
FUNCTIONS: Dict[str, Tuple[int, object]] = {
    'abs': (1, torch.abs),
    'sqrt': (1, torch.sqrt),
    'exp': (1, torch.exp),
    'log': (1, torch.log),
    'sin': (1, torch.sin),
    'cos': (1, torch.cos),
    'sinh': (1, torch.sinh),
    'cosh': (1, torch.cosh),
    'tanh': (1, torch.tanh),
    'asinh': (1, torch.asinh),
    'atan': (1, torch.atan),
    'sinc': (1, unsinc),
    'sigmoid': (1, torch.sigmoid),
    'softplus': (1, F.softplus),
    'erf': (1, torch.erf),
    'max': (2, torch.maximum),
    'min': (2, torch.minimum),
}
#: every name an expression may use
NAMES = ('x', 'beta', 'beta_<k>', 'eps') + tuple(FUNCTIONS)

#: the paper's 25 unary functions, over ``x``
UNARY: Tuple[str, ...] = (
    'x', '-x', 'abs(x)', 'x**2', 'x**3', 'sqrt(x)', 'beta*x', 'x + beta',
    'log(abs(x) + eps)', 'exp(x)', 'sin(x)', 'cos(x)', 'sinh(x)', 'cosh(x)', 'tanh(x)',
    'asinh(x)', 'atan(x)', 'sinc(x)', 'max(x, 0)', 'min(x, 0)', 'sigmoid(x)',
    'softplus(x)', 'exp(-x**2)', 'erf(x)', 'beta')
#: the paper's 10 binary functions, over ``x1`` and ``x2``
BINARY: Tuple[str, ...] = (
    'x1 + x2', 'x1*x2', 'x1 - x2', 'x1/(x2 + eps)', 'max(x1, x2)', 'min(x1, x2)',
    'sigmoid(x1)*x2', 'exp(-beta*(x1 - x2)**2)', 'exp(-beta*abs(x1 - x2))',
    'beta_1*x1 + (1 - beta_1)*x2')


class GrammarError(ValueError):
    """An expression outside the grammar (the message names the token)."""


_ids = iter(range(1 << 62))


@dataclass(frozen=True)
class Node:
    """A node of an expression tree.

    ``op`` is ``'x'``, ``'const'`` (``value``), ``'eps'``, ``'beta'`` (``beta``:
    an identity shared by the occurrences of one parameter), ``'var'`` (a
    template's ``x1``/``x2``, ``value`` = 1 or 2), ``'neg'``, ``'add'``,
    ``'sub'``, ``'mul'``, ``'div'``, ``'pow'`` or a name of :data:`FUNCTIONS`.
    """
    op: str
    args: Tuple['Node', ...] = ()
    value: Optional[float] = None
    beta: Optional[int] = field(default=None, compare=True)


_BINOPS = {ast.Add: 'add', ast.Sub: 'sub', ast.Mult: 'mul', ast.Div: 'div',
           ast.Pow: 'pow'}
_PREC = {'add': 1, 'sub': 1, 'mul': 2, 'div': 2, 'neg': 3, 'pow': 4}
_COMMUTATIVE = ('add', 'mul', 'max', 'min')


def _valid_names() -> str:
    return ', '.join(NAMES)


def _where(text: str, node: ast.AST) -> str:
    col = getattr(node, 'col_offset', None)
    token = ast.get_source_segment(text, node) or type(node).__name__
    return f'{token!r}' + (f' (column {col + 1})' if col is not None else '')


def parse(text: str, variables: Sequence[str] = ('x', )) -> Node:
    """Parse ``text`` into a :class:`Node` tree, checking it against the grammar.

    Args:
        text (str): e.g. ``'max(x, sigmoid(x))'`` or ``'x*sigmoid(beta*x)'``.
        variables (Sequence[str]): the input names (``('x',)``; the binary
            templates use ``('x1', 'x2')``).

    Raises:
        GrammarError: not Python syntax, or any name, operator, call or
            constant outside the grammar; the message names the token, its
            column and the valid names.
    """
    if not isinstance(text, str):
        raise GrammarError(f'an activation expression is a str, got {text!r}')
    if len(text) > MAX_LENGTH:
        raise GrammarError(f'expression of {len(text)} characters; at most {MAX_LENGTH}')
    try:
        tree = ast.parse(text.strip(), mode='eval')
    except SyntaxError as err:
        raise GrammarError(f'{text!r} is not an expression: {err.msg} (column '
                           f'{err.offset})') from None
    text = text.strip()
    betas: Dict[str, int] = {}

    def build(n: ast.AST, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise GrammarError(f'{text!r} nests deeper than {MAX_DEPTH} levels')
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            return Node(_BINOPS[type(n.op)], (build(n.left, depth + 1),
                                              build(n.right, depth + 1)))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            inner = build(n.operand, depth + 1)
            return Node('neg', (inner, )) if isinstance(n.op, ast.USub) else inner
        if isinstance(n, ast.Constant):
            if isinstance(n.value, bool) or not isinstance(n.value, (int, float)) \
                    or not math.isfinite(n.value):
                raise GrammarError(f'constant {_where(text, n)} in {text!r}: only '
                                   'finite real numbers are constants of the grammar')
            return Node('const', value=float(n.value))
        if isinstance(n, ast.Name):
            if n.id in variables:
                return Node('x') if variables == ('x', ) else \
                    Node('var', value=float(variables.index(n.id) + 1))
            if n.id == 'eps':
                return Node('eps')
            if n.id == 'beta':
                return Node('beta', beta=next(_ids))
            if n.id.startswith('beta_') and n.id[5:].isdigit():
                return Node('beta', beta=betas.setdefault(n.id, next(_ids)))
            valid = _valid_names() if variables == ('x', ) else \
                ', '.join(tuple(variables) + NAMES[1:])
            raise GrammarError(f'unknown name {_where(text, n)} in {text!r}; valid '
                               f'names: {valid}')
        if isinstance(n, ast.Call):
            if not isinstance(n.func, ast.Name) or n.func.id not in FUNCTIONS:
                raise GrammarError(f'call of {_where(text, n.func)} in {text!r}: not a '
                                   f'function of the grammar; valid names: '
                                   f'{_valid_names()}')
            arity = FUNCTIONS[n.func.id][0]
            if n.keywords or len(n.args) != arity or \
                    any(isinstance(a, ast.Starred) for a in n.args):
                raise GrammarError(f'{_where(text, n)} in {text!r}: {n.func.id} takes '
                                   f'{arity} positional argument{"s" if arity > 1 else ""}')
            return Node(n.func.id, tuple(build(a, depth + 1) for a in n.args))
        kind = {ast.Attribute: 'attribute access', ast.Subscript: 'indexing',
                ast.Lambda: 'lambda', ast.Compare: 'comparison', ast.BoolOp: 'boolean '
                'operator', ast.IfExp: 'conditional'}.get(type(n), 'syntax')
        raise GrammarError(f'{kind} {_where(text, n)} in {text!r} is not part of the '
                           f'grammar (+ - * / **, unary -, numbers and the names: '
                           f'{_valid_names()})')

    return build(tree.body, 0)


def _walk(node: Node):
    yield node
    for a in node.args:
        yield from _walk(a)


def depends_on_x(node: Node) -> bool:
    """Whether ``x`` occurs in the expression."""
    return any(n.op in ('x', 'var') for n in _walk(node))


def _fmt_const(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def _flatten(node: Node, op: str) -> List[Node]:
    if node.op == op:
        return [leaf for a in node.args for leaf in _flatten(a, op)]
    return [node]


def _prec(node: Node) -> int:
    return _PREC.get(node.op, 5)


def _render(node: Node, names: Dict[int, str]) -> str:
    """The canonical text of ``node``; ``names``: beta identity -> its name."""
    op = node.op
    if op == 'x':
        return 'x'
    if op == 'var':
        return f'x{int(node.value)}'
    if op == 'eps':
        return 'eps'
    if op == 'const':
        return _fmt_const(node.value)
    if op == 'beta':
        return names.get(node.beta, 'beta')

    def sub(child: Node, paren_below: int) -> str:
        s = _render(child, names)
        return f'({s})' if _prec(child) < paren_below else s

    if op in ('add', 'mul'):
        # a - b or a / b inside a sum or product is parenthesised: ``a + b - c``
        # would read back as (a + b) - c, another tree
        inverse = 'sub' if op == 'add' else 'div'
        parts = sorted(_flatten(node, op), key=lambda n: _render(n, {}))
        texts = [f'({_render(p, names)})' if p.op == inverse else sub(p, _PREC[op])
                 for p in parts]
        return (' + ' if op == 'add' else '*').join(texts)
    if op in ('sub', 'div'):
        left, right = node.args
        sep = ' - ' if op == 'sub' else '/'
        return sub(left, _PREC[op]) + sep + sub(right, _PREC[op] + 1)
    if op == 'pow':
        left, right = node.args
        return sub(left, 5) + '**' + sub(right, 4)
    if op == 'neg':
        return '-' + sub(node.args[0], 4)
    args = node.args
    if op in _COMMUTATIVE:
        args = sorted(args, key=lambda n: _render(n, {}))
    return f'{op}(' + ', '.join(_render(a, names) for a in args) + ')'


def _canonical_tree(node: Node) -> Node:
    """``node`` with the operands of ``+ * max min`` in canonical order."""
    args = tuple(_canonical_tree(a) for a in node.args)
    if node.op in ('add', 'mul'):
        parts = sorted((leaf for a in args for leaf in _flatten(a, node.op)),
                       key=lambda n: _render(n, {}))
        out = parts[0]
        for p in parts[1:]:
            out = Node(node.op, (out, p))
        return out
    if node.op in ('max', 'min'):
        args = tuple(sorted(args, key=lambda n: _render(n, {})))
    return Node(node.op, args, node.value, node.beta)


def canonical_beta_order(node: Node) -> List[int]:
    """The beta identities of ``node`` in the order of their first occurrence in
    the canonical form: parameter ``i`` of the compiled module is the ``i``-th."""
    order: List[int] = []
    for n in _walk(_canonical_tree(node)):
        if n.op == 'beta' and n.beta not in order:
            order.append(n.beta)
    return order


def num_betas(node: Node) -> int:
    """The number of trainable parameters (``beta`` occurrences and distinct
    ``beta_<k>`` names)."""
    return len(canonical_beta_order(node))


def _beta_names(node: Node) -> Dict[int, str]:
    tree = _canonical_tree(node)
    counts: Dict[int, int] = {}
    for n in _walk(tree):
        if n.op == 'beta':
            counts[n.beta] = counts.get(n.beta, 0) + 1
    names, k = {}, 0
    for b in canonical_beta_order(node):
        if counts[b] > 1:
            k += 1
            names[b] = f'beta_{k}'
    return names


def canonical(expr: Union[str, Node]) -> str:
    """The canonical text of an expression: its stable name.

    The operands of ``+``, ``*``, ``max`` and ``min`` are sorted, spacing and
    parentheses are the minimal ones, numbers are written as Python's shortest
    repr (``1.0`` -> ``1``), a ``+x`` is ``x``, and shared betas are renamed
    ``beta_1``, ``beta_2``, ... in order of appearance (a ``beta_<k>`` used
    once is a plain ``beta``). ``canonical(canonical(e)) == canonical(e)``. No
    algebra is done: ``softplus(x)`` and ``log(1 + exp(x))`` keep two names (the
    search finds such pairs by their values).
    """
    node = parse(expr) if isinstance(expr, str) else expr
    return _render(_canonical_tree(node), _beta_names(node))


def _const_value(op: str, vals: List[float]) -> float:
    """Fold an operation on constants (computed in float64 with torch)."""
    t = [torch.tensor(v, dtype=torch.float64) for v in vals]
    return float(_torch_op(op)(*t))


def _torch_op(op: str):
    return {'add': operator.add, 'sub': operator.sub, 'mul': operator.mul,
            'div': operator.truediv, 'pow': torch.pow, 'neg': operator.neg
            }.get(op) or FUNCTIONS[op][1]


def compile_expression(node: Union[str, Node]) -> torch.fx.GraphModule:
    """Compile an expression once into ``f(x, beta_0, ..., beta_{k-1})``.

    The betas are the parameters in :func:`canonical_beta_order`; constant
    sub-expressions are folded; ``max``/``min`` with a constant become
    :func:`torch.clamp`. The result is a :class:`torch.fx.GraphModule`
    (deep-copyable, picklable, ``torch.compile``-able) whose generated
    ``forward`` runs the expression's few torch ops and nothing else.
    """
    node = parse(node) if isinstance(node, str) else node
    graph = torch.fx.Graph()
    x = graph.placeholder('x')
    order = canonical_beta_order(node)
    betas = {b: graph.placeholder(f'beta_{i}') for i, b in enumerate(order)}

    memo: Dict[Node, object] = {}  # a sub-expression used twice is computed once

    def emit(n: Node):
        if n not in memo:
            memo[n] = _emit(n)
        return memo[n]

    def _emit(n: Node):
        if n.op == 'x':
            return x
        if n.op == 'const':
            return n.value
        if n.op == 'eps':
            return EPS
        if n.op == 'beta':
            return betas[n.beta]
        if n.op == 'var':
            raise GrammarError('a template with x1/x2 is not an activation: compose it '
                               'with core_unit() first')
        args = [emit(a) for a in n.args]
        if all(isinstance(a, float) for a in args):
            return _const_value(n.op, args)
        if n.op in ('max', 'min') and any(isinstance(a, float) for a in args):
            c, t = (args[0], args[1]) if isinstance(args[0], float) else (args[1], args[0])
            kw = {'min': c} if n.op == 'max' else {'max': c}
            return graph.call_function(torch.clamp, (t, ), kw)
        if n.op in FUNCTIONS:
            fn = FUNCTIONS[n.op][1]
            return graph.call_function(fn, tuple(args))
        if n.op == 'pow' and isinstance(args[0], float):
            return graph.call_function(torch.pow, tuple(args))
        return graph.call_function(_torch_op(n.op), tuple(args))

    out = emit(node)
    if isinstance(out, float):
        raise GrammarError(f'{canonical(node)!r} does not depend on x or beta')
    graph.output(out)
    return torch.fx.GraphModule(torch.nn.Module(), graph, class_name='SearchedFunction')


def _substitute(node: Node, inputs: Dict[int, Node], fresh: Dict[int, int]) -> Node:
    if node.op == 'var':
        return inputs[int(node.value)]
    if node.op == 'beta':
        return Node('beta', beta=fresh.setdefault(node.beta, next(_ids)))
    return Node(node.op, tuple(_substitute(a, inputs, fresh) for a in node.args),
                node.value, node.beta)


def core_unit(binary: str, unary1: str, unary2: str,
              x1: Optional[Node] = None, x2: Optional[Node] = None) -> Node:
    """The core unit ``binary(unary1(x1), unary2(x2))`` as a tree.

    Args:
        binary (str): a template over ``x1``, ``x2`` (e.g. one of :data:`BINARY`).
        unary1, unary2 (str): templates over ``x`` (e.g. of :data:`UNARY`).
        x1, x2 (Node, optional): the unary functions' inputs (default ``x``; an
            earlier core unit's output for repeated core units).

    Every beta of the parts is its own parameter (a template's shared
    ``beta_<k>`` stays shared within that template only).
    """
    b = parse(binary, variables=('x1', 'x2'))
    u1 = _replace_x(parse(unary1), x1 or Node('x'))
    u2 = _replace_x(parse(unary2), x2 or Node('x'))
    return _substitute(b, {1: u1, 2: u2}, {})


def _replace_x(node: Node, by: Node) -> Node:
    """``node`` with ``x`` replaced by ``by`` (an earlier unit's output is one
    value: its betas stay the same parameters wherever it is used)."""
    if node.op == 'x':
        return by
    return Node(node.op, tuple(_replace_x(a, by) for a in node.args), node.value,
                node.beta)
