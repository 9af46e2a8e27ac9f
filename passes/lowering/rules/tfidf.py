"""TfIdfVectorizer: counts of the pool's n-grams (with skips) in each row of integer tokens,
weighted as TF, IDF or TF-IDF.

Mirrors https://onnx.ai/onnx/operators/onnx__TfIdfVectorizer.html (opset 9) and its reference
implementation (onnx/reference/ops/op_tfidf_vectorizer.py, as onnxruntime): the pool lists
the n-grams by size (ngram_counts gives where each size starts in pool_int64s); those of a
size in [min_gram_length, max_gram_length] count. An n-gram of size g occurs at start s with
skip distance d when x[s + j*d] is its j-th token for every j < g, with d = 1 only for
unigrams, else d in 1..max_skip_count+1. Pool n-gram p adds its count to output column
ngram_indexes[p]; X [C] gives [max(ngram_indexes)+1], X [B, C] one row per input row. TF is
the count, IDF the n-gram's weight (1 without weights) where the count is positive, TFIDF
weight * count. weights[p] belongs to pool n-gram p (the spec, onnxruntime), so column
ngram_indexes[p] takes it; the reference applies weights[column], which agrees only when
ngram_indexes is the identity (every node test). Columns two n-grams share take the later's.
String pools (pool_strings) need string tensors, which dlc does not have.

How: the counted n-grams become constant tables (tokens padded to the longest, sizes, output
columns); counts[b, p] is a reduction over starts and skip distances, then each output
column sums its n-grams' counts and the weighting applies.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import IndexType, IntegerType, MemRefType

from dialects.diagnostics import UnsupportedError
from passes.lowering.rules import lowers
from passes.lowering.rules.elementwise import INT, require_kinds
from passes.lowering.rules.movement import is_empty
from passes.lowering.utils.linalg_builder import PARALLEL, REDUCTION, affine_map, dim

I64 = IntegerType(64)


def _constant(kb, op, hint: str, array: np.ndarray):
    """A compile-time table read in the kernel through memref.get_global."""
    return kb.constant(op, hint, array)


def _pool(op) -> list[tuple[list[int], int]]:
    """(tokens, output column) of each counted pool n-gram, in pool order."""
    pool = [int(v) for v in (op.attr("pool_int64s") or [])]
    if op.attr("pool_strings") is not None and not pool:
        raise UnsupportedError(f"{op.describe()}: pool_strings needs string tensors, which dlc does not support")
    starts = [int(v) for v in (op.attr("ngram_counts") or [])]
    indexes = [int(v) for v in (op.attr("ngram_indexes") or [])]
    low, high = int(op.attr("min_gram_length", 1)), int(op.attr("max_gram_length", 1))
    grams, number = [], 0
    for size, start in enumerate(starts, 1):
        end = starts[size] if size < len(starts) else len(pool)
        for first in range(start, end - size + 1, size):
            if low <= size <= high:
                if number >= len(indexes):
                    raise UnsupportedError(f"{op.describe()}: ngram_indexes has {len(indexes)} entries, fewer "
                                           "than the pool's n-grams")
                grams.append((pool[first:first + size], indexes[number]))
            number += 1
    seen = [tuple(t) for t, _ in grams]
    if len(set(seen)) != len(seen):
        raise UnsupportedError(f"{op.describe()}: the pool lists an n-gram twice; each must appear once")
    return grams


@lowers("TfIdfVectorizer")
def lower_tfidf(kb, op, ins, outs) -> None:
    x, out = ins[0], outs[0]
    require_kinds(op, [x], (INT,))
    shape = list(x.type.get_shape())
    if len(shape) not in (1, 2):
        raise UnsupportedError(f"{op.describe()}: input 'X' has shape {shape}; expected [C] or [B, C]")
    mode = op.attr("mode", "TF")
    if mode not in ("TF", "IDF", "TFIDF"):
        raise UnsupportedError(f"{op.describe()}: mode '{mode}' is not TF, IDF or TFIDF")
    out_shape = list(out.type.get_shape())
    columns = out_shape[-1]
    rows = shape[0] if len(shape) == 2 else 1
    length = shape[-1]
    if is_empty(out):
        return
    grams = _pool(op)
    weights = op.attr("weights")
    indexes = [int(v) for v in (op.attr("ngram_indexes") or [])]
    if any(c >= columns or c < 0 for c in indexes) or (weights is not None and 0 < len(weights) != len(indexes)):
        raise UnsupportedError(f"{op.describe()}: ngram_indexes or weights do not fit the output's {columns} "
                               "columns and the pool's n-grams (one weight per n-gram)")
    if weights is not None and len(weights) > 0:  # weights[p] is n-gram p's: column ngram_indexes[p]'s
        by_column = np.ones(columns, np.float32)
        by_column[indexes] = np.asarray(list(weights), np.float32)
        weights = by_column
    else:
        weights = None
    kb.fill(out, 0.0)
    if not grams or length == 0:
        return
    longest = max(len(t) for t, _ in grams)
    tokens = np.zeros((len(grams), longest), np.int64)
    for p, (t, _) in enumerate(grams):
        tokens[p, :len(t)] = t
    sizes = np.array([len(t) for t, _ in grams], np.int64)
    column_of = np.array([c for _, c in grams], np.int64)
    skips = int(op.attr("max_skip_count", 0)) + 1
    token_table = _constant(kb, op, "ngram_tokens", tokens)
    size_table = _constant(kb, op, "ngram_sizes", sizes)
    column_table = _constant(kb, op, "ngram_columns", column_of)
    distances = _constant(kb, op, "skip_distances", np.arange(1, skips + 1, dtype=np.int64))
    # counts[r, p] = occurrences of n-gram p in row r; loops (r, p, s, d).
    counts = kb.scratch(MemRefType(I64, [rows, len(grams)]))
    kb.fill(counts, 0)

    def count(b, args):
        first, distance, size, acc = args  # x[r, s], d, the n-gram's size
        i = b.on(IndexType())
        n = b.on(I64)
        r, p, s = b.index(0), b.index(1), b.index(2)
        single = n.compare("eq", size, n.const(1))
        hit = b.or_(b.xor(single, b.const(1, IntegerType(1))), n.compare("eq", distance, n.const(1)))
        step = b.index_from(distance)
        for j in range(longest):
            position = i.add(s, i.mul(step, i.const(j)))
            used = n.compare("gt", size, n.const(j))
            inside = i.cmp("ult", position, i.const(length))
            at = i.select(inside, position, i.const(0))
            token = first if j == 0 else b.on(x.type.element_type).load(x, [r, at] if len(shape) == 2 else [at])
            same = n.compare("eq", n.cast(token, I64), b.load(token_table, [p, i.const(j)]))
            ok = b.and_(inside, same)
            hit = b.and_(hit, b.or_(b.xor(used, b.const(1, IntegerType(1))), ok))
        return [n.add(acc, n.cast(hit, I64))]

    x_map = affine_map(4, [dim(0), dim(2)] if len(shape) == 2 else [dim(2)])
    kb.generic([x, distances, size_table], [counts],
               [x_map, affine_map(4, [dim(3)]), affine_map(4, [dim(1)]), affine_map(4, [dim(0), dim(1)])],
               [PARALLEL, PARALLEL, REDUCTION, REDUCTION], count)

    # out[r, o] = weighting of the sum of counts[r, p] over the n-grams p of column o.
    weight_table = _constant(kb, op, "idf_weights", weights) if weights is not None else None
    totals = kb.scratch(MemRefType(I64, [rows, columns]))
    kb.fill(totals, 0)

    def gather(b, args):
        n = b.on(I64)
        value, column, acc = args
        mine = n.compare("eq", column, b.index_to(b.index(1), I64))
        return [n.add(acc, n.select(mine, value, n.const(0)))]

    kb.generic([counts, column_table], [totals],
               [affine_map(3, [dim(0), dim(2)]), affine_map(3, [dim(2)]), affine_map(3, [dim(0), dim(1)])],
               [PARALLEL, PARALLEL, REDUCTION], gather)

    out_map = affine_map(2, [dim(0), dim(1)] if len(out_shape) == 2 else [dim(1)])

    def weigh(b, args):
        total = args[0]
        as_float = b.cast(total, b.type)
        weight = b.load(weight_table, [b.index(1)]) if weight_table is not None else b.const(1.0)
        if mode == "TF":
            return [as_float]
        if mode == "IDF":
            return [b.select(b.on(I64).compare("gt", total, b.on(I64).const(0)), weight, b.const(0.0))]
        return [b.mul(weight, as_float)]

    kb.generic([totals], [out], [affine_map(2, [dim(0), dim(1)]), out_map], [PARALLEL, PARALLEL], weigh)
