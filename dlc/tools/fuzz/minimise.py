"""Minimising a failing model: delta debugging (ddmin; Zeller and Hildebrandt, "Simplifying
and Isolating Failure-Inducing Input", TSE 2002) over its nodes, then a 1-minimal sweep.
A removed node's outputs are rerouted to a same-typed input, or become graph inputs."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper


def remove_nodes(model: onnx.ModelProto, drop: set[int]) -> onnx.ModelProto | None:
    """The model without nodes `drop`: each dropped output is rerouted to a same-typed,
    same-shaped input of its node, else it becomes a graph input; then dead nodes, inputs
    and weights go. None when nothing is left."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in list(inferred.graph.input) + list(inferred.graph.value_info)
             + list(inferred.graph.output)}
    for init in model.graph.initializer:
        types[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims))
    initializers = {i.name: i for i in model.graph.initializer}
    replacement: dict[str, str] = {}
    resolve = lambda n: replacement.get(n, n)
    new_inputs, kept = [], []
    for index, node in enumerate(model.graph.node):
        if index not in drop:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [resolve(n) if n else n for n in node.input]
            kept.append(copy)
            continue
        for out in node.output:
            if not out:
                continue
            same = [resolve(n) for n in node.input if n and n in types and out in types
                    and types[n] == types[out]]
            same.sort(key=lambda n: n in initializers)  # computed values first: keeps the graph live
            if same:
                replacement[out] = same[0]
            elif out in types and types[out].tensor_type.HasField("shape"):
                new_inputs.append(helper.make_value_info(out, types[out]))
            else:
                return None
    outputs, seen = [], set()
    for o in model.graph.output:
        name = resolve(o.name)
        if name in seen or name in initializers:
            continue
        seen.add(name)
        outputs.append(helper.make_value_info(name, types.get(name, o.type)))
    # Dead-code elimination from the outputs.
    live = {o.name for o in outputs}
    alive = []
    for node in reversed(kept):
        if any(o in live for o in node.output):
            alive.append(node)
            live.update(n for n in node.input if n)
    alive.reverse()
    if not alive:
        return None
    inputs = [i for i in list(model.graph.input) + new_inputs if i.name in live and i.name not in initializers]
    graph = helper.make_graph(alive, model.graph.name, inputs, outputs,
                              [i for name, i in initializers.items() if name in live])
    result = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="dlc.tools.fuzz")
    result.metadata_props.extend(model.metadata_props)  # hostile models carry their inputs there
    try:
        onnx.checker.check_model(result, full_check=True)
    except Exception:  # noqa: BLE001 (an invalid candidate is simply not taken)
        return None
    return result


def minimise(model: onnx.ModelProto, still_fails: Callable[[onnx.ModelProto], bool],
             budget_s: float = 120.0) -> onnx.ModelProto:
    """The smallest model found that `still_fails` (ddmin over nodes, then a 1-minimal sweep)."""
    deadline = time.monotonic() + budget_s
    if len(model.graph.output) > 1:  # one output that still fails is enough
        for output in model.graph.output:
            candidate = onnx.ModelProto()
            candidate.CopyFrom(model)
            del candidate.graph.output[:]
            candidate.graph.output.append(output)
            candidate = remove_nodes(candidate, set())
            if candidate is not None and still_fails(candidate):
                model = candidate
                break
    n = 2
    while len(model.graph.node) >= 2 and time.monotonic() < deadline:
        count = len(model.graph.node)
        chunks = [list(c) for c in np.array_split(np.arange(count), min(n, count)) if len(c)]
        reduced = False
        # Try a chunk alone first (big steps), then each complement.
        for keep in [set(c) for c in chunks] + [set(range(count)) - set(c) for c in chunks]:
            if len(keep) == count or time.monotonic() > deadline:
                continue
            candidate = remove_nodes(model, set(range(count)) - keep)
            if candidate is not None and len(candidate.graph.node) < count and still_fails(candidate):
                model, reduced = candidate, True
                n = max(n - 1, 2) if len(keep) > count / n else 2
                break
        if not reduced:
            if n >= count:
                break
            n = min(count, 2 * n)
    changed = True
    while changed and time.monotonic() < deadline:  # 1-minimal: no single node can go
        changed = False
        for index in range(len(model.graph.node)):
            candidate = remove_nodes(model, {index})
            if candidate is not None and still_fails(candidate):
                model, changed = candidate, True
                break
    return model
