"""If, Loop and Scan (https://onnx.ai/onnx/operators/onnx__If.html, onnx__Loop.html, onnx__Scan.html)
as the plain nodes of their bodies, on the ONNX graph, inside the importer's fold loop.

- `If` whose condition folds to a constant (what exporters emit for shape-dependent code):
  the taken branch is inlined; outer-scope names and nested subgraphs resolve as before.
- `If` with a run-time condition: both branches are inlined and each output is a `Where` on
  the condition. Both branches then run, so the run-time checks of the untaken one must not
  fire: the index of a gather or scatter and the divisor of Div/Mod become `Where(taken, x,
  safe)` (index 0, divisor 1), equal to x wherever the result is kept; the few operators whose
  checks no safe input avoids (`_MAY_FAIL`) are refused, naming the node.
- `Loop` as a native loop (`_Expansion.native` says when): the node stays, its outputs typed by
  a Reshape each (ONNX infers no shape for them), and the importer makes its body a module of
  its own (`import_native_loop`; dialects/loop.py says how it goes through the phases and
  runs). Constant or run-time trip count, a condition the body computes (a `while` loop), scan
  outputs when their length is a constant, outer values, nested loops.
- Otherwise `Loop` with a constant trip count and `Scan` (trip count from the scanned axis):
  unrolled, as expand-recurrent unrolls LSTM/GRU, up to `MAX_UNROLLED_NODES` nodes; beyond,
  an error. A Loop whose body computes its condition is unrolled with a mask (each
  iteration's state is `Where(still running, new, old)`, checked inputs guarded as for If),
  with no scan outputs. Unrolled are: tiny loops (`UNROLL_MAX_NODES`: the copies fold and fuse
  across iterations) and state whose shape changes.
- `Scan` as a native loop too (`_Expansion.native_scan`): scanned over axis 0 (other axes are
  transposed there and back), the importer makes it an `onnx.Loop` whose body takes the
  scanned slices after the carried values (`dlc.num_scan_inputs`, `dlc.reverse`).
Why a body module rather than a region op carried through each phase: every pass of dlc is
written for one `@main` per module (form-kernels, kernels-to-linalg, plan-memory...); a body
that is a module of its own goes through all of them unchanged, with its own memory plan.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dialects.onnx import CANONICAL_OPSET
from dlc.errors import UnsupportedError

# Unrolled bodies above this many nodes would take minutes to compile: a 256-step Scan RNN
# (1,800 nodes unrolled) compiles in 33 s here, about 20 ms a node. A native loop is the way past.
MAX_UNROLLED_NODES = 4096
# A Loop of a constant trip count whose unrolled copies would hold at most this many nodes is
# unrolled; larger ones run natively (measured in benchmarks/README.md, "Native loops").
UNROLL_MAX_NODES = 64
# Operators whose lowering checks its inputs at run time (passes/lowering/utils/runtime_checks.py)
# or refuses constant ones at compile time: both would fire in a branch that was not taken.
_MAY_FAIL = {"TopK", "CumSum", "ReverseSequence", "OneHot", "Range", "HannWindow", "HammingWindow",
             "BlackmanWindow"}
# Operators that check one input at run time -> (that input, a value that always passes): index 0
# (in range of any non-empty axis) for the gathers and scatters, divisor 1 for Div and Mod.
_GUARDED = {"Gather": (1, 0), "GatherElements": (1, 0), "GatherND": (1, 0), "Scatter": (1, 0),
            "ScatterElements": (1, 0), "ScatterND": (1, 0), "Div": (1, 1), "Mod": (1, 1)}
_CONTROL_FLOW = ("If", "Loop", "Scan")
# A Loop whose scan outputs' length is known only at run time is compiled per value of what
# fixes it (docs/architecture.md "Loops"): the graph inputs its trip count and condition are
# computed from join the specialisation key, when they are this small and reached through at
# most this many nodes; bigger ones (a trip count computed from an image) are refused.
MAX_VALUE_INPUT_ELEMENTS = 16
MAX_VALUE_CONE_NODES = 64
# Scan outputs hold a row per iteration: a constant trip count beyond this is refused (a typo'd
# or adversarial trip count input would otherwise allocate its rows; the memory limit still
# applies below it).
MAX_SCAN_TRIPS = 1 << 24
# The carried counter `count_rows` adds to a Loop that can end early: its final value, a graph
# output named ROWS_PREFIX + the Loop's first scan output, is the number of rows its scan outputs
# hold; the bounded buffers' other rows are never written and the runtime returns only these.
ROWS_PREFIX = "dlc.rows/"
_NATIVE = "/native_loop"  # the suffix of a native Loop's outputs (typed_outputs)
_ITERATION = re.compile(r"/(?:iter|t)\d+/")


def expand_control_flow(graph: onnx.GraphProto, constants: dict[str, np.ndarray],
                        types: dict[str, onnx.TypeProto], native_loops: bool = True) -> bool:
    """Expand what can be expanded now; True if the graph changed.

    Called when folding has stopped: first the nodes whose condition or trip count is a
    constant; only when there are none, the run-time forms (select, masked loop) or an error,
    since a condition that folds later would have been inlined instead.
    """
    # Copies of one node made by unrolling an enclosing loop (names differ only in the iteration):
    # nested loops multiply, and the bound is on the product.
    copies = Counter(_ITERATION.sub("/*/", node.name) for node in graph.node)
    scope = _GraphScope(graph, constants)
    for final in (False, True):
        nodes, changed = [], False
        for index, node in enumerate(graph.node):
            expansion = None
            if node.domain in ("", "ai.onnx") and node.op_type in _CONTROL_FLOW:
                expansion = _Expansion(node, index, constants, types,
                                       copies[_ITERATION.sub("/*/", node.name)], native_loops, scope).run(final)
            changed |= expansion is not None
            nodes.extend([node] if expansion is None else expansion)
        if changed:
            del graph.node[:]
            graph.node.extend(nodes)
            return True
    return False


def refuse_unconvertible_control_flow(model: onnx.ModelProto) -> None:
    """Scan of opset 8 (a batch axis on every input, sequence_lens) has no faithful upgrade: the
    ONNX version converter (onnx 1.23) drops the batch axis from the graph's inputs instead."""
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    if opset >= 9:
        return
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Scan" and node.domain in ("", "ai.onnx"):
            raise UnsupportedError(f"node '{node.name or f'Scan_{index}'}' (Scan): the opset-8 Scan (with a "
                                   f"batch axis) is not supported; the model's opset is {opset}",
                                   "export the model with opset 9 or newer, where Scan has no batch axis")


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        yield from [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs


def rename_subgraph(graph: onnx.GraphProto, mapping: dict[str, str], prefix: str) -> None:
    """Rename what a nested subgraph reads from the inlined body (`mapping`), and prefix its own
    names too: ONNX's data propagation refuses two copies of a subgraph with the same names.
    For any inliner of a graph that holds subgraphs (a function body's Scan, too)."""
    local = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    local |= {name for node in graph.node for name in node.output if name}
    names = {**mapping, **{name: prefix + name for name in local}}
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = names.get(value.name, value.name)
    for init in graph.initializer:
        init.name = names[init.name]
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
        for inner in _subgraphs(node):
            rename_subgraph(inner, names, prefix)


class _GraphScope:
    """What a Loop of the top-level graph needs to know of it: which values are its run-time
    inputs, which its outputs, and the nodes producing each value."""

    def __init__(self, graph: onnx.GraphProto, constants: dict[str, np.ndarray]):
        self.graph, self.constants = graph, constants
        self._producers: dict[str, onnx.NodeProto] | None = None

    @property
    def outputs(self) -> set[str]:
        return {value.name for value in self.graph.output}

    def value_inputs(self, name: str) -> list[str] | None:
        """The graph inputs whose values fix `name`'s (the inputs of its producers' cone), or None
        when that cone is too big for a compile per value (MAX_VALUE_INPUT_ELEMENTS,
        MAX_VALUE_CONE_NODES) or holds control flow."""
        if self._producers is None:
            self._producers = {out: node for node in self.graph.node for out in node.output if out}
        inputs = {value.name: value for value in self.graph.input if value.name not in self.constants}
        found, seen, pending, nodes = [], set(), [name], 0
        while pending:
            value = pending.pop()
            if value in seen or not value or value in self.constants:
                continue
            seen.add(value)
            if value in inputs:
                dims = inputs[value].type.tensor_type.shape.dim
                if any(not d.HasField("dim_value") for d in dims) or \
                        int(np.prod([d.dim_value for d in dims])) > MAX_VALUE_INPUT_ELEMENTS:
                    return None
                found.append(value)
                continue
            node = self._producers.get(value)
            nodes += 1
            if node is None or nodes > MAX_VALUE_CONE_NODES or node.op_type in _CONTROL_FLOW:
                return None
            pending.extend(node.input)
        return sorted(found)


class _Expansion:
    def __init__(self, node: onnx.NodeProto, index: int, constants: dict[str, np.ndarray],
                 types: dict[str, onnx.TypeProto], copies: int = 1, native_loops: bool = True,
                 scope: _GraphScope | None = None):
        self.node, self.constants, self.types, self.copies = node, constants, types, max(copies, 1)
        self.native_loops = native_loops
        self.scope = scope
        self.name = node.name or f"{node.op_type}_{index}"
        self.nodes: list[onnx.NodeProto] = []

    def error(self, what: str, hint: str) -> UnsupportedError:
        return UnsupportedError(f"node '{self.name}' ({self.node.op_type}): {what}", hint)

    def run(self, final: bool) -> list[onnx.NodeProto] | None:
        return getattr(self, f"_{self.node.op_type.lower()}")(final)

    # -- building blocks ------------------------------------------------------------------

    def const(self, name: str, array: np.ndarray) -> str:
        name = f"{self.name}/{name}"
        self.constants[name] = np.asarray(array)
        return name

    def add(self, op_type: str, inputs: list[str], output: str | None = None, **attributes) -> str:
        output = output or f"{self.name}/{op_type.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"{self.name}/{len(self.nodes)}",
                                           **attributes))
        return output

    def inline(self, body: onnx.GraphProto, prefix: str, bound: dict[str, str]) -> list[str]:
        """Append `body`'s nodes with its own names prefixed and its inputs bound to `bound`;
        returns the names its outputs have after inlining."""
        # A body's initializers are the same in every iteration: one copy, named per body.
        shared = f"{self.name}/{prefix.rstrip('0123456789')}/"
        prefix = f"{self.name}/{prefix}/"
        mapping = dict(bound)
        for init in body.initializer:
            mapping[init.name] = shared + init.name
            if shared + init.name not in self.constants:
                self.constants[shared + init.name] = numpy_helper.to_array(init)
        for inner in body.node:
            mapping.update({name: prefix + name for name in inner.output if name})
        for position, inner in enumerate(body.node):
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            copy.name = prefix + (inner.name or f"{inner.op_type}_{position}")
            copy.input[:] = [mapping.get(name, name) for name in inner.input]
            copy.output[:] = [mapping.get(name, name) for name in inner.output]
            for graph in _subgraphs(copy):
                rename_subgraph(graph, mapping, prefix)
            self.nodes.append(copy)
        return [mapping.get(value.name, value.name) for value in body.output]

    def constant(self, index: int) -> np.ndarray | None:
        """Input `index` as a constant, None when absent or computed at run time."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        return self.constants.get(self.node.input[index])

    def scalar(self, value: np.ndarray, what: str):
        if value.size != 1:
            raise self.error(f"{what} holds {value.size} values {list(value.shape)}, expected one",
                             "the ONNX spec takes a single-element tensor here; fix the model")
        return value.reshape(-1)[0].item()

    def check_unrolled(self, trips: int, body: onnx.GraphProto, what: str) -> None:
        size = self.copies * trips * max(len(body.node), 1)
        if size > MAX_UNROLLED_NODES:
            copies = f" (in each of the {self.copies} copies an enclosing loop made)" if self.copies > 1 else ""
            raise self.error(f"{what} {trips} iterations of a {len(body.node)}-node body{copies} would unroll "
                             f"to {size} nodes, more than dlc's bound of {MAX_UNROLLED_NODES}",
                             "dlc unrolls Loop and Scan (native loops are not implemented yet): shorten "
                             "the sequence or trip count, or run this model with onnxruntime")

    def guard(self, start: int, running: str, why: str) -> None:
        """Make the nodes inlined from `start` on safe to run where `running` (a bool scalar) is
        false: an index or divisor input they check at run time becomes `Where(running, x, safe)`
        (`_GUARDED`), which is x itself where the result is used; operators whose checks no safe
        input avoids (`_MAY_FAIL`) are refused."""
        nodes = self.nodes[start:]
        del self.nodes[start:]
        constants = set(self.constants)
        for inner in nodes:
            self.check_cannot_fail(inner, why, constants)
            if inner.op_type == "Constant":
                constants.update(inner.output)
            if inner.op_type in _GUARDED and len(inner.input) > _GUARDED[inner.op_type][0]:
                position, safe = _GUARDED[inner.op_type]
                value = inner.input[position]
                if inner.op_type in ("Div", "Mod") and self.is_float(value):
                    self.nodes.append(inner)
                    continue  # floating-point division has no run-time check
                like = self.add("CastLike", [self.const(f"safe{safe}", np.array(safe, np.int64)), value])
                inner.input[position] = self.add("Where", [running, value, like])
            self.nodes.append(inner)

    def is_float(self, name: str) -> bool:
        if name in self.constants:
            return self.constants[name].dtype.kind == "f"
        value_type = self.types.get(name)
        return value_type is not None and value_type.HasField("tensor_type") and \
            helper.tensor_dtype_to_np_dtype(value_type.tensor_type.elem_type).kind == "f"

    def check_cannot_fail(self, inner: onnx.NodeProto, why: str, constants: set[str]) -> None:
        where = f"'{inner.name}' ({inner.op_type})"
        runtime_axes = inner.op_type.startswith("Reduce") and len(inner.input) > 1 and inner.input[1] \
            and inner.input[1] not in constants
        if inner.op_type in _MAY_FAIL or runtime_axes:
            raise self.error(f"{why}; its node {where} checks its inputs at run time and would fail "
                             "the run even where its result is not used",
                             "make the condition a constant (export with static shapes), or move "
                             "that operator out of the branch or loop body")
        for graph in _subgraphs(inner):
            for nested in graph.node:
                if nested.op_type in _GUARDED:
                    raise self.error(f"{why}; its nested node {where} holds '{nested.name}' "
                                     f"({nested.op_type}), which checks its inputs at run time",
                                     "make the condition a constant, or move that operator out of the "
                                     "nested subgraph")
                self.check_cannot_fail(nested, why, constants | {n for x in graph.node for n in x.output
                                                                 if x.op_type == "Constant"})

    def body_output_types(self, body: onnx.GraphProto, input_types: list[onnx.TypeProto]) -> list[onnx.TypeProto]:
        """The types ONNX infers for `body`'s outputs given its inputs' types (ONNX infers no
        shape for a Loop's state from outside); outer values enter as constants or typed inputs."""
        graph = onnx.GraphProto()
        graph.CopyFrom(body)
        for value, value_type in zip(graph.input, input_types):
            if value_type.HasField("tensor_type"):
                value.type.CopyFrom(value_type)
        local = {value.name for value in graph.input} | {init.name for init in graph.initializer}
        local |= {name for node in _all_nodes(graph) for name in node.output}
        # Nested subgraphs' reads too: an inner Loop's body reading an outer value needs its type.
        reads = {name for node in _all_nodes(graph) for name in node.input if name} | {v.name for v in graph.output}
        local |= {value.name for node in _all_nodes(graph) for inner in _subgraphs(node)
                  for value in (*inner.input, *inner.initializer)}
        for name in sorted(reads - local):
            if name in self.constants and self.constants[name].size <= 1024:
                graph.initializer.append(numpy_helper.from_array(self.constants[name], name))
            elif name in self.constants:
                array = self.constants[name]
                graph.input.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
            elif name in self.types:
                graph.input.append(onnx.ValueInfoProto(name=name, type=self.types[name]))
        for value in graph.output:
            value.type.tensor_type.ClearField("shape")  # what ONNX infers, not what the model declares
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", CANONICAL_OPSET)])
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception:  # noqa: BLE001 - then nothing is known, and the caller refuses
            return [onnx.TypeProto() for _ in body.output]
        return [value.type for value in inferred.graph.output]

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        if name in self.constants:
            return self.constants[name].shape
        value_type = self.types.get(name)
        if value_type is None or not value_type.tensor_type.HasField("shape"):
            return None
        dims = value_type.tensor_type.shape.dim
        return None if any(not d.HasField("dim_value") for d in dims) else tuple(d.dim_value for d in dims)

    def as_scalar_bool(self, name: str) -> str:
        return self.add("Reshape", [name, self.const("scalar_shape", np.zeros(0, np.int64))])

    def stack(self, values: list[str], axis: int, output: str) -> str:
        axes = self.const(f"axis{axis}", np.array([axis], np.int64))
        return self.add("Concat", [self.add("Unsqueeze", [v, axes]) for v in values], output, axis=axis)

    # -- the operators --------------------------------------------------------------------

    def _if(self, final: bool) -> list[onnx.NodeProto] | None:
        branches = {attr.name: attr.g for attr in self.node.attribute}
        cond = self.constant(0)
        if cond is not None:
            taken = "then_branch" if self.scalar(cond, "input 'cond'") else "else_branch"
            results = self.inline(branches[taken], taken.split("_")[0], {})
            for result, output in zip(results, self.node.output):
                if output:
                    self.add("Identity", [result], output)
            return self.nodes
        if not final:
            return None
        for output in self.node.output:
            value_type = self.types.get(output)
            if output and value_type is not None and not value_type.HasField("tensor_type"):
                raise self.error(f"output '{output}' is a {value_type.WhichOneof('value')} and its "
                                 "condition is known only at run time",
                                 "dlc supports tensors only (no sequences or optionals)")
            if output and self.static_shape(output) is None:
                raise self.error(f"its branches give output '{output}' different shapes (ONNX infers "
                                 f"{_type_text(self.types.get(output))}) and its condition is known only "
                                 "at run time", "dlc compiles static shapes: make both branches give "
                                 "one shape, or make the condition a constant")
        why = "its condition is known only at run time, so both branches run and the selected one is kept"
        cond = self.as_scalar_bool(self.node.input[0])
        start = len(self.nodes)
        then = self.inline(branches["then_branch"], "then", {})
        self.guard(start, cond, why)
        negated = self.add("Not", [cond])
        start = len(self.nodes)
        other = self.inline(branches["else_branch"], "else", {})
        self.guard(start, negated, why)
        for a, b, output in zip(then, other, self.node.output):
            if output:
                self.add("Where", [cond, a, b], output)
        return self.nodes

    def _loop(self, final: bool) -> list[onnx.NodeProto] | None:
        body = next(attr.g for attr in self.node.attribute if attr.name == "body")
        carried = list(self.node.input[2:])
        scans = len(body.output) - 1 - len(carried)
        trips, cond = self.constant(0), self.constant(1)
        has_trips, has_cond = len(self.node.input) > 0 and self.node.input[0], \
            len(self.node.input) > 1 and self.node.input[1]
        if has_trips and trips is None or has_cond and cond is None:
            if not final:
                return None
        # A negative trip count runs no iteration, as in onnxruntime (M is a maximum).
        known = max(int(self.scalar(trips, "input 'M'")), 0) if trips is not None else None
        if cond is not None and not self.scalar(cond, "input 'cond'"):
            known = 0
        if known == 0:
            return self.no_iteration(body, carried, scans)
        if scans and known is not None and known > MAX_SCAN_TRIPS:
            raise self.error(f"its trip count {known} is beyond dlc's bound of {MAX_SCAN_TRIPS:,} for a Loop "
                             f"with scan outputs (each holds a row per iteration)",
                             "check the trip count fed to the model; a longer loop should return its values "
                             "as loop-carried state")
        if self.native(body, carried, scans, known) is None:
            # Left as a Loop node: the importer compiles its body once (import_native_loop).
            return self.typed_outputs(body, carried, known)
        if scans and (has_trips and trips is None or has_cond and cond is None or self.counted()
                      or not _passes_condition_through(body)):
            if not final:
                return None
            raise self.length_at_run_time(body, carried, scans, known)
        if has_trips and trips is None:
            raise self.error(f"its trip count '{self.node.input[0]}' is known only at run time, and it cannot "
                             f"run as a native loop ({self.native(body, carried, scans, None)})",
                             "unrolling needs a trip count that is constant after shape folding: export "
                             "with static shapes, or move that out of the loop body")
        if not has_trips:
            raise self.error("it has no trip count (it runs until its condition is false), and it cannot run "
                             f"as a native loop ({self.native(body, carried, scans, None)})",
                             "give the Loop input 'M', or move that out of the loop body")
        count = max(int(self.scalar(trips, "input 'M'")), 0)
        running = True if cond is None else bool(self.scalar(cond, "input 'cond'"))
        static_cond = _passes_condition_through(body)
        if has_cond and cond is None or not static_cond:
            if not final:
                return None
            return self._masked_loop(body, count, carried, scans)
        if not running:
            count = 0
        self.check_unrolled(count, body, "its")
        state, outputs = carried, [[] for _ in range(scans)]
        true = self.const("true", np.array(True))
        for i in range(count):
            bound = {body.input[0].name: self.const(f"iter{i}", np.array(i, np.int64)),
                     body.input[1].name: true, **dict(zip((v.name for v in body.input[2:]), state))}
            results = self.inline(body, f"iter{i}", bound)
            state = results[1:1 + len(carried)]
            for k, value in enumerate(results[1 + len(carried):]):
                outputs[k].append(value)
        for value, output in zip(state, self.node.output):
            if output:
                self.add("Identity", [value], output)
        for values, output in zip(outputs, self.node.output[len(carried):]):
            if output:
                self.stack(values, 0, output)
        return self.nodes

    def counted(self) -> bool:
        """Whether `count_rows` gave this Loop its row counter (its scan outputs may be bounded)."""
        return any(name.startswith(ROWS_PREFIX) for name in self.node.output)

    def no_iteration(self, body: onnx.GraphProto, carried: list[str], scans: int) -> list[onnx.NodeProto]:
        """A Loop that runs no iteration: its carried values are the initial ones, its scan
        outputs empty, of the slice shape the body would give them."""
        # The slice shape of the first iteration (ONNX infers none for a slice the iteration
        # number indexes; onnxruntime gives (0, 1) for test_loop11's).
        first = onnx.GraphProto()
        first.CopyFrom(body)
        first.initializer.extend([numpy_helper.from_array(np.array(0, np.int64), first.input[0].name),
                                  numpy_helper.from_array(np.array(True), first.input[1].name)])
        del first.input[:2]
        after = self.body_output_types(first, [self.types.get(value, onnx.TypeProto()) for value in carried])
        for value, output in zip(carried, self.node.output):
            if output:
                self.add("Identity", [value], output)
        slices = [_static(value_type) for value_type in after[1 + len(carried):]]
        if any(shape is None for shape in slices):
            slices = [shape if shape is not None else run_shape
                      for shape, run_shape in zip(slices, self.first_iteration_shapes(body, carried))]
        for value_type, shape, output in zip(after[1 + len(carried):], slices, self.node.output[len(carried):]):
            if not output:
                continue
            if shape is None:
                raise self.error("it runs no iteration, so its scan outputs are empty tensors of a shape "
                                 f"the body does not fix statically (ONNX infers {_type_text(value_type)})",
                                 "dlc needs at least one iteration here, or a body whose outputs have "
                                 "static shapes")
            dtype = helper.tensor_dtype_to_np_dtype(value_type.tensor_type.elem_type)
            self.add("Identity", [self.const(f"empty_{output}", np.zeros((0, *shape), dtype))], output)
        return self.nodes

    def first_iteration_shapes(self, body: onnx.GraphProto, carried: list[str]) -> list:
        """The scan outputs' slice shapes of one run of `body` (onnx's reference evaluator, the
        carried values zeros where not constant), for a Loop that runs no iteration; None each
        where that run fails."""
        from onnx.reference import ReferenceEvaluator

        scans = len(body.output) - 1 - len(carried)
        feeds = {}
        for value, name in zip(body.input[2:], carried):
            shape = self.static_shape(name)
            if shape is None:
                return [None] * scans
            dtype = helper.tensor_dtype_to_np_dtype(self.value_type(name).tensor_type.elem_type)
            feeds[value.name] = self.constants.get(name, np.zeros(shape, dtype))
        feeds[body.input[0].name] = np.array(0, np.int64)
        feeds[body.input[1].name] = np.array(True)
        graph = onnx.GraphProto()
        graph.CopyFrom(body)
        local = {value.name for value in graph.input} | {init.name for init in graph.initializer}
        local |= {name for node in _all_nodes(graph) for name in node.output}
        for name in sorted({n for node in _all_nodes(graph) for n in node.input if n} - local):
            if name not in self.constants:
                return [None] * scans
            graph.initializer.append(numpy_helper.from_array(self.constants[name], name))
        try:
            results = ReferenceEvaluator(helper.make_model(
                graph, opset_imports=[helper.make_opsetid("", CANONICAL_OPSET)])).run(None, feeds)
        except Exception:  # noqa: BLE001 - the caller says the shape is unknown
            return [None] * scans
        return [tuple(np.shape(value)) for value in results[1 + len(carried):]]

    def length_at_run_time(self, body: onnx.GraphProto, carried: list[str], scans: int,
                           known: int | None) -> UnsupportedError:
        """The error that makes dlc.compile specialise this Loop (dlc/specializations.py): its
        `value_inputs` (graph inputs whose values fix the trip count and initial condition)
        join the specialisation key, and its `counted_outputs` (the scan outputs of a loop
        that can end early) get a row counter (`count_rows`). Or a plain error where neither
        helps."""
        inputs = self.node.input
        pins = []
        for position, what in ((0, "trip count"), (1, "condition")):
            if position < len(inputs) and inputs[position] and self.constant(position) is None:
                cone = self.scope.value_inputs(inputs[position]) if self.scope is not None else None
                if cone is None:
                    return self.error(
                        f"its {what} '{inputs[position]}' is known only at run time and is not computed from "
                        f"a few small graph inputs, and its {scans} scan output(s) hold a row per iteration",
                        f"dlc compiles such a loop once per value of the inputs its {what} comes from (at "
                        f"most {MAX_VALUE_INPUT_ELEMENTS} elements each, through at most {MAX_VALUE_CONE_NODES} "
                        "nodes): compute it from such inputs, or return the values as loop-carried state")
                pins += cone
        if not (len(inputs) > 0 and inputs[0]):
            return self.error("it has no trip count and its body computes its condition, so its scan "
                              "outputs have no bound", "give the Loop a trip count (input 'M'): dlc then "
                              "allocates that many rows and returns the rows written")
        counted = []
        if not _passes_condition_through(body) and not self.counted():
            counted = [name for name in self.node.output[len(carried):] if name]
            outputs = self.scope.outputs if self.scope is not None else set()
            inner = [name for name in counted if name not in outputs]
            if inner:
                return self.error(f"its body computes its condition (the loop can end early), so its scan "
                                  f"output(s) {inner} have a length known only at run time, and they feed "
                                  "other nodes", "dlc returns the rows written for scan outputs that are graph "
                                  "outputs: make them graph outputs, or return the values as loop-carried "
                                  "state")
        elif not pins:
            reason = self.native(body, carried, scans, known)
            return self.error(f"its scan outputs' length is known only at run time, and it cannot run as a "
                              f"native loop ({reason})", "return the values as loop-carried state")
        error = self.error("its scan outputs' length is known only at run time (" +
                           (f"its trip count or condition comes from input(s) {pins}" if pins else
                            "its body computes its condition") + ")",
                           "`dlc run` (give the values with --input NAME=VALUE), dlc.compile, dlc.backend and "
                           "dlc.InferenceSession compile such a model per value of those inputs, returning the "
                           "rows written; `dlc compile` writes one artifact per value set, so save from Python "
                           "instead: dlc.compile(model).save(DIR, include_model=True) compiles new values on load")
        error.value_inputs = pins
        error.counted_outputs = counted
        return error

    def native(self, body: onnx.GraphProto, carried: list[str], scans: int, count: int | None) -> str | None:
        """None when this Loop compiles as a native loop (its body once), else why it unrolls.

        Unrolled: a constant trip count with at most `UNROLL_MAX_NODES` body nodes in all (the
        unrolled copies fold and fuse across iterations, and a loop costs a call and copies per
        iteration); scan outputs whose length is not a constant (a run-time trip count, or a
        condition the body computes); loop-carried values whose type the body changes. A body
        with run-time checks reports them through `loop.run` (dialects/loop.py).
        """
        if not self.native_loops:
            return "the target runs no native loops"
        # A counted loop (count_rows) runs natively even when short: unrolled, its early exit
        # would be a mask, and its scan outputs would need one too.
        counted = self.counted()
        if count is not None and count * max(len(body.node), 1) <= UNROLL_MAX_NODES and not counted:
            return "few iterations"
        if scans and (count is None or not _passes_condition_through(body) and not counted or
                      len(self.node.input) > 1 and self.node.input[1] and self.constant(1) is None):
            return "scan outputs whose length is known only at run time"
        before = [self.types.get(value) for value in carried]
        if any(value not in self.constants and (t is None or _static(t) is None) for value, t in zip(carried, before)):
            return "a loop-carried value of unknown shape"
        inputs = [self.value_type(value) for value in carried]
        after = self.body_output_types(body, [onnx.TypeProto(), onnx.TypeProto()] + inputs)
        for value_type, output_type in zip(inputs, after[1:1 + len(carried)]):
            # ONNX infers no shape for some outputs (a nested Loop's): the body's import checks them.
            shape = _static(output_type) if output_type.tensor_type.HasField("shape") else _static(value_type)
            if shape != _static(value_type) or output_type.tensor_type.elem_type != value_type.tensor_type.elem_type:
                return "a loop-carried value changes type"
        if any(_static(t) is None for t in after[1 + len(carried):]):
            return "scan outputs of unknown shape"
        return None

    def typed_outputs(self, body: onnx.GraphProto, carried: list[str], count: int | None) -> list | None:
        """ONNX infers no shape for a Loop's outputs (a carried value's may change): a native
        Loop's outputs are renamed and given their static shapes by a Reshape each, a view that
        costs nothing, so that folding and inference see them. None once done."""
        if any(name.endswith(_NATIVE) for name in self.node.output):
            return None
        after = self.body_output_types(body, [onnx.TypeProto(), onnx.TypeProto()] +
                                       [self.value_type(value) for value in carried])
        shapes = [self.static_shape(value) for value in carried]
        return self.retyped(shapes + [(count, *_static(value_type)) for value_type in after[1 + len(carried):]])

    def retyped(self, shapes: list[tuple[int, ...]]) -> list | None:
        """The node with its outputs renamed, and a Reshape to each one's static shape."""
        if any(name.endswith(_NATIVE) for name in self.node.output):
            return None
        for position, (name, shape) in enumerate(zip(self.node.output, shapes)):
            if name:
                self.node.output[position] = name + _NATIVE
                self.add("Reshape", [name + _NATIVE, self.const(f"shape{position}", np.array(shape, np.int64))], name)
        return [self.node, *self.nodes]

    def native_scan(self, body: onnx.GraphProto, carried: list[str], scanned: list[str],
                    moved: list[tuple[int, ...] | None], steps: int) -> str | None:
        """None when this Scan runs as a native loop, else why it unrolls (as `native`).
        `moved`: the scanned inputs' shapes with the scanned axis first."""
        if not self.native_loops:
            return "the target runs no native loops"
        if steps * max(len(body.node), 1) <= UNROLL_MAX_NODES:
            return "few iterations"
        shapes = [self.static_shape(value) for value in carried] + moved
        if any(shape is None for shape in shapes) or any(not s or s[0] != steps for s in shapes[len(carried):]):
            return "an input of unknown shape"
        inputs = [self.value_type(value) for value in carried] + [
            helper.make_tensor_type_proto(self.value_type(value).tensor_type.elem_type, list(shape[1:]))
            for value, shape in zip(scanned, shapes[len(carried):])]
        after = self.body_output_types(body, inputs)
        for value_type, output_type in zip(inputs, after[:len(carried)]):
            if _static(output_type) != _static(value_type) or \
                    output_type.tensor_type.elem_type != value_type.tensor_type.elem_type:
                return "a carried value changes type"
        if any(_static(t) is None for t in after[len(carried):]):
            return "scan outputs of unknown shape"
        return None

    def native_scan_nodes(self, body, carried, scanned, moved, steps, in_axes, out_axes) -> list | None:
        """The Scan left as a node for the importer (import_native_loop), scanning axis 0: each
        scanned input with another axis is transposed to put it first, each such scan output
        transposed back; the outputs typed by Reshapes (as `typed_outputs`). None once done."""
        if any(name.endswith(_NATIVE) for name in self.node.output):
            return None
        for j, (name, axis) in enumerate(zip(scanned, in_axes)):
            rank = len(moved[j])
            axis %= rank
            if axis:
                self.node.input[len(carried) + j] = self.add(
                    "Transpose", [name], perm=[axis, *(k for k in range(rank) if k != axis)])
        before = list(self.nodes)
        self.nodes.clear()
        for attr in self.node.attribute:
            if attr.name in ("scan_input_axes", "scan_output_axes"):
                attr.ints[:] = [0] * len(attr.ints)
        after = self.body_output_types(body, [self.value_type(value) for value in carried] + [
            helper.make_tensor_type_proto(self.value_type(value).tensor_type.elem_type, list(shape[1:]))
            for value, shape in zip(scanned, moved)])
        shapes = [self.static_shape(value) for value in carried]
        shapes += [(steps, *_static(t)) for t in after[len(carried):]]
        for position, (name, shape) in enumerate(zip(self.node.output, shapes)):
            if not name:
                continue
            self.node.output[position] = name + _NATIVE
            axis = out_axes[position - len(carried)] % len(shape) if position >= len(carried) else 0
            typed = name if not axis else name + "/steps_first"
            self.add("Reshape", [name + _NATIVE, self.const(f"shape{position}", np.array(shape, np.int64))], typed)
            if axis:
                self.add("Transpose", [typed], name, perm=[*range(1, axis + 1), 0, *range(axis + 1, len(shape))])
        return [*before, self.node, *self.nodes]

    def value_type(self, name: str) -> onnx.TypeProto:
        if name in self.constants:
            array = self.constants[name]
            return helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape))
        return self.types[name]

    def _masked_loop(self, body: onnx.GraphProto, count: int, carried: list[str],
                     scans: int) -> list[onnx.NodeProto]:
        why = "its condition is computed at run time, so dlc runs every iteration and keeps the state " \
              "of those the condition allows"
        if scans:
            raise self.error(f"{why}, but its {scans} scan output(s) would then have a length known only "
                             "at run time", "dlc compiles static shapes: make the loop's condition a "
                             "constant, or return the values as loop-carried state")
        if count >= 1 << 31:
            raise self.error(f"it is a while loop (trip count {count}, the condition computed by its body), "
                             "whose number of iterations is known only at run time",
                             "dlc unrolls loops (native loops are not implemented yet): give the loop a "
                             "constant trip count of a few iterations, or run this model with onnxruntime")
        after = self.body_output_types(body, [onnx.TypeProto(), onnx.TypeProto()] +
                                       [self.types.get(value, onnx.TypeProto()) for value in carried])
        for value, body_output, value_type in zip(carried, body.output[1:], after[1:]):
            shape = self.static_shape(value)
            if shape is None or _static(value_type) != shape:
                raise self.error(f"{why}, which needs each loop-carried value to keep its shape; "
                                 f"'{value}' is {_type_text(self.types.get(value))} before an iteration and "
                                 f"its body output '{body_output.name}' {_type_text(value_type)} after",
                                 "make the loop's condition a constant")
        self.check_unrolled(count, body, "its")
        active = self.as_scalar_bool(self.node.input[1]) if len(self.node.input) > 1 and self.node.input[1] \
            else self.const("true", np.array(True))
        state = carried
        for i in range(count):
            bound = {body.input[0].name: self.const(f"iter{i}", np.array(i, np.int64)),
                     body.input[1].name: active, **dict(zip((v.name for v in body.input[2:]), state))}
            start = len(self.nodes)
            results = self.inline(body, f"iter{i}", bound)
            self.guard(start, active, why)
            state = [self.add("Where", [active, new, old]) for new, old in zip(results[1:], state)]
            active = self.add("And", [active, self.as_scalar_bool(results[0])])
        for value, output in zip(state, self.node.output):
            if output:
                self.add("Identity", [value], output)
        return self.nodes

    def _scan(self, final: bool) -> list[onnx.NodeProto] | None:
        attributes = {attr.name: attr for attr in self.node.attribute}
        body = attributes["body"].g
        count = attributes["num_scan_inputs"].i
        carried = list(self.node.input[:len(self.node.input) - count])
        scanned = list(self.node.input[len(carried):])
        scans = len(body.output) - len(carried)
        ints = {name: list(attr.ints) for name, attr in attributes.items() if name != "body"}
        in_axes = ints.get("scan_input_axes") or [0] * count
        in_reverse = ints.get("scan_input_directions") or [0] * count
        out_axes = ints.get("scan_output_axes") or [0] * scans
        out_reverse = ints.get("scan_output_directions") or [0] * scans
        shape = self.static_shape(scanned[0])
        if shape is None:
            if not final:
                return None
            raise self.error(f"the length of scanned input '{scanned[0]}' is not static",
                             "fix the model's input shapes with --shape")
        steps = shape[in_axes[0] % len(shape)]
        if steps == 0:
            raise self.error("it scans a sequence of length 0, whose scan outputs have no computed shape",
                             "dlc needs at least one element to scan")
        moved = [self.static_shape(value) for value in scanned]
        moved = [None if shape is None else (shape[axis % len(shape)], *(
            size for k, size in enumerate(shape) if k != axis % len(shape))) for shape, axis in zip(moved, in_axes)]
        if self.native_scan(body, carried, scanned, moved, steps) is None:
            return self.native_scan_nodes(body, carried, scanned, moved, steps, in_axes, out_axes)
        self.check_unrolled(steps, body, "its")
        state, outputs = carried, [[None] * steps for _ in range(scans)]
        for t in range(steps):
            bound = dict(zip((v.name for v in body.input), state))
            for j, name in enumerate(scanned):
                index = self.const(f"t{steps - 1 - t if in_reverse[j] else t}", np.array(
                    steps - 1 - t if in_reverse[j] else t, np.int64))
                bound[body.input[len(carried) + j].name] = self.add("Gather", [name, index], axis=in_axes[j])
            results = self.inline(body, f"t{t}", bound)
            state = results[:len(carried)]
            for k, value in enumerate(results[len(carried):]):
                outputs[k][steps - 1 - t if out_reverse[k] else t] = value
        for value, output in zip(state, self.node.output):
            if output:
                self.add("Identity", [value], output)
        for k, output in enumerate(self.node.output[len(carried):]):
            if output:
                self.stack(outputs[k], out_axes[k], output)
        return self.nodes


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for inner in _subgraphs(node):
            yield from _all_nodes(inner)


def _passes_condition_through(body: onnx.GraphProto) -> bool:
    """Does the body give back its condition unchanged, or a constant true (what the torch
    exporters write for a `for` loop)?"""
    producers = {name: node for node in body.node for name in node.output}
    name = body.output[0].name
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    constant = {init.name: init for init in body.initializer}.get(name)
    if name in producers and producers[name].op_type == "Constant":
        constant = next((attr.t for attr in producers[name].attribute if attr.name == "value"), None)
    if constant is not None:
        value = numpy_helper.to_array(constant)
        return value.size == 1 and bool(value.reshape(-1)[0])
    return name == body.input[1].name


def _static(value_type: onnx.TypeProto) -> tuple[int, ...] | None:
    if not value_type.HasField("tensor_type") or not value_type.tensor_type.HasField("shape"):
        return None
    dims = value_type.tensor_type.shape.dim
    return None if any(not d.HasField("dim_value") for d in dims) else tuple(d.dim_value for d in dims)


def _type_text(value_type: onnx.TypeProto | None) -> str:
    if value_type is None or not value_type.HasField("tensor_type"):
        return "?"
    tensor = value_type.tensor_type
    if not tensor.HasField("shape"):
        return f"{onnx.TensorProto.DataType.Name(tensor.elem_type).lower()}[unknown rank]"
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    return f"{onnx.TensorProto.DataType.Name(tensor.elem_type).lower()}[{', '.join(dims)}]"


def import_native_loop(node: onnx.NodeProto, constants: dict[str, np.ndarray], types: dict[str, onnx.TypeProto],
                       value_of, none_value, weights, body_name: str, import_model, _tensor_type):
    """A Loop left in the graph (`_Expansion.native`) as an `onnx.Loop` op and its body module.

    The body is imported as a model of its own (so it goes through the same folding, nested
    control flow and, later, the same passes): inputs (iteration number, condition, carried
    values, then the outer run-time values it reads), outer constants as its initializers.
    Its weights join `weights` under fresh names. `import_model` (a partial of the importer's,
    with its memory limit) and `_tensor_type` are the importer's, passed in: it imports this file.
    Returns (op, body module).
    """
    from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, StringAttr, SymbolRefAttr, TensorType, i64

    from dialects.loop import detach_bodies  # noqa: F401 - the dialect the driver runs bodies with
    from dialects.onnx import OPS, WeightOp
    from dialects.weights import weights_of

    body = onnx.GraphProto()
    body.CopyFrom(next(attr.g for attr in node.attribute if attr.name == "body"))
    expansion = _Expansion(node, 0, constants, types)
    scanned, reverse, count = [], [], 0
    if node.op_type == "Scan":  # as a Loop whose body also takes the scanned slices
        ints = {attr.name: list(attr.ints) for attr in node.attribute if attr.name != "body"}
        scanned = list(node.input[len(node.input) - _attribute_i(node, "num_scan_inputs"):])
        carried = list(node.input[:len(node.input) - len(scanned)])
        scans = len(body.output) - len(carried)
        reverse = (ints.get("scan_input_directions") or [0] * len(scanned)) + \
            (ints.get("scan_output_directions") or [0] * scans)
        count = expansion.static_shape(scanned[0])[0]
        constants[f"{node.name}/trips"] = np.array(count, np.int64)
        condition = f"{node.name}/cond"
        original = list(body.input)
        del body.input[:]
        body.input.extend([helper.make_tensor_value_info(f"{node.name}/iter", onnx.TensorProto.INT64, []),
                           helper.make_tensor_value_info(condition, onnx.TensorProto.BOOL, []), *original])
        body.node.append(helper.make_node("Identity", [condition], [f"{node.name}/cond_out"]))
        outputs = list(body.output)
        del body.output[:]
        body.output.extend([helper.make_tensor_value_info(f"{node.name}/cond_out", onnx.TensorProto.BOOL, []),
                            *outputs])
        head = [f"{node.name}/trips", ""]
    else:
        carried = list(node.input[2:])
        head = list(node.input[:2])
        if len(node.output) > len(carried):  # scan outputs: native() took a constant trip count only
            count = max(int(constants[node.input[0]].reshape(-1)[0]), 0)
    input_types = [expansion.value_type(value) for value in carried]
    for value in scanned:
        shape = expansion.static_shape(value)
        input_types.append(helper.make_tensor_type_proto(expansion.value_type(value).tensor_type.elem_type,
                                                         list(shape[1:])))
    scalar = {0: onnx.TensorProto.INT64, 1: onnx.TensorProto.BOOL}
    for position, value in enumerate(body.input):
        if position < 2:
            value.type.CopyFrom(helper.make_tensor_type_proto(scalar[position], []))
        else:
            value.type.CopyFrom(input_types[position - 2])
    local = {value.name for value in body.input} | {init.name for init in body.initializer}
    local |= {name for inner in _all_nodes(body) for name in inner.output}
    local |= {value.name for inner in _all_nodes(body) for graph in _subgraphs(inner)
              for value in (*graph.input, *graph.initializer)}
    reads = {name for inner in _all_nodes(body) for name in inner.input if name} | {v.name for v in body.output}
    outer = []
    for name in sorted(reads - local):
        if name in constants:
            body.initializer.append(numpy_helper.from_array(constants[name], name))
        else:
            body.input.append(onnx.ValueInfoProto(name=name, type=types[name]))
            outer.append(name)
    # The output types the body computes from these inputs (a model may declare none, or stale ones).
    inferred = expansion.body_output_types(body, [value.type for value in body.input])
    for position, (value, value_type) in enumerate(zip(body.output, inferred)):
        if value_type.HasField("tensor_type") and value_type.tensor_type.HasField("shape"):
            value.type.CopyFrom(value_type)
        elif 1 <= position <= len(carried):  # e.g. a nested Loop's: the import infers it, then checks it
            rank = len(body.input[position + 1].type.tensor_type.shape.dim)
            value.type.CopyFrom(helper.make_tensor_type_proto(
                body.input[position + 1].type.tensor_type.elem_type, [f"{value.name}_{d}" for d in range(rank)]))
    inferred = [value.type for value in body.output]
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", CANONICAL_OPSET)])
    module = import_model(model)
    module.sym_name = StringAttr(body_name)
    store = weights_of(module)
    renamed = {}
    for op in module.walk():
        if isinstance(op, WeightOp):
            old = op.weight_name
            if old not in renamed:
                renamed[old] = weights.add(f"{body_name}.{old}", store[old])
            op.properties["weight"] = SymbolRefAttr(renamed[old])

    main = next(op for op in module.ops if getattr(op, "sym_name", None) and op.sym_name.data == "main")
    produced = main.function_type.outputs.data[1:1 + len(carried)]
    for name, before, after in zip(carried, main.function_type.inputs.data[2:], produced):
        if before != after:
            raise expansion.error(f"its body turns loop-carried value '{name}' of type {before} into {after}",
                                  "a loop-carried value must keep its type and shape from one iteration "
                                  "to the next")
    operands = [value_of(name) if name else none_value() for name in head]
    while len(operands) < 2:
        operands.append(none_value())
    operands += [value_of(name) for name in (*carried, *scanned, *outer)]
    result_types = [operand.type for operand in operands[2:2 + len(carried)]]
    where = f"output of node '{node.name}' ({node.op_type})"
    # Scan outputs: one slice per iteration, `count` of them.
    for name, value_type in zip(node.output[len(carried):], inferred[1 + len(carried):]):
        slice_type = _tensor_type(name, value_type, where)
        result_types.append(TensorType(slice_type.element_type, [count, *slice_type.get_shape()]))
    attributes = {"onnx_node_name": StringAttr(node.name), "body": SymbolRefAttr(body_name),
                  "dlc.num_outer": IntegerAttr(len(outer), i64)}
    if scanned or reverse:
        attributes["dlc.num_scan_inputs"] = IntegerAttr(len(scanned), i64)
        attributes["dlc.reverse"] = DenseArrayBase.from_list(i64, reverse)
    op = OPS["Loop"].create(operands=operands, result_types=result_types, attributes=attributes)
    return op, module


def _attribute_i(node: onnx.NodeProto, name: str) -> int:
    return next(attr.i for attr in node.attribute if attr.name == name)


def count_rows(model: onnx.ModelProto, outputs: list[str]) -> dict[str, str]:
    """Give each top-level Loop producing one of `outputs` (scan outputs of a loop that can end
    early) a carried row counter, whose final value is a new graph output (ROWS_PREFIX + the
    Loop's first scan output); `model` is changed in place. Returns {scan output: its counter's
    output}: the runtime returns that many rows of the scan output (dlc/specializations.py)."""
    rows: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Loop" or node.domain not in ("", "ai.onnx") or not set(node.output) & set(outputs):
            continue
        body = next(attr.g for attr in node.attribute if attr.name == "body")
        carried = len(node.input) - 2
        scans = [name for name in node.output[carried:]]
        counter = ROWS_PREFIX + next(name for name in scans if name)
        zero, one = f"{counter}/zero", f"{counter}/one"
        model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), zero))
        body.initializer.append(numpy_helper.from_array(np.array(1, np.int64), one))
        body.input.append(helper.make_tensor_value_info(f"{counter}/in", onnx.TensorProto.INT64, []))
        body.node.append(helper.make_node("Add", [f"{counter}/in", one], [f"{counter}/out"], name=f"{counter}/add"))
        values = [onnx.ValueInfoProto() for _ in body.output]
        for copy, value in zip(values, body.output):
            copy.CopyFrom(value)
        values.insert(1 + carried, helper.make_tensor_value_info(f"{counter}/out", onnx.TensorProto.INT64, []))
        del body.output[:]
        body.output.extend(values)
        node.input.append(zero)
        node.output.insert(carried, counter)
        model.graph.output.append(helper.make_tensor_value_info(counter, onnx.TensorProto.INT64, []))
        rows.update((name, counter) for name in scans if name)
    missing = [name for name in outputs if name not in rows]
    if missing:
        raise UnsupportedError(f"scan output(s) {missing} of a Loop that can end early do not come from a Loop "
                               "of the main graph, where dlc counts the rows written",
                               "move that Loop out of its enclosing subgraph")
    return rows
