"""Graph partitioning across targets, like ONNX Runtime's execution providers (issue 6).

A partial target (`Target.partial`, e.g. npu-sim) takes the nodes its `supports`
accepts; the rest fall back to `cpu`. Nodes of one target are grouped into
maximal partitions with no cycle between partitions (checked with networkx);
each partition becomes a graph-phase module compiled by its target, and the
model runs as the ordered list of partition calls, copying values at the edges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from dlc.errors import CompileError, DlcError

FALLBACK = "cpu"


@dataclass
class Partition:
    target: str
    ops: list  # onnx ops, in program order
    inputs: list = field(default_factory=list)  # values read from outside (graph inputs, other partitions)
    outputs: list = field(default_factory=list)  # values used outside


@dataclass
class Placement:
    """Where every node goes, and why the target refused the ones it refused."""

    target: str
    nodes: dict  # op -> target name
    reasons: dict  # op -> why `target` does not take it

    def to_json(self) -> dict:
        return {"target": self.target,
                "nodes": {op.node_name: t for op, t in self.nodes.items()},
                "unsupported": {op.node_name: r for op, r in self.reasons.items()}}


def _main(module):
    from xdsl.dialects import func

    return next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "main")


def _nodes(main) -> list:
    from dialects.onnx import OnnxOp

    return [op for op in main.body.block.ops if isinstance(op, OnnxOp)]


def place(module, target, forced: dict[str, str] | None = None) -> Placement:
    """Ask `target` about each node; `forced` (node name -> target) overrides its answers."""
    from dialects.onnx import VIEW_OPS

    nodes = _nodes(_main(module))
    forced = dict(forced or {})
    known = {op.node_name for op in nodes}
    unknown = sorted(set(forced) - known)
    if unknown:
        raise DlcError(f"placement: nodes {unknown[:5]} are not in the model", "write a fresh file with --placement")
    placement = Placement(target.name, {}, {})
    for op in nodes:
        support = target.supports(op)
        if not support.ok:
            placement.reasons[op] = support.reason
        choice = forced.get(op.node_name)
        if choice not in (None, target.name, FALLBACK):
            raise DlcError(f"placement: {op.describe()} is forced onto '{choice}'; "
                           f"choose '{target.name}' or '{FALLBACK}'")
        if choice == target.name and not support.ok:
            raise DlcError(f"placement: {op.describe()} cannot run on {target.name}: {support.reason}")
        if choice is None and op.onnx_type in VIEW_OPS:
            continue  # views follow their data, below
        placement.nodes[op] = choice or (target.name if support.ok else FALLBACK)
    for op in nodes:
        if op not in placement.nodes:
            placement.nodes[op] = _view_target(op, placement, target.name)
    placement.nodes = {op: placement.nodes[op] for op in nodes}
    return placement


def _view_target(op, placement: Placement, target: str) -> str:
    """A view moves no data: put it with its producer, else with its first placed user."""
    if op in placement.reasons:
        return FALLBACK
    producer = op.operands[0].owner
    if producer in placement.nodes:
        return placement.nodes[producer]
    users = [use.operation for use in op.results[0].uses if use.operation in placement.nodes]
    return placement.nodes[users[0]] if users else FALLBACK


def partition(module, placement: Placement) -> list[Partition]:
    """Maximal acyclic partitions of same-target nodes, in an order that respects dependencies."""
    nodes = list(placement.nodes)
    index = {op: i for i, op in enumerate(nodes)}
    members = {i: [op] for i, op in enumerate(nodes)}
    group = dict(index)
    graph = nx.DiGraph()
    graph.add_nodes_from(members)
    for op in nodes:
        for producer in _producers(op, index):
            graph.add_edge(group[producer], group[op])

    def merge(a: int, b: int) -> None:
        for pred in list(graph.predecessors(b)):
            if pred != a:
                graph.add_edge(pred, a)
        for succ in list(graph.successors(b)):
            if succ != a:
                graph.add_edge(a, succ)
        graph.remove_node(b)
        for op in members.pop(b):
            group[op] = a
            members[a].append(op)

    # Along edges first (a producer and its consumer), then any two same-target groups.
    for op in nodes:
        for producer in _producers(op, index):
            a, b = group[producer], group[op]
            if a != b and placement.nodes[producer] == placement.nodes[op] and not _cycle(graph, a, b):
                merge(a, b)
    ids = sorted(members)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if a in members and b in members and placement.nodes[members[a][0]] == placement.nodes[members[b][0]] \
                    and not _cycle(graph, a, b):
                merge(a, b)
    order = nx.lexicographical_topological_sort(graph, key=lambda g: min(index[o] for o in members[g]))
    parts = [Partition(placement.nodes[members[g][0]], sorted(members[g], key=index.get)) for g in order]
    for part in parts:
        _boundary(part, _main(module))
    return parts


def _producers(op, index):
    for operand in op.operands:
        if operand.owner in index:
            yield operand.owner


def _cycle(graph: nx.DiGraph, a: int, b: int) -> bool:
    """Would merging groups a and b close a cycle (a path between them through another group)?"""
    for src, dst in ((a, b), (b, a)):
        if any(s != dst and nx.has_path(graph, s, dst) for s in graph.successors(src)):
            return True
    return False


def _boundary(part: Partition, main) -> None:
    from dialects.onnx import NoneOp, WeightOp

    inside = set(part.ops)
    for op in part.ops:
        for operand in op.operands:
            if operand.owner not in inside and not isinstance(operand.owner, WeightOp | NoneOp) \
                    and operand not in part.inputs:
                part.inputs.append(operand)
        for result in op.results:
            if any(use.operation not in inside for use in result.uses):
                part.outputs.append(result)


def value_names(main) -> dict:
    """A unique name per SSA value crossing partitions: graph input names, else `node:result`."""
    names = {arg: a.data for arg, a in zip(main.body.block.args, main.attributes["dlc.input_names"].data)}
    for op in _nodes(main):
        for j, result in enumerate(op.results):
            names[result] = f"{op.node_name}:{j}"
    return names


def partition_module(module, part: Partition, names: dict):
    """The partition as a graph-phase module of its own: inputs become arguments, weights are copied."""
    from xdsl.dialects import func
    from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
    from xdsl.ir import Block, Region

    from dialects.onnx import WeightOp
    from dialects.weights import WeightStore, attach_weights, weights_of

    block = Block(arg_types=[v.type for v in part.inputs])
    mapping = dict(zip(part.inputs, block.args))
    store, source = WeightStore(), weights_of(module)
    for op in part.ops:
        for operand in op.operands:
            if operand not in mapping:  # a weight or an absent optional input
                clone = operand.owner.clone()
                block.add_op(clone)
                mapping[operand] = clone.results[0]
                if isinstance(clone, WeightOp):
                    store[clone.weight_name] = source[clone.weight_name]
        clone = op.clone(value_mapper=mapping)
        block.add_op(clone)
        mapping.update(zip(op.results, clone.results))
    block.add_op(func.ReturnOp(*[mapping[v] for v in part.outputs]))
    main = func.FuncOp("main", ([v.type for v in part.inputs], [v.type for v in part.outputs]), Region(block))
    main.attributes["dlc.input_names"] = ArrayAttr([StringAttr(names[v]) for v in part.inputs])
    main.attributes["dlc.output_names"] = ArrayAttr([StringAttr(names[v]) for v in part.outputs])
    sub = ModuleOp([main])
    attach_weights(sub, store)
    return sub


# --- placement summary and files ------------------------------------------------------------

def placement_summary(placement: Placement, parts: list[Partition]) -> str:
    """Per target: nodes, share of FLOPs; then each node the target refused, with its reason."""
    from dialects.op_costs import flops

    work = {op: flops(op) for op in placement.nodes}
    total = sum(work.values()) or 1
    lines = [f"placement for target {placement.target}: {len(parts)} partition(s)"]
    for target in dict.fromkeys([placement.target, FALLBACK]):
        ops = [op for op, t in placement.nodes.items() if t == target]
        count = sum(1 for p in parts if p.target == target)
        lines.append(f"  {target:10s} {len(ops):4d} nodes  {100 * sum(work[o] for o in ops) / total:5.1f}% of FLOPs"
                     f"  {count} partition(s)")
    for i, part in enumerate(parts):
        lines.append(f"  partition {i} on {part.target}: {', '.join(o.node_name for o in part.ops)}")
    for op, reason in placement.reasons.items():
        lines.append(f"  not on {placement.target}: {op.describe()}: {reason}")
    return "\n".join(lines)


def read_placement(path: str | Path) -> dict[str, str]:
    """node name -> target, from a file written by --placement (and perhaps edited)."""
    try:
        data = json.loads(Path(path).read_text())
        nodes = data["nodes"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DlcError(f"{path}: not a placement file ({error})",
                       "write one with `dlc compile --target npu-sim --placement out.json`") from None
    return {str(k): str(v) for k, v in nodes.items()}


def write_placement(path: str | Path, placement: Placement) -> None:
    Path(path).write_text(json.dumps(placement.to_json(), indent=2) + "\n")


# --- compiling and running the partitions -----------------------------------------------------

def compile_partitioned(module, target, options, instrument=None) -> PartitionedExecutable:
    """Place, partition, and build each partition with its target (graph-phase `module`)."""
    from dlc.targets import get_target

    forced = read_placement(options.placement_from) if options.placement_from else None
    placement = place(module, target, forced)
    parts = partition(module, placement)
    main = _main(module)
    names = value_names(main)
    steps = []
    for i, part in enumerate(parts):
        backend = target if part.target == target.name else get_target(part.target)
        sub = partition_module(module, part, names)
        try:
            executable = _build(sub, backend, options, instrument)
        except DlcError as error:
            raise CompileError(f"partition {i} on {part.target} "
                               f"({', '.join(o.node_name for o in part.ops[:4])}...): {error.message}",
                               error.hint) from error
        steps.append(_Step(f"partition {i} ({part.target})", part.target, executable,
                           [names[v] for v in part.inputs], [names[v] for v in part.outputs]))
    return PartitionedExecutable(module, steps, placement, parts, names)


def _build(sub, backend, options, instrument):
    """Run `backend`'s pipeline from the graph phase on a partition module, then build it."""
    from xdsl.dialects.builtin import StringAttr

    from dialects.context import make_context
    from dlc.targets import describe_target_on
    from passes.pipeline import run_passes

    sub.attributes["dlc.target"] = StringAttr(backend.name)
    describe_target_on(sub, backend, options.threads)
    for _, passes in backend.pipeline(options):
        run_passes(make_context(), sub, passes, instrument)
    return backend.build(sub, options)


@dataclass
class _Step:
    label: str
    target: str
    executable: object
    inputs: list[str]
    outputs: list[str]


class PartitionedExecutable:
    """An ordered list of partition calls; `run` returns the same outputs as a `cpu` build."""

    def __init__(self, module, steps: list[_Step], placement: Placement, parts, names):
        from dialects.onnx import WeightOp
        from dialects.types import numpy_dtype
        from dialects.weights import weights_of
        from dlc.runtime import TensorSpec

        main = _main(module)
        block = main.body.block
        self.steps, self.placement, self.partitions = steps, placement, parts
        self.inputs = [TensorSpec(names[a], tuple(a.type.get_shape()), str(numpy_dtype(a.type.element_type)))
                       for a in block.args]
        returned = list(block.last_op.operands)
        out_names = [a.data for a in main.attributes["dlc.output_names"].data]
        self.outputs = [TensorSpec(n, tuple(v.type.get_shape()), str(numpy_dtype(v.type.element_type)))
                        for n, v in zip(out_names, returned)]
        # A graph output may be a weight (a folded constant): it needs no partition.
        self._constants = {f"@{v.owner.weight_name}": weights_of(module)[v.owner.weight_name]
                           for v in returned if isinstance(v.owner, WeightOp)}
        self._returned = [f"@{v.owner.weight_name}" if isinstance(v.owner, WeightOp) else names[v]
                          for v in returned]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from dlc.runtime import check_inputs

        env = dict(self._constants)
        env.update(zip((s.name for s in self.inputs), check_inputs(self.inputs, feeds)))
        for step in self.steps:
            # Copy in: each partition gets its own buffers, as a device memory would.
            results = step.executable.run({name: np.array(env[name], copy=True) for name in step.inputs})
            env.update((name, results[name]) for name in step.outputs)
        return {spec.name: np.asarray(env[name]).reshape(spec.shape)
                for spec, name in zip(self.outputs, self._returned)}

    def npu_reports(self) -> list[tuple[str, object]]:
        """(partition label, its report) of each partition that kept one from the latest run."""
        return [(s.label, s.executable.last_report) for s in self.steps
                if getattr(s.executable, "last_report", None) is not None]

    def format_reports(self) -> str:
        reports = self.npu_reports()
        if not reports:
            return "no partition reported a cost model"
        lines = [report.format(label) for label, report in reports]
        total = reports[0][1]
        for _, report in reports[1:]:
            total = total + report
        lines.append(total.format("total"))
        return "\n".join(lines)

    def save(self, directory) -> None:
        raise CompileError("a model split across targets has no single artifact yet; "
                           "run the .onnx model with --target, or compile for cpu")
