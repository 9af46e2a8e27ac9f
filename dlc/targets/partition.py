"""Graph partitioning across targets, like ONNX Runtime's execution providers (issue 6).

A partial target (`Target.partial`, e.g. npu-sim) takes the nodes its `supports`
accepts; the rest fall back to `cpu`. A target that goes through the shared
phases puts `PlaceNodesPass` first in its `kernels` stage: the placement is
written on the module (`dlc.placement`, read by form-kernels), so kernels are
formed and fused per target on the whole graph and `dlc explain` shows them.
Units (kernels, or nodes for a target that starts from `graph`) of one target
are grouped into maximal partitions with no cycle between partitions (checked
with networkx); each partition becomes a module compiled by its target from the
phase it is at, and the model runs as the ordered list of partition calls,
copying values at the edges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
from xdsl.passes import ModulePass

from dlc.errors import CompileError, DlcError

FALLBACK = "cpu"


@dataclass
class Partition:
    target: str
    ops: list  # units (kernel.launch ops, or onnx ops) in program order
    inputs: list = field(default_factory=list)  # values read from outside (graph inputs, other partitions)
    outputs: list = field(default_factory=list)  # values used outside

    @property
    def nodes(self) -> list[str]:
        """The ONNX node names its units hold."""
        return [name for op in self.ops for name in _node_names(op)]


@dataclass
class Placement:
    """Where every node goes (by node name), and why the target refused the ones it refused."""

    target: str
    nodes: dict  # node name -> target name
    reasons: dict  # node name -> why `target` does not take it
    kinds: dict = field(default_factory=dict)  # node name -> ONNX op type

    def to_json(self) -> dict:
        return {"target": self.target, "nodes": dict(self.nodes), "unsupported": dict(self.reasons)}

    def describe(self, node: str) -> str:
        return f"node '{node}' ({self.kinds[node]})" if node in self.kinds else f"node '{node}'"


def _node_names(unit) -> list[str]:
    from dialects.kernel import LaunchOp

    if isinstance(unit, LaunchOp):
        return [n.data for n in unit.nodes.data] if unit.nodes else []
    return [unit.node_name]


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
    placement = Placement(target.name, {}, {}, {op.node_name: op.onnx_type for op in nodes})
    by_op = {}
    for op in nodes:
        support = target.supports(op)
        if not support.ok:
            placement.reasons[op.node_name] = support.reason
        choice = forced.get(op.node_name)
        if choice not in (None, target.name, FALLBACK):
            raise DlcError(f"placement: {op.describe()} is forced onto '{choice}'; "
                           f"choose '{target.name}' or '{FALLBACK}'")
        if choice == target.name and not support.ok:
            raise DlcError(f"placement: {op.describe()} cannot run on {target.name}: {support.reason}")
        if choice is None and op.onnx_type in VIEW_OPS:
            continue  # views follow their data, below
        by_op[op] = choice or (target.name if support.ok else FALLBACK)
    for op in nodes:
        if op not in by_op:
            by_op[op] = _view_target(op, by_op, placement.reasons)
    placement.nodes = {op.node_name: by_op[op] for op in nodes}
    return placement


def _view_target(op, by_op: dict, reasons: dict) -> str:
    """A view moves no data: put it with its producer, else with its first placed user."""
    if op.node_name in reasons:
        return FALLBACK
    producer = op.operands[0].owner
    if producer in by_op:
        return by_op[producer]
    users = [use.operation for use in op.results[0].uses if use.operation in by_op]
    return by_op[users[0]] if users else FALLBACK


@dataclass(frozen=True)
class PlaceNodesPass(ModulePass):
    """Place each node on the partial target or on cpu (`supports`), written as `dlc.placement`."""

    name = "place-nodes"
    target: object = None  # the partial Target (its `supports` decides)
    placement_from: str | None = None  # a placement file forcing nodes (--placement-from)

    def apply(self, ctx, op) -> None:
        from xdsl.dialects.builtin import DictionaryAttr, StringAttr

        forced = read_placement(self.placement_from) if self.placement_from else None
        placement = place(op, self.target, forced)
        op.attributes["dlc.placement"] = DictionaryAttr(
            {node: StringAttr(target) for node, target in placement.nodes.items()})
        op.attributes["dlc.unsupported"] = DictionaryAttr(
            {node: StringAttr(reason) for node, reason in placement.reasons.items()})


def kernel_stage(target, options) -> list:
    """The kernels stage of a partial target: place the nodes, form kernels, fuse them by the
    target's rules (what npu-sim and cuda share before their own lowering)."""
    from passes import all_passes

    p = all_passes()
    kernels = [PlaceNodesPass(target, options.placement_from), p["form-kernels"]()]
    if options.fusion != "none":
        kernels.append(p["fuse-kernels"](mode=options.fusion))
    return kernels


def placement_of(module) -> Placement:
    """The placement PlaceNodesPass wrote on a module (kernels phase or later)."""
    from dialects.onnx import OnnxOp

    target = module.attributes["dlc.target"].data
    nodes = {n: t.data for n, t in module.attributes["dlc.placement"].data.items()}
    reasons = {n: r.data for n, r in module.attributes["dlc.unsupported"].data.items()}
    kinds = {op.node_name: op.onnx_type for op in module.walk() if isinstance(op, OnnxOp)}
    return Placement(target, nodes, reasons, kinds)


def units_of(module, placement: Placement) -> dict:
    """Top-level op -> target: each kernel.launch on its own target, each other node (views, or
    every node of a graph-phase module) where the placement put it."""
    from dialects.kernel import LaunchOp
    from dialects.onnx import OnnxOp

    units = {}
    for op in _main(module).body.block.ops:
        if isinstance(op, LaunchOp):
            units[op] = op.target.data
        elif isinstance(op, OnnxOp):
            units[op] = placement.nodes[op.node_name]
    return units


def partition(module, units: dict) -> list[Partition]:
    """Maximal acyclic partitions of same-target units, in an order that respects dependencies."""
    nodes = list(units)
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
            if a != b and units[producer] == units[op] and not _cycle(graph, a, b):
                merge(a, b)
    ids = sorted(members)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if a in members and b in members and units[members[a][0]] == units[members[b][0]] \
                    and not _cycle(graph, a, b):
                merge(a, b)
    order = nx.lexicographical_topological_sort(graph, key=lambda g: min(index[o] for o in members[g]))
    parts = [Partition(units[members[g][0]], sorted(members[g], key=index.get)) for g in order]
    for part in parts:
        _boundary(part, _main(module))
    return parts


def _reads(unit) -> list:
    """Values a top-level op reads from outside it: its operands and those of the ops it holds."""
    inside = {result for op in unit.walk() for result in op.results}
    inside |= {arg for op in unit.walk() for region in op.regions for block in region.blocks
               for arg in block.args}
    values = []
    for op in unit.walk():
        values += [v for v in op.operands if v not in inside and v not in values]
    return values


def _top(op, block):
    """The op of `block` that is or holds `op`."""
    while op.parent_block() is not block:
        op = op.parent_op()
    return op


def _producers(op, index):
    for operand in _reads(op):
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
    block = main.body.block
    for op in part.ops:
        for operand in _reads(op):
            if operand.owner not in inside and not isinstance(operand.owner, WeightOp | NoneOp) \
                    and operand not in part.inputs:
                part.inputs.append(operand)
        for result in op.results:
            if any(_top(use.operation, block) not in inside for use in result.uses):
                part.outputs.append(result)


def value_names(main) -> dict:
    """A unique name per SSA value crossing partitions: graph input names, else `unit:result`."""
    from dialects.kernel import LaunchOp
    from dialects.onnx import OnnxOp

    names = {arg: a.data for arg, a in zip(main.body.block.args, main.attributes["dlc.input_names"].data)}
    for op in main.body.block.ops:
        if isinstance(op, LaunchOp | OnnxOp):
            label = op.kernel_name if isinstance(op, LaunchOp) else op.node_name
            names.update((result, f"{label}:{j}") for j, result in enumerate(op.results))
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
        for operand in _reads(op):
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
    work = {target: 0 for target in (placement.target, FALLBACK)}
    for part in parts:
        work[part.target] = work.get(part.target, 0) + sum(_flops(op) for op in part.ops)
    total = sum(work.values()) or 1
    lines = [f"placement for target {placement.target}: {len(parts)} partition(s)"]
    for target in dict.fromkeys([placement.target, FALLBACK]):
        nodes = [n for n, t in placement.nodes.items() if t == target]
        count = sum(1 for p in parts if p.target == target)
        lines.append(f"  {target:10s} {len(nodes):4d} nodes  {100 * work[target] / total:5.1f}% of FLOPs"
                     f"  {count} partition(s)")
    for i, part in enumerate(parts):
        lines.append(f"  partition {i} on {part.target}: {', '.join(part.nodes)}")
    for node, reason in placement.reasons.items():
        lines.append(f"  not on {placement.target}: {placement.describe(node)}: {reason}")
    return "\n".join(lines)


def _flops(unit) -> int:
    """A unit's FLOPs: its ONNX ops', or what convert-kernels-to-npu recorded of the ops it lowered."""
    from xdsl.dialects.builtin import IntegerAttr

    from dialects.onnx import OnnxOp
    from passes.lowering.utils.npu_kernels import flops_of  # op_costs', and 8-bit contractions' MACs

    recorded = unit.attributes.get("dlc.flops")
    if isinstance(recorded, IntegerAttr):
        return recorded.value.data
    return sum(flops_of(op) for op in unit.walk() if isinstance(op, OnnxOp))


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

    if "dlc.placement" in module.attributes:  # the target's pipeline placed nodes and formed kernels
        placement = placement_of(module)
    else:
        forced = read_placement(options.placement_from) if options.placement_from else None
        placement = place(module, target, forced)
    parts = partition(module, units_of(module, placement))
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
                               f"({', '.join(part.nodes[:4])}...): {error.message}",
                               error.hint) from error
        steps.append(_Step(f"partition {i} ({part.target})", part.target, executable,
                           [names[v] for v in part.inputs], [names[v] for v in part.outputs]))
    return PartitionedExecutable(module, steps, placement, parts, names)


def _build(sub, backend, options, instrument):
    """Run `backend`'s pipeline on a partition module from the phase it is at, then build it."""
    from xdsl.dialects.builtin import StringAttr

    from dialects.context import make_context
    from dialects.kernel import LaunchOp
    from dlc.targets import describe_target_on
    from passes.pipeline import run_passes

    sub.attributes["dlc.target"] = StringAttr(backend.name)
    describe_target_on(sub, backend, options.threads, options)
    formed = any(isinstance(op, LaunchOp) for op in _main(sub).body.block.ops)
    for phase, passes in backend.pipeline(options):
        if not (formed and phase == "kernels"):  # kernels were formed and fused on the whole graph
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
        from dlc.targets import constant_inputs_of

        main = _main(module)
        block = main.body.block
        self.steps, self.placement, self.partitions = steps, placement, parts
        self.inputs = [TensorSpec(names[a], tuple(a.type.get_shape()), str(numpy_dtype(a.type.element_type)))
                       for a in block.args]
        self.constant_inputs = constant_inputs_of(module)
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
        from dlc.targets.partition_artifact import run_steps

        return run_steps(self.steps, self.inputs, self.constant_inputs, self._constants, self._returned,
                         self.outputs, feeds)

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
        """One directory per partition and partitions.json (dlc/targets/partition_artifact.py)."""
        from dlc.targets.partition_artifact import save_partitioned

        save_partitioned(self, directory)
