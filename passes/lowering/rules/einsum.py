"""Einsum: any equation of labelled operands as one sum-of-products linalg.generic.

Mirrors https://onnx.ai/onnx/operators/onnx__Einsum.html (numpy.einsum semantics): one loop
per distinct label, output labels parallel and the others reduced; a label repeated in an
operand reads its diagonal; `...` dims broadcast numpy-style; without `->` the output is
the ellipsis dims, then the labels used once, in alphabetical order.
"""

from __future__ import annotations

from collections import Counter

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.movement import is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, cst, dim


def _labels(op, term: str, rank: int | None, ellipsis: int) -> list[str]:
    """The labels of one term; `...` stands for the last `ellipsis` broadcast dims,
    right-aligned (named '.0', '.1', ... from the outermost)."""
    letters = term.replace("...", "")
    if term.count("...") > 1 or (letters and not letters.isalpha()):
        raise UnsupportedError(f"{op.describe()}: cannot parse the einsum term '{term}'")
    head, dots, tail = term.partition("...")
    if not dots:
        if rank is not None and len(term) != rank:
            raise UnsupportedError(f"{op.describe()}: term '{term}' has {len(term)} labels for a "
                                   f"rank-{rank} operand")
        return list(term)
    count = ellipsis if rank is None else rank - len(head) - len(tail)
    if count < 0:
        raise UnsupportedError(f"{op.describe()}: term '{term}' has more labels than its "
                               f"operand's rank {rank}")
    return [*head, *(f".{ellipsis - count + j}" for j in range(count)), *tail]


def _parse(op, shapes) -> tuple[list[list[str]], list[str]]:
    equation = op.attr("equation").replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        raise UnsupportedError(f"{op.describe()}: equation '{equation}' has {len(terms)} input "
                               f"terms for {len(shapes)} inputs")
    ellipsis = max((len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t),
                   default=0)
    labels = [_labels(op, t, len(s), ellipsis) for t, s in zip(terms, shapes)]
    if arrow:
        return labels, _labels(op, output, None, ellipsis)
    counts = Counter(label for term in labels for label in term)
    letters = sorted(label for label, n in counts.items() if n == 1 and not label.startswith("."))
    return labels, [f".{j}" for j in range(ellipsis)] + letters


@lowers("Einsum")
def lower_einsum(kb, op, ins, outs) -> None:
    out = outs[0]
    shapes = [v.type.get_shape() for v in ins]
    labels, out_labels = _parse(op, shapes)
    sizes: dict[str, int] = {}
    for term, shape in zip(labels, shapes):
        for label, size in zip(term, shape):
            known = sizes.setdefault(label, size)
            if known != size and not (label.startswith(".") and 1 in (known, size)):
                raise UnsupportedError(f"{op.describe()}: label '{label}' has sizes {known} and "
                                       f"{size}")
            sizes[label] = max(known, size)
    missing = [label for label in out_labels if label not in sizes]
    if missing or len(set(out_labels)) != len(out_labels):
        raise UnsupportedError(f"{op.describe()}: output labels {out_labels} must be distinct "
                               "input labels")
    kb.fill(out, 0)
    if is_empty(out) or any(is_empty(v) for v in ins):
        return
    # Loops: the output's labels in its order, then the reduced ones as they first appear.
    reduced = [label for term in labels for label in term if label not in out_labels]
    loops = list(dict.fromkeys([*out_labels, *reduced]))
    position = {label: i for i, label in enumerate(loops)}

    def operand_map(term, shape):  # a broadcast size-1 `...` dim reads index 0
        return affine_map(len(loops), [cst(0) if size == 1 and sizes[label] != 1
                                       else dim(position[label])
                                       for label, size in zip(term, shape)])

    def body(b, args):
        product = args[0]
        for value in args[1:len(ins)]:
            product = b.mul(product, value)
        return [b.add(args[len(ins)], product)]

    kb.generic(list(ins), [out],
               [*(operand_map(t, s) for t, s in zip(labels, shapes)),
                affine_map(len(loops), [dim(position[label]) for label in out_labels])],
               [PARALLEL if label in out_labels else REDUCTION for label in loops], body)
