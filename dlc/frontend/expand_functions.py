"""Operators newer than dlc's canonical opset, replaced by the ONNX function that defines them.

ONNX defines many operators of opsets 22 and later as functions of older ones
(https://onnx.ai/onnx/repo-docs/Functions.md): RMSNormalization and RotaryEmbedding (opset
23) by a context-dependent body built for the node's attributes and input types, Swish (24)
and SwiGLU by a fixed one. The version converter cannot take them down to opset 21 ("No
Previous Version"), so before it runs, each such node of the main graph becomes the nodes of
its body, renamed as the official `_expanded` node tests are built (onnx's
backend/test/case/node/__init__.py, function_expand_helper). The body's nodes then follow the
normal path: conversion to opset 21, folding, fusion and the native lowerings of each op.

Three operators of the canonical opset or before are expanded too, where their body compiles
and the operator has no lowering: MeanVarianceNormalization (its body at the model's opset;
ONNX's own inference of the unexpanded node fails on the body's Constant),
SoftmaxCrossEntropyLoss (LogSoftmax, then the NegativeLogLikelihoodLoss lowering) and
SpaceToDepth with mode=CRD (opset 28, which the version converter cannot take down).

Operators without an ONNX function get a body dlc writes (_OWN_BODIES), in opset-21 operators
that have lowerings: ai.onnx.ml's Binarizer, Y = Cast(X > threshold) to X's type
(https://onnx.ai/onnx/operators/onnx_aionnxml_Binarizer.html), and ArrayFeatureExtractor, a
Gather on the last axis; TreeEnsemble (ai.onnx.ml 5), every tree walked a level per step by
Gathers from its node tables; CumProd (opset 26), products
under a mask, as rules/cumulative.py lowers CumSum; TensorScatter (opset 24), a ScatterElements
with its indices spelt out; the optimizers of ai.onnx.preview.training (Adagrad, Adam,
Momentum), elementwise formulas; an inference Dropout whose mask output is read, Identity
and a mask of all true. Two only for some input types (_BY_INPUT_TYPE): BitShift of a signed X
(opset 28; ONNX inference at 21 refuses it), multiplying or dividing by a power of 2, and
OptionalGetElement of a plain tensor, an Identity.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.defs

from dialects.diagnostics import UnsupportedError
from dialects.onnx import CANONICAL_OPSET


def expand_newer_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each default-domain node whose operator came after CANONICAL_OPSET and has
    a function body replaced by that body (node order kept), again where a body holds such
    nodes (SwiGLU's holds a Swish); `model` itself when none does."""
    for _ in range(_MAX_DEPTH):
        expanded = _expand_once(model)
        if expanded is model:
            return model
        model = expanded
    return model


_MAX_DEPTH = 8  # function bodies nest one or two deep; this bounds a cyclic definition
_EXPANDED = "_expanded_"  # in the name of every node that comes from a body (as onnx's node tests name them)


def _expand_once(model: onnx.ModelProto) -> onnx.ModelProto:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    typed = any(n.op_type in _BY_INPUT_TYPE for n in model.graph.node)
    types = _value_types(model) if typed else None
    targets = [i for i, node in enumerate(model.graph.node)
               if (node.domain, node.op_type) in _OWN_BODIES or _is_inference_dropout_with_mask(node)
               or _by_input_type(node, types) is not None or version is not None and _body_schema(node, version)]
    if not targets:
        return model
    types = types or _value_types(model)
    nodes = []
    for i, node in enumerate(model.graph.node):
        if i not in targets:
            nodes.append(node)
            continue
        prefix = f"{node.name or node.op_type}_{i}{_EXPANDED}"
        own = _dropout_with_mask if _is_inference_dropout_with_mask(node) else \
            _by_input_type(node, types) or _OWN_BODIES.get((node.domain, node.op_type))
        if own is not None:
            nodes.extend(own(node, types, prefix, _constants(model)))
            continue
        schema = _body_schema(node, version)
        function = _function_of(schema, node, [types.get(name, onnx.TypeProto()) for name in node.input],
                                version)
        nodes.extend(_inline(_with_defaults(node, schema), function, prefix))
    expanded = onnx.ModelProto()
    expanded.CopyFrom(model)
    del expanded.graph.node[:]
    expanded.graph.node.extend(nodes)
    if version is None:  # an ai.onnx.ml-only model: the bodies' default-domain nodes need an import
        expanded.opset_import.append(onnx.helper.make_opsetid("", CANONICAL_OPSET))
    return expanded


class _Writer:
    """The nodes of a body dlc writes: constants named by the prefix, the other nodes after the
    node they replace (errors name it)."""

    def __init__(self, name: str, prefix: str):
        self.name, self.prefix = name, prefix
        self.nodes: list[onnx.NodeProto] = []

    def constant(self, label: str, array: np.ndarray) -> str:
        self.nodes.append(onnx.helper.make_node(
            "Constant", [], [self.prefix + label], name=self.prefix + label,
            value=onnx.numpy_helper.from_array(np.asarray(array), self.prefix + label)))
        return self.prefix + label

    def add(self, op_type: str, inputs: list[str], label: str, output: str | None = None, **attrs) -> str:
        self.nodes.append(onnx.helper.make_node(op_type, inputs, [output or self.prefix + label],
                                                name=f"{self.name}{_EXPANDED}{label}", **attrs))
        return output or self.prefix + label


def _binarizer(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
               constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """Binarizer (ai.onnx.ml): 1 where X > threshold, else 0, in X's type (NaN gives 0)."""
    threshold = next((a.f for a in node.attribute if a.name == "threshold"), 0.0)
    elem_type = types[node.input[0]].tensor_type.elem_type if node.input[0] in types else 0
    if not elem_type:
        raise UnsupportedError(f"node '{node.name}' (Binarizer): the element type of input 'X' "
                               f"({node.input[0]}) is unknown", "declare the input's type")
    helper = onnx.helper
    name = node.name or "Binarizer"
    return [
        helper.make_node("Constant", [], [prefix + "threshold"], name=prefix + "threshold",
                         value=helper.make_tensor("threshold", onnx.TensorProto.FLOAT, [], [threshold])),
        helper.make_node("Cast", [prefix + "threshold"], [prefix + "threshold_cast"],
                         name=prefix + "threshold_cast", to=elem_type),
        helper.make_node("Greater", [node.input[0], prefix + "threshold_cast"], [prefix + "above"],
                         name=f"{name}{_EXPANDED}Greater"),
        helper.make_node("Cast", [prefix + "above"], [node.output[0]], name=f"{name}{_EXPANDED}Cast",
                         to=elem_type),
    ]


def _dropout_with_mask(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
                       constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """Dropout in inference (no training_mode input) whose mask output is read: Y = X and a mask
    of all true, as the spec defines both (https://onnx.ai/onnx/operators/onnx__Dropout.html)."""
    helper = onnx.helper
    name = node.name or "Dropout"
    return [
        helper.make_node("Identity", [node.input[0]], [node.output[0]], name=f"{name}{_EXPANDED}Identity"),
        helper.make_node("Shape", [node.input[0]], [prefix + "shape"], name=prefix + "shape"),
        helper.make_node("ConstantOfShape", [prefix + "shape"], [node.output[1]],
                         name=f"{name}{_EXPANDED}mask",
                         value=helper.make_tensor("true", onnx.TensorProto.BOOL, [1], [True])),
    ]


def _cumprod(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
             constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """CumProd (opset 26, no ONNX function): as the CumSum lowering scans, a product over m of
    Where(m precedes i, x[m], 1) for each i, m on the axis (n^2 multiplies per slice). A
    run-time axis computes each candidate axis and selects the one named; the axis is normalised
    by a Gather from [0..rank) twice, so an axis outside [-rank, rank) fails the run there."""
    helper = onnx.helper
    name = node.name or "CumProd"
    x_type = types.get(node.input[0], onnx.TypeProto()).tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in x_type.shape.dim]
    if not x_type.HasField("shape") or None in dims or not dims:
        raise UnsupportedError(f"node '{name}' (CumProd): input 'x' needs a static shape of rank >= 1, "
                               f"got {dims if x_type.HasField('shape') else 'none'}")
    rank = len(dims)
    attributes = {a.name: a.i for a in node.attribute}
    relation = {(0, 0): np.less_equal, (1, 0): np.less, (0, 1): np.greater_equal,
                (1, 1): np.greater}[attributes.get("exclusive", 0), attributes.get("reverse", 0)]
    body = _Writer(name, prefix)
    nodes, constant, add = body.nodes, body.constant, body.add

    one = constant("one", np.ones((), onnx.helper.tensor_dtype_to_np_dtype(x_type.elem_type)))

    def along(axis: int, output: str | None = None) -> str:
        n = dims[axis]
        i, m = np.arange(n)[:, None], np.arange(n)[None, :]  # out[i] takes x[m] where relation(m, i)
        mask = constant(f"mask{axis}", relation(m, i).reshape([n, n] + [1] * (rank - 1 - axis)))
        spread = add("Unsqueeze", [node.input[0], constant(f"at{axis}", np.array([axis]))], f"spread{axis}")
        terms = add("Where", [mask, spread, one], f"terms{axis}")
        return add("ReduceProd", [terms, constant(f"over{axis}", np.array([axis + 1]))], f"prod{axis}",
                   output, keepdims=0)

    fixed = constants.get(node.input[1])
    if fixed is not None:
        if fixed.size != 1 or not -rank <= int(fixed.reshape(-1)[0]) < rank:
            raise UnsupportedError(f"node '{name}' (CumProd): input 'axis' is {fixed.reshape(-1).tolist()}; "
                                   f"expected one axis in [{-rank}, {rank})")
        along(int(fixed.reshape(-1)[0]) % rank, node.output[0])
        return nodes
    axis = add("Cast", [node.input[1]], "axis64", to=onnx.TensorProto.INT64)
    table = constant("axes", np.concatenate([np.arange(rank), np.arange(rank)]))
    shifted = add("Add", [axis, constant("rank", np.array(rank))], "shifted")
    named = add("Gather", [table, shifted], "axis")  # out of range: the run fails here
    result = along(0)
    for candidate in range(1, rank):
        is_it = add("Equal", [named, constant(f"value{candidate}", np.array(candidate))], f"is{candidate}")
        result = add("Where", [is_it, along(candidate), result], f"pick{candidate}",
                     node.output[0] if candidate == rank - 1 else None)
    if rank == 1:
        nodes.append(helper.make_node("Identity", [result], [node.output[0]], name=f"{name}{_EXPANDED}out"))
    return nodes


def _tensor_scatter(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
                    constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """TensorScatter (opset 24, no ONNX function): the update written into a copy of the cache
    at write_indices[b] + s along 'axis' (mod its size when circular), as one ScatterElements
    with the indices spelt out. A linear write past the cache's end fails the run there."""
    name = node.name or "TensorScatter"
    cache, update = (types.get(n, onnx.TypeProto()).tensor_type for n in node.input[:2])
    dims = [[d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] for t in (cache, update)]
    if not cache.HasField("shape") or not update.HasField("shape") or None in dims[0] + dims[1]:
        raise UnsupportedError(f"node '{name}' (TensorScatter): 'past_cache' and 'update' need static shapes")
    cache_dims, update_dims = dims
    rank = len(cache_dims)
    attributes = {a.name: a for a in node.attribute}
    axis = attributes["axis"].i if "axis" in attributes else -2
    if not 1 <= axis % max(rank, 1) < rank or not -rank <= axis < rank:
        raise UnsupportedError(f"node '{name}' (TensorScatter): axis {axis} must name a non-batch axis "
                               f"of the rank-{rank} cache")
    axis %= rank
    circular = "mode" in attributes and attributes["mode"].s == b"circular"
    body = _Writer(name, prefix)
    nodes, constant, add = body.nodes, body.constant, body.add

    steps = [1] * rank
    steps[axis] = update_dims[axis]
    index = constant("steps", np.arange(update_dims[axis], dtype=np.int64).reshape(steps))
    if len(node.input) > 2 and node.input[2]:
        starts = add("Reshape", [node.input[2], constant("per_batch", np.array([-1] + [1] * (rank - 1)))],
                     "starts")
        index = add("Add", [add("Cast", [starts], "starts64", to=onnx.TensorProto.INT64), index], "positions")
    if circular:
        index = add("Mod", [index, constant("length", np.array(cache_dims[axis], np.int64))], "wrapped")
    index = add("Expand", [index, constant("shape", np.array(update_dims, np.int64))], "indices")
    add("ScatterElements", [node.input[0], index, node.input[1]], "write", node.output[0], axis=axis)
    return nodes


def _optimizer(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
               constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """Adagrad, Adam and Momentum (ai.onnx.preview.training), one step of the optimizer per
    tensor group as onnx's reference computes it (onnx/reference/ops/aionnx_preview_training):
    elementwise formulas of R, the step count T (a run-time input: T > 0 selects the
    bias-corrected rate and coefficients) and each group's X, G and state."""
    op_type, name = node.op_type, node.name or node.op_type
    arity = {"Adagrad": 3, "Adam": 4, "Momentum": 3}[op_type]
    groups = (len(node.input) - 2) // arity
    attributes = {a.name: a for a in node.attribute}

    def number(attr: str, default: float) -> float:
        return attributes[attr].f if attr in attributes else default

    w = _Writer(name, prefix)
    x_type = types.get(node.input[2], onnx.TypeProto()).tensor_type.elem_type or onnx.TensorProto.FLOAT
    dtype = onnx.helper.tensor_dtype_to_np_dtype(x_type)

    def c(label: str, value: float) -> str:
        return w.constant(label, np.array(value, dtype))

    scalar = w.constant("scalar", np.zeros([0], np.int64))  # R and T are scalars, shaped or not
    r = w.add("Reshape", [w.add("Cast", [node.input[0]], "r_cast", to=x_type), scalar], "r")
    t = w.add("Reshape", [w.add("Cast", [node.input[1]], "t_cast", to=x_type), scalar], "t")
    started = w.add("Greater", [t, c("zero", 0.0)], "started")
    norm = c("norm", number("norm_coefficient", 0.0))
    if op_type == "Adagrad":
        rate = w.add("Div", [r, w.add("Add", [c("one", 1.0), w.add("Mul", [t, c("decay", number("decay_factor", 0.0))],
                                                                    "decayed")], "divisor")], "rate")
    elif op_type == "Adam":
        alpha, beta = number("alpha", 0.9), number("beta", 0.999)
        one = c("one", 1.0)
        corrected = w.add("Div", [w.add("Mul", [r, w.add("Sqrt", [w.add("Sub", [one, w.add(
            "Pow", [c("beta", beta), t], "beta_t")], "beta_left")], "beta_root")], "scaled"),
            w.add("Sub", [one, w.add("Pow", [c("alpha", alpha), t], "alpha_t")], "alpha_left")], "corrected")
        rate = w.add("Where", [started, corrected, r], "rate")
    else:
        alpha = c("alpha", number("alpha", 0.0))
        beta = w.add("Where", [started, c("beta", number("beta", 0.0)), c("one", 1.0)], "beta_now")
    for k in range(groups):
        x, g, *state = (node.input[2 + j * groups + k] for j in range(arity))
        out = [node.output[j * groups + k] if j * groups + k < len(node.output) else "" for j in range(arity - 1)]
        g = w.add("Add", [w.add("Mul", [norm, x], f"decay{k}"), g], f"g{k}")
        if op_type == "Adagrad":
            h = w.add("Add", [state[0], w.add("Mul", [g, g], f"g2_{k}")], f"h{k}", out[1] or None)
            root = w.add("Add", [w.add("Sqrt", [h], f"root{k}"), c(f"eps{k}", number("epsilon", 0.0))], f"den{k}")
            w.add("Sub", [x, w.add("Div", [w.add("Mul", [rate, g], f"step{k}"), root], f"ratio{k}")], f"x{k}",
                  out[0] or None)
        elif op_type == "Adam":
            v = w.add("Add", [w.add("Mul", [c(f"a{k}", alpha), state[0]], f"va{k}"),
                              w.add("Mul", [c(f"a1_{k}", 1 - alpha), g], f"vg{k}")], f"v{k}", out[1] or None)
            h = w.add("Add", [w.add("Mul", [c(f"b{k}", beta), state[1]], f"hb{k}"),
                              w.add("Mul", [c(f"b1_{k}", 1 - beta), w.add("Mul", [g, g], f"g2_{k}")], f"hg{k}")],
                      f"h{k}", out[2] or None)
            root = w.add("Add", [w.add("Sqrt", [h], f"root{k}"), c(f"eps{k}", number("epsilon", 0.0))], f"den{k}")
            moved = w.add("Sub", [x, w.add("Mul", [rate, w.add("Div", [v, root], f"ratio{k}")], f"step{k}")],
                          f"moved{k}")
            w.add("Mul", [c(f"post{k}", 1 - number("norm_coefficient_post", 0.0)), moved], f"x{k}",
                  out[0] or None)
        else:
            v = w.add("Add", [w.add("Mul", [alpha, state[0]], f"va{k}"), w.add("Mul", [beta, g], f"vg{k}")],
                      f"v{k}", out[1] or None)
            nesterov = "mode" in attributes and attributes["mode"].s == b"nesterov"
            direction = w.add("Add", [g, w.add("Mul", [alpha, v], f"ahead{k}")], f"dir{k}") if nesterov else v
            w.add("Sub", [x, w.add("Mul", [r, direction], f"step{k}")], f"x{k}", out[0] or None)
    return w.nodes


def _array_feature_extractor(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
                             constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """ArrayFeatureExtractor (ai.onnx.ml): the last axis gathered at the (flattened) indices, a
    1-D X giving [1, k] as onnxruntime's does. An index out of range fails the run (Gather)."""
    w = _Writer(node.name or "ArrayFeatureExtractor", prefix)
    rank = len(types.get(node.input[0], onnx.TypeProto()).tensor_type.shape.dim)
    flat = w.add("Reshape", [node.input[1], w.constant("flat", np.array([-1], np.int64))], "indices")
    if rank == 1:
        picked = w.add("Gather", [node.input[0], flat], "gather")
        w.add("Unsqueeze", [picked, w.constant("row", np.array([0], np.int64))], "row", node.output[0])
    else:
        w.add("Gather", [node.input[0], flat], "gather", node.output[0], axis=-1)
    return w.nodes


_SIGNED = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64})


def _is_signed_bit_shift(node: onnx.NodeProto, types: dict[str, onnx.TypeProto] | None) -> bool:
    """BitShift of a signed X (opset 28): ONNX inference at the canonical opset refuses it."""
    if node.op_type != "BitShift" or node.domain not in ("", "ai.onnx") or not types or not node.input:
        return False
    return types.get(node.input[0], onnx.TypeProto()).tensor_type.elem_type in _SIGNED


def _signed_bit_shift(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
                      constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """BitShift of a signed X (opset 28) by multiplying and dividing by p = 2^y, read from a
    constant table of the type (2^(width-1) is its minimum): a left shift is x * p (integer
    multiplication wraps, discarding the bits past the sign bit), an arithmetic right shift
    of x >= 0 is x / p (truncation is the floor there; x / minimum is 0), of x < 0 it is
    ~((~x) / p). An amount outside [0, width) gives 0, or -1 for a right shift of a negative
    x, the spec's sign fill (the table is read at amount 0 then)."""
    name = node.name or "BitShift"
    signed = types[node.input[0]].tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(signed)
    width = 8 * dtype.itemsize
    direction = next((a.s.decode() for a in node.attribute if a.name == "direction"), "")
    body = _Writer(name, prefix)
    x, y = node.input[0], node.input[1]
    zero = body.constant("zero", np.zeros((), dtype))
    powers = body.constant("powers", np.array([1 << k for k in range(width)], np.uint64).astype(dtype))
    inside = body.add("And", [body.add("GreaterOrEqual", [y, zero], "not_negative"),
                              body.add("Less", [y, body.constant("width", np.array(width, dtype))], "below_width")],
                      "in_range")
    at = body.add("Cast", [body.add("Where", [inside, y, zero], "amount")], "index", to=onnx.TensorProto.INT64)
    power = body.add("Gather", [powers, at], "power")
    if direction == "LEFT":
        body.add("Where", [inside, body.add("Mul", [x, power], "shifted"), zero], "result", node.output[0])
        return body.nodes
    negative = body.add("Less", [x, zero], "negative")
    magnitude = body.add("Where", [negative, body.add("BitwiseNot", [x], "flipped"), x], "nonnegative")
    shifted = body.add("Where", [inside, body.add("Div", [magnitude, power], "quotient"), zero], "shifted")
    body.add("Where", [negative, body.add("BitwiseNot", [shifted], "unflip"), shifted], "result", node.output[0])
    return body.nodes


def _tree_ensemble(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
                   constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """TreeEnsemble (ai.onnx.ml 5): every tree walked at once, one step a level: the trees' nodes
    and leaves in one table (a leaf loops to itself), each step gathers the node's feature of
    X, compares it with the node's split (or set: MEMBER), and takes the true or false child;
    after the deepest tree's depth, each tree's leaf gives a weight for its target, aggregated
    by SUM/AVERAGE/MIN/MAX; a target no tree reaches is 0, as onnxruntime has it (onnx.reference
    leaves the type's max/min there for MIN/MAX). post_transform NONE only."""
    name = node.name or "TreeEnsemble"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    as_array = {k: onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
                for k, v in attrs.items()}
    if int(attrs.get("post_transform", 0)) != 0:
        raise UnsupportedError(f"node '{name}' (TreeEnsemble): post_transform {attrs['post_transform']} is not "
                               "supported (dlc lowers NONE)", "apply the transform after the node")
    x_type = types.get(node.input[0], onnx.TypeProto()).tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(x_type.elem_type) if x_type.elem_type else np.float32
    modes, features = as_array["nodes_modes"].astype(np.int64), as_array["nodes_featureids"].astype(np.int64)
    splits = as_array["nodes_splits"].astype(dtype)
    true_ids, false_ids = as_array["nodes_truenodeids"], as_array["nodes_falsenodeids"]
    true_leaf, false_leaf = as_array["nodes_trueleafs"], as_array["nodes_falseleafs"]
    leaf_targets, leaf_weights = as_array["leaf_targetids"].astype(np.int64), as_array["leaf_weights"].astype(dtype)
    roots, targets = [int(r) for r in as_array["tree_roots"]], int(attrs.get("n_targets", 1))
    tracks = as_array.get("nodes_missing_value_tracks_true", np.zeros(len(modes), np.int64)).astype(bool)
    n = len(modes)
    if not len(leaf_weights) or np.any(modes > 6) or np.any(leaf_targets >= targets) or np.any(leaf_targets < 0):
        raise UnsupportedError(f"node '{name}' (TreeEnsemble): its modes, leaves or targets are out of range",
                               "fix the model's tree attributes")
    members = [[] for _ in range(n + len(leaf_weights))]
    values = iter(as_array.get("membership_values", np.zeros(0)).tolist())
    for k in range(n):  # the reference hands out each MEMBER node's set in node order, NaN-ended
        if modes[k] == 6:
            for value in values:
                if np.isnan(value):
                    break
                members[k].append(value)
    child = lambda ids, leaf: np.where(leaf.astype(bool), n + ids, ids).astype(np.int64)  # noqa: E731
    leaves = np.arange(n, n + len(leaf_weights), dtype=np.int64)
    table = {"true": np.concatenate([child(true_ids, true_leaf), leaves]),
             "false": np.concatenate([child(false_ids, false_leaf), leaves]),
             "feature": np.concatenate([features, np.zeros(len(leaves), np.int64)]),
             "split": np.concatenate([splits, np.zeros(len(leaves), dtype)]),
             "mode": np.concatenate([modes, np.full(len(leaves), -1, np.int64)]),
             "track": np.concatenate([tracks, np.zeros(len(leaves), bool)])}
    starts = [n + r if true_leaf[r] and false_leaf[r] and true_ids[r] == false_ids[r] else r for r in roots]

    def depth(k: int, seen: int) -> int:
        if k >= n:
            return 0
        if seen > n:
            raise UnsupportedError(f"node '{name}' (TreeEnsemble): its trees have a cycle", "fix the model")
        return 1 + max(depth(int(table["true"][k]), seen + 1), depth(int(table["false"][k]), seen + 1))

    steps = max(depth(s, 0) for s in starts)
    width = max(1, max(len(m) for m in members))
    member_table = np.full((len(members), width), np.nan, dtype)
    for k, m in enumerate(members):
        member_table[k, :len(m)] = m
    w = _Writer(name, prefix)
    c = {key: w.constant(key, value) for key, value in table.items()}
    x = node.input[0]
    rows = w.add("Shape", [x], "rows", start=0, end=1)
    current = w.add("Expand", [w.constant("starts", np.array([starts], np.int64)),
                               w.add("Concat", [rows, w.constant("trees", np.array([len(starts)], np.int64))],
                                     "grid", axis=0)], "start")
    last_axis = w.constant("last", np.array([-1], np.int64))
    for step in range(steps):
        def at(key: str, step=step, node_ids=current) -> str:
            return w.add("Gather", [c[key], node_ids], f"{key}{step}")

        value = w.add("GatherElements", [x, at("feature")], f"value{step}", axis=1)
        split, mode = at("split"), at("mode")
        tests = {0: ("LessOrEqual", value, split), 1: ("Less", value, split), 2: ("GreaterOrEqual", value, split),
                 3: ("Greater", value, split), 4: ("Equal", value, split)}
        outcome = w.add("Not", [w.add("Equal", [value, split], f"ne{step}")], f"neq{step}")  # mode 5
        for code, (op_type, a, b) in tests.items():
            result = w.add(op_type, [a, b], f"mode{code}_{step}")
            outcome = w.add("Where", [w.add("Equal", [mode, w.constant(f"code{code}_{step}", np.array(code))],
                                            f"is{code}_{step}"), result, outcome], f"pick{code}_{step}")
        if any(members):
            listed = w.add("Gather", [w.constant(f"members{step}", member_table), current], f"set{step}")
            hits = w.add("Equal", [w.add("Unsqueeze", [value, last_axis], f"column{step}"), listed], f"hits{step}")
            member = w.add("Cast", [w.add("ReduceMax", [w.add("Cast", [hits], f"hits_int{step}", to=6), last_axis],
                                          f"any{step}", keepdims=0)], f"member{step}", to=9)
            outcome = w.add("Where", [w.add("Equal", [mode, w.constant(f"code6_{step}", np.array(6))],
                                            f"is6_{step}"), member, outcome], f"pick6_{step}")
        if table["track"].any():
            outcome = w.add("Or", [outcome, w.add("And", [w.add("IsNaN", [value], f"nan{step}"), at("track")],
                                                  f"missing{step}")], f"tracked{step}")
        current = w.add("Where", [outcome, at("true"), at("false")], f"next{step}")
    leaf = w.add("Sub", [current, w.constant("first_leaf", np.array(n, np.int64))], "leaf")
    weight = w.add("Gather", [w.constant("leaf_weights", leaf_weights), leaf], "weight")
    target = w.add("Gather", [w.constant("leaf_targets", leaf_targets), leaf], "target")
    onehot = w.add("Equal", [w.add("Unsqueeze", [target, last_axis], "target_column"),
                             w.constant("target_ids", np.arange(targets, dtype=np.int64))], "onehot")
    spread = w.add("Unsqueeze", [weight, last_axis], "weight_column")
    aggregate = int(attrs.get("aggregate_function", 1))
    trees_axis = w.constant("trees_axis", np.array([1], np.int64))
    if aggregate in (0, 1):
        total = w.add("ReduceSum", [w.add("Where", [onehot, spread, w.constant("zero", np.zeros((), dtype))],
                                          "terms"), trees_axis], "total", keepdims=0)
        if aggregate == 1:
            w.add("Identity", [total], "result", node.output[0])
        else:
            w.add("Div", [total, w.constant("count", np.array(len(starts), dtype))], "result", node.output[0])
    elif aggregate in (2, 3):
        fill = np.finfo(dtype).max if aggregate == 2 else np.finfo(dtype).min
        extreme = w.add("ReduceMin" if aggregate == 2 else "ReduceMax",
                        [w.add("Where", [onehot, spread, w.constant("fill", np.array(fill, dtype))], "terms"),
                         trees_axis], "extreme", keepdims=0)
        reached = w.add("Cast", [w.add("ReduceMax", [w.add("Cast", [onehot], "onehot_int", to=6), trees_axis],
                                       "reached_int", keepdims=0)], "reached", to=9)
        w.add("Where", [reached, extreme, w.constant("zero", np.zeros((), dtype))], "result", node.output[0])
    else:
        raise UnsupportedError(f"node '{name}' (TreeEnsemble): aggregate_function {aggregate} is not one of 0-3",
                               "fix the model")
    return w.nodes


def _tensor_optional_get_element(node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str,
                                 constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """OptionalGetElement of a plain tensor (opset 18 allows one): the tensor itself."""
    return [onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                  name=f"{node.name or 'OptionalGetElement'}{_EXPANDED}Identity")]


def _is_tensor_input(node: onnx.NodeProto, types: dict[str, onnx.TypeProto] | None) -> bool:
    return bool(types) and bool(node.input) and types.get(node.input[0], onnx.TypeProto()).HasField("tensor_type")


# Operators written in other operators only for some input types: op type -> (whether, builder).
_BY_INPUT_TYPE = {"BitShift": (lambda node, types: _is_signed_bit_shift(node, types), _signed_bit_shift),
                  "OptionalGetElement": (_is_tensor_input, _tensor_optional_get_element)}


def _by_input_type(node: onnx.NodeProto, types: dict[str, onnx.TypeProto] | None):
    """The builder of `node`'s body when its input types call for one (else None)."""
    entry = _BY_INPUT_TYPE.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    return entry[1] if entry is not None and entry[0](node, types) else None


def _is_inference_dropout_with_mask(node: onnx.NodeProto) -> bool:
    return (node.op_type == "Dropout" and node.domain in ("", "ai.onnx") and len(node.output) > 1
            and bool(node.output[1]) and (len(node.input) < 3 or not node.input[2]))


# Operators without an ONNX function body whose body dlc writes: (domain, op type) -> builder.
_OWN_BODIES = {("ai.onnx.ml", "Binarizer"): _binarizer, ("", "CumProd"): _cumprod,
               ("", "TensorScatter"): _tensor_scatter,
               ("ai.onnx.ml", "ArrayFeatureExtractor"): _array_feature_extractor,
               ("ai.onnx.ml", "TreeEnsemble"): _tree_ensemble,
               **{("ai.onnx.preview.training", op): _optimizer for op in ("Adagrad", "Adam", "Momentum")}}
# Operators of the canonical opset (or before) with a body and no lowering: always expanded.
_EXPANDED_AT_ANY_OPSET = frozenset({"MeanVarianceNormalization", "SoftmaxCrossEntropyLoss"})


def _body_schema(node: onnx.NodeProto, version: int):
    """The node's schema at the model's opset when the operator is newer than the canonical
    opset (none at it) and has a body."""
    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, version, "")
    except onnx.defs.SchemaError:
        return None
    always = node.op_type in _EXPANDED_AT_ANY_OPSET or node.op_type == "SpaceToDepth" and any(
        a.name == "mode" and a.s == b"CRD" for a in node.attribute)  # DCR stays SpaceToDepth
    if schema.since_version <= CANONICAL_OPSET and not always:
        return None
    if _EXPANDED not in node.name and not always:
        try:  # the model's own operator that exists at the canonical opset is the version
            # converter's: Range's and ReduceLogSum's newer bodies (a Loop; axes only known
            # after folding) do not compile where the converted operators do. Nodes of a body
            # are expanded further (CausalConvWithState's CastLike at its opset).
            onnx.defs.get_schema(node.op_type, CANONICAL_OPSET, "")
            return None
        except onnx.defs.SchemaError:
            pass
    if not (schema.has_function or schema.has_context_dependent_function):
        return None
    if any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
        return None  # a body with subgraphs would need them renamed too; none of these has one
    return schema


def _function_of(schema, node: onnx.NodeProto, input_types: list[onnx.TypeProto],
                 version: int) -> onnx.FunctionProto:
    """The body written for the model's opset `version` (MeanVarianceNormalization has one for
    opset 13, where ReduceMean's axes are an attribute, and one for 18, where they are an input)."""
    function = onnx.FunctionProto()
    if schema.has_context_dependent_function:
        function.ParseFromString(schema.get_context_dependent_function(
            node.SerializeToString(), [t.SerializeToString() for t in input_types]))
    else:
        written = [v for v in schema.function_opset_versions if v <= version] or [schema.since_version]
        function.ParseFromString(schema.get_function_with_opset_version(max(written)))
    return function


def _inline(node: onnx.NodeProto, function: onnx.FunctionProto, prefix: str) -> list[onnx.NodeProto]:
    """The body's nodes with the function's inputs and outputs renamed to the node's, its
    internal values prefixed, and attribute references replaced by the node's attributes."""
    names = {formal: actual for formal, actual in zip(function.input, node.input)}
    names.update({formal: actual for formal, actual in zip(function.output, node.output) if actual})
    attributes = {a.name: a for a in node.attribute}

    def rename(name: str) -> str:
        return names.get(name, prefix + name if name else "")

    body = []
    for k, inner in enumerate(function.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.ClearField("input")
        copy.ClearField("output")
        copy.ClearField("attribute")
        copy.input.extend(rename(n) for n in inner.input)
        copy.output.extend(rename(n) for n in inner.output)
        for attr in inner.attribute:
            if attr.ref_attr_name:  # an omitted optional attribute stays omitted
                if attr.ref_attr_name in attributes:
                    copy.attribute.append(attributes[attr.ref_attr_name])
                    copy.attribute[-1].name = attr.name
            else:
                copy.attribute.append(attr)
        copy.name = f"{prefix}{inner.name or inner.op_type + str(k)}"  # errors name the original node
        body.append(copy)
    return body


def _with_defaults(node: onnx.NodeProto, schema) -> onnx.NodeProto:
    """The node with every attribute the schema defaults written out: a function body refers to
    its attributes by name (`ref_attr_name`), which an omitted one would leave dangling."""
    full = onnx.NodeProto()
    full.CopyFrom(node)
    present = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in present and attr.default_value.type != onnx.AttributeProto.UNDEFINED:
            default = onnx.AttributeProto()
            default.CopyFrom(attr.default_value)
            default.name = name
            full.attribute.append(default)
    return full


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The values of the model's small initializers (an own body may depend on them)."""
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer
            if np.prod(t.dims, dtype=np.int64) <= 64}


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Every value's type that ONNX shape inference knows (a context-dependent body depends on
    its inputs' element types)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 -- the importer's own inference reports a broken model
        inferred = model
    graph = inferred.graph
    types = {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}
    for tensor in graph.initializer:
        types.setdefault(tensor.name, onnx.helper.make_tensor_type_proto(tensor.data_type, tensor.dims))
    return types
