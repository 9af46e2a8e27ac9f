"""Merge kernel.launch ops into fused kernels, recording every decision in the IR.

The rules are data (`FusionRules`), read per target from the module's
`dlc.fusion_rules = {TARGET = {...}}` (written from the target description, like
MLIR's DLTI); a target without an entry gets `DEFAULT_RULES`, TVM's operator
patterns (dialects/op_classes.py): elementwise ops fuse into their producers
(chains; a contraction's epilogue; after a reduction), elementwise producers fuse
into reductions, and reductions chain with their elementwise neighbours so
Softmax and LayerNormalization (also the decomposed forms exporters write) become
one kernel. Contraction inputs, injective and opaque ops stay apart. A merge that
would make the kernel graph cyclic (checked on a small digraph, `_Digraph`), join kernels placed
on different targets, or break the target's limits is refused.

Each fused launch carries `dlc.fusion`: one line per node saying how it joined,
and `dlc.apart`: one line per producer edge that was not fused, with the rule.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dialects.kernel import LaunchOp, YieldOp
from dialects.onnx import OnnxOp
from dialects.op_classes import CONTRACTION, ELEMENTWISE, REDUCTION, op_class

MODES = ("none", "elementwise", "all")

# FusionRules, as a target description writes them:
#   apart:     consumer class -> why ops of that class never join a producer's kernel;
#   producers: the classes of producers a consumer may join;
#   joins:     rows tried in order, the first that matches decides: `consumer` class, and
#              optionally `kernel_has` (classes all in the producer's kernel), `producer` class,
#              `modes` (--fusion modes it applies in); `fuse` (1/0) and `reason`
#              ({mode} is replaced). A consumer class without rows runs as a kernel of its own;
#   chain:     1 if a kernel is one op and a chain of ops each continuing the last one's value
#              in place (an NPU's output tile): the value joined must be the kernel's last,
#              read by nothing else, and keep its shape;
#   classes:   optional, op type -> class where the target's units differ from
#              dialects/op_classes.py (npu-sim: QuantizeLinear is elementwise on its vector
#              unit, QLinearConv a contraction on its MAC array).
DEFAULT_RULES = {
    "apart": {CONTRACTION: "inputs of a contraction are not fused (it reads them whole, as GEMM panels)"},
    "producers": [ELEMENTWISE, REDUCTION, CONTRACTION],
    "joins": [
        {"consumer": ELEMENTWISE, "kernel_has": [CONTRACTION, REDUCTION], "fuse": 0,
         "reason": "a contraction's epilogue holds elementwise ops only"},
        {"consumer": ELEMENTWISE, "kernel_has": [CONTRACTION], "fuse": 1,
         "reason": "elementwise epilogue of a contraction"},
        {"consumer": ELEMENTWISE, "kernel_has": [REDUCTION], "modes": ["elementwise"], "fuse": 0,
         "reason": "--fusion={mode}: elementwise ops do not join reductions"},
        {"consumer": ELEMENTWISE, "producer": ELEMENTWISE, "fuse": 1, "reason": "elementwise chain"},
        {"consumer": ELEMENTWISE, "fuse": 1, "reason": "elementwise after a reduction"},
        {"consumer": REDUCTION, "modes": ["elementwise"], "fuse": 0,
         "reason": "--fusion={mode}: reductions are not fused"},
        {"consumer": REDUCTION, "kernel_has": [CONTRACTION], "fuse": 0,
         "reason": "a reduction after a contraction starts a new kernel"},
        {"consumer": REDUCTION, "fuse": 1, "reason": "reduction with its elementwise neighbours"},
    ],
    "chain": 0,
}


@dataclass
class _Group:
    launches: list[LaunchOp]
    classes: set[str]
    notes: list[str]
    apart: list[str]
    tail: SSAValue  # the value its last joined op made (what a chain continues)


def _node_op(launch: LaunchOp) -> OnnxOp:
    return next(o for o in launch.body.block.ops if isinstance(o, OnnxOp))


def _python(attribute):
    """A rules attribute (dictionary, array, string, integer) as plain Python values."""
    if isinstance(attribute, DictionaryAttr):
        return {key: _python(value) for key, value in attribute.data.items()}
    if isinstance(attribute, ArrayAttr):
        return [_python(value) for value in attribute.data]
    if isinstance(attribute, IntegerAttr):
        return attribute.value.data
    return attribute.data


def rules_by_target(module: ModuleOp) -> dict[str, dict]:
    """The fusion rules each target wrote on the module (`dlc.fusion_rules`)."""
    rules = module.attributes.get("dlc.fusion_rules")
    return _python(rules) if isinstance(rules, DictionaryAttr) else {}


def class_of(rules: dict, onnx_type: str) -> str:
    """An op type's class under a target's rules: its `classes`, else dialects/op_classes.py's."""
    return rules.get("classes", {}).get(onnx_type) or op_class(onnx_type)


def fusion_rule(rules: dict, mode: str, producer: _Group, consumer_class: str,
                producer_class: str) -> tuple[bool, str]:
    """(fuse?, rule): may a consumer of class `consumer_class` join the producer's group?"""
    if consumer_class in rules["apart"]:
        return False, rules["apart"][consumer_class]
    rows = [row for row in rules["joins"] if row["consumer"] == consumer_class]
    if not rows:
        return False, f"{consumer_class} ops run as kernels of their own"
    if producer_class not in rules["producers"]:
        return False, f"the producer is {producer_class}: not fused"
    for row in rows:
        if (set(row.get("kernel_has", ())) <= producer.classes
                and row.get("producer", producer_class) == producer_class
                and mode in row.get("modes", MODES)):
            return bool(row["fuse"]), row["reason"].format(mode=mode)
    return False, f"no {consumer_class} rule of the target matches"


def _breaks_chain(producer: _Group, consumer_group: _Group, value: SSAValue,
                  consumer: OnnxOp) -> str | None:
    """Why `consumer` cannot continue the producer's chain in place (None: it can)."""
    if len(consumer_group.launches) > 1:
        return "it already continues another kernel"
    if value is not producer.tail:
        return "it does not read the kernel's last value"
    if {use.operation for use in value.uses} != {consumer}:
        return "the kernel's last value has other users (a chain stores only its end)"
    if consumer.results[0].type.get_shape() != value.type.get_shape():
        return "it changes the shape of the kernel's value"
    return None


@dataclass(frozen=True)
class FuseKernelsPass(ModulePass):
    """Fuse kernel.launch ops by operator class; record why each node joined or stayed apart."""

    name = "fuse-kernels"
    mode: str = "all"
    max_ops: int = 64

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.mode not in MODES:
            from dialects.diagnostics import CompileError

            raise CompileError(f"fuse-kernels: mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        for function in op.ops:
            if isinstance(function, func.FuncOp) and not function.is_declaration:
                self._fuse(function.body.block, rules_by_target(op))

    def _fuse(self, block: Block, target_rules: dict[str, dict]) -> None:
        launches = [o for o in block.ops if isinstance(o, LaunchOp)]
        group_of: dict[LaunchOp, _Group] = {}
        producer_of: dict[SSAValue, LaunchOp] = {}
        graph = _Digraph()  # kernel-level dependency graph over group ids (and views)
        view_node: dict[SSAValue, int] = {}  # a view's result -> the view's node in `graph`
        rank: dict[int, int] = {}  # a topological order of `graph`, kept through merges (_merge_ranks)
        for position, op in enumerate(block.ops):
            if isinstance(op, LaunchOp):
                node = _node_op(op)
                classes = {class_of(target_rules.get(op.target.data, DEFAULT_RULES), node.onnx_type)}
                group_of[op] = _Group([op], classes, [f"{node.node_name}: starts the kernel"],
                                      [], op.results[0] if op.results else None)
                graph.add_node(id(group_of[op]))
                rank[id(group_of[op])] = position
                for result in op.results:
                    producer_of[result] = op
            elif isinstance(op, OnnxOp) and op.operands and op.operands[0] in producer_of:
                # A view (Reshape, Flatten, ...) between kernels: its users depend on the
                # kernel that made its input. The view is a node of its own in the graph,
                # never merged, so a group that reads a view of its own result is a cycle.
                source = op.operands[0]
                graph.add_edge(view_node.get(source, id(group_of[producer_of[source]])), id(op))
                rank[id(op)] = position
                for result in op.results:
                    producer_of[result] = producer_of[source]
                    view_node[result] = id(op)

        def edges_of(launch: LaunchOp):
            for o in launch.body.block.ops:
                for operand in o.operands:
                    if operand in producer_of:
                        yield operand, producer_of[operand]

        for launch in launches:
            for value, producer in edges_of(launch):
                graph.add_edge(view_node.get(value, id(group_of[producer])), id(group_of[launch]))

        for launch in launches:
            node = _node_op(launch)
            for value, producer in edges_of(launch):
                target, mine = group_of[producer], group_of[launch]
                if target is mine:
                    continue
                producer_node = _node_op(producer)
                rules = target_rules.get(launch.target.data, DEFAULT_RULES)
                ok, rule = (False, "--fusion=none") if self.mode == "none" else fusion_rule(
                    rules, self.mode, target, class_of(rules, node.onnx_type), class_of(rules, producer_node.onnx_type))
                if launch.target != producer.target:
                    ok, rule = False, (f"kernels on different targets ({producer.target.data}, "
                                       f"{launch.target.data}) are not fused")
                if ok and not isinstance(value.owner, LaunchOp):
                    ok, rule = False, f"connected through a {value.owner.onnx_type} view: not fused"
                if ok and CONTRACTION in target.classes and CONTRACTION in mine.classes:
                    ok, rule = False, "a kernel holds at most one contraction"
                if ok and len(target.launches) + len(mine.launches) > self.max_ops:
                    ok, rule = False, f"the kernel would exceed the target's limit of {self.max_ops} ops"
                if ok and _creates_cycle(graph, rank, id(target), id(mine)):
                    ok, rule = False, "fusing would create a cycle between kernels"
                if ok and rules.get("chain"):
                    reader = next(o for o in launch.body.block.ops if value in o.operands)
                    broken = _breaks_chain(target, mine, value, reader)
                    if broken:
                        ok, rule = False, f"the target's kernels are chains: {broken}"
                if not ok:
                    mine.apart.append(f"{node.node_name} <- {producer_node.node_name}: {rule}")
                    continue
                mine.notes[0] = f"{node.node_name}: joined {producer_node.node_name}'s kernel ({rule})"
                _merge(graph, rank, group_of, target, mine)

        done = set()
        # Block order, read once: materialising a group keeps the order of the other ops, and
        # reading it per group was quadratic in the kernels.
        position = {op: i for i, op in enumerate(block.ops)}
        for launch in launches:
            group = group_of[launch]
            if id(group) in done:
                continue
            done.add(id(group))
            _materialise(group, position)
        _reorder_topologically(block)


class _Digraph:
    """The directed graph this pass keeps: networkx.DiGraph's few operations that it used
    (add_node, add_edge, successors, predecessors, has_edge, contracted_nodes without self
    loops, lexicographical_topological_sort). Importing networkx took 0.1-0.14 s of every
    compile (issue 16); `_creates_cycle` and `_merge_ranks` take either graph."""

    def __init__(self):
        # node -> its successors / predecessors, in insertion order (dicts used as ordered sets)
        self._succ: dict = {}
        self._pred: dict = {}

    def add_node(self, node) -> None:
        if node not in self._succ:
            self._succ[node], self._pred[node] = {}, {}

    def add_edge(self, source, target) -> None:
        self.add_node(source)
        self.add_node(target)
        self._succ[source][target] = None
        self._pred[target][source] = None

    def successors(self, node):
        return iter(self._succ[node])

    def predecessors(self, node):
        return iter(self._pred[node])

    def has_edge(self, source, target) -> bool:
        return target in self._succ.get(source, ())

    def contract(self, kept, merged) -> None:
        """`merged` into `kept`: its edges become kept's (none from kept to itself), and it goes
        (networkx.contracted_nodes(graph, kept, merged, self_loops=False, copy=False))."""
        outgoing = [node for node in self._succ[merged] if node != kept]
        incoming = [node for node in self._pred[merged] if node != kept]
        for node in self._succ.pop(merged):
            self._pred[node].pop(merged, None)
        for node in self._pred.pop(merged):
            self._succ[node].pop(merged, None)
        for node in outgoing:
            self.add_edge(kept, node)
        for node in incoming:
            self.add_edge(node, kept)

    def topological_order(self, key) -> list:
        """Every node after its predecessors, the smallest `key` first among those ready
        (networkx.lexicographical_topological_sort); a cycle is an error."""
        index = {node: i for i, node in enumerate(self._succ)}
        waiting = {node: len(preds) for node, preds in self._pred.items() if preds}
        ready = [(key(node), index[node], node) for node, preds in self._pred.items() if not preds]
        heapq.heapify(ready)
        order = []
        while ready:
            node = heapq.heappop(ready)[2]
            order.append(node)
            for child in self._succ[node]:
                waiting[child] -= 1
                if not waiting[child]:
                    del waiting[child]
                    heapq.heappush(ready, (key(child), index[child], child))
        if waiting:
            raise ValueError("fuse-kernels: the kernel graph has a cycle")
        return order


def _reorder_topologically(block: Block) -> None:
    """Restore def-before-use after merging: stable topological order of the block's ops.

    A fused launch sits where its last member was; an outside op that read an
    earlier member's result may now come before it (it cannot also feed a later
    member: that would be a cycle, which the rules refuse).
    """
    ops = list(block.ops)
    terminator = ops.pop()
    position = {op: i for i, op in enumerate(ops)}
    graph = _Digraph()
    for op in ops:
        graph.add_node(op)
    for op in ops:
        for inner in op.walk():
            for operand in inner.operands:
                owner = operand.owner  # an op of this block, a nested op, or a Block (argument)
                if owner in position and owner is not op:
                    graph.add_edge(owner, op)
    order = graph.topological_order(position.__getitem__)
    for op in order:
        op.detach()
    block.insert_ops_before(order, terminator)


def _creates_cycle(graph, rank: dict[int, int], a: int, b: int) -> bool:
    """Would merging groups a and b make the group graph cyclic? (a path a -> x -> b or b -> x -> a)

    `rank` is a topological order of `graph`: a path to b passes only nodes ranked below b, so
    the search stops there (a search of everything after a was quadratic in the kernels).
    """
    if rank[a] > rank[b]:
        a, b = b, a  # a path from the later node to the earlier one cannot exist
    return bool(_reachable(graph.successors, rank, a, lambda node: node != b and rank[node] < rank[b],
                           goal=lambda node: graph.has_edge(node, b)))


def _reachable(neighbours, rank: dict[int, int], start: int, keep, goal=None) -> set[int]:
    """Nodes reached from `start` through nodes that `keep` accepts (`start` excluded); with
    `goal`, a non-empty set as soon as one of them satisfies it."""
    seen: set[int] = set()
    stack = [start]
    while stack:
        for node in neighbours(stack.pop()):
            if node in seen or not keep(node):
                continue
            if goal is not None and goal(node):
                return {node}
            seen.add(node)
            stack.append(node)
    return set() if goal is not None else seen


def _merge_ranks(graph, rank: dict[int, int], a: int, b: int) -> None:
    """Keep `rank` a topological order when b (ranked after a, fed by it) merges into a.

    Pearce and Kelly's reordering (a dynamic topological sort, JEA 2006) of the nodes ranked
    between them: those that reach b first, then the merged node (b's place), then those that
    a reaches; the rest keep their ranks. No node is both, or the merge would make a cycle.
    """
    low, high = rank[a], rank[b]
    ahead = _reachable(graph.successors, rank, a, lambda node: rank[node] < high)
    behind = _reachable(graph.predecessors, rank, b, lambda node: rank[node] > low)
    moved = [*sorted(behind, key=rank.__getitem__), b, a, *sorted(ahead, key=rank.__getitem__)]
    for node, slot in zip(moved, sorted(rank[node] for node in moved)):
        rank[node] = slot
    rank[a] = rank.pop(b)


def _merge(graph: _Digraph, rank: dict[int, int], group_of: dict, target: _Group, other: _Group) -> None:
    target.launches += other.launches
    target.classes |= other.classes
    target.notes += other.notes
    target.apart += other.apart
    target.tail = other.tail
    for launch in other.launches:
        group_of[launch] = target
    _merge_ranks(graph, rank, id(target), id(other))
    graph.contract(id(target), id(other))


def _materialise(group: _Group, position: dict[Operation, int]) -> None:
    """Replace the group's launches by one launch holding all their ops, in block order
    (`position`: each launch's place in the block)."""
    launches = sorted(group.launches, key=position.__getitem__)
    if len(launches) == 1:
        launch = launches[0]
        launch.attributes["dlc.fusion"] = ArrayAttr([StringAttr(n) for n in group.notes])
        launch.attributes["dlc.apart"] = ArrayAttr([StringAttr(n) for n in group.apart])
        return
    members = set(launches)
    # Results used outside the group must be yielded by the fused launch.
    outside = []
    for launch in launches:
        for result in launch.results:
            if any(use.operation.parent_op() not in members and use.operation not in members
                   for use in result.uses):
                outside.append(result)
    inner_value = {}
    ops = []
    for launch in launches:
        yield_op = launch.body.block.last_op
        for result, value in zip(launch.results, yield_op.operands):
            inner_value[result] = value
    for launch in launches:
        for o in list(launch.body.block.ops):
            if isinstance(o, YieldOp):
                continue
            o.detach()
            for i, operand in enumerate(o.operands):
                if operand in inner_value and operand.owner in members:
                    o.operands[i] = inner_value[operand]
            ops.append(o)
    nodes = [n.data for launch in launches for n in (launch.nodes.data if launch.nodes else [])]
    first = launches[0]
    anchor = next((o for o in ops if op_class(o.onnx_type) == CONTRACTION), ops[0])
    fused = LaunchOp(f"{first.kernel_name.split('_')[0]}_{anchor.onnx_type}_fused", first.target.data,
                     [r.type for r in outside], Region(Block()), nodes=nodes)
    fused.body.block.add_ops(ops)
    fused.body.block.add_op(YieldOp([inner_value[r] for r in outside]))
    fused.attributes["dlc.fusion"] = ArrayAttr([StringAttr(n) for n in group.notes])
    fused.attributes["dlc.apart"] = ArrayAttr([StringAttr(n) for n in group.apart])
    # Placed where the last member was; _reorder_topologically fixes def-before-use.
    Rewriter.insert_op(fused, InsertPoint.before(launches[-1]))
    for result, new in zip(outside, fused.results):
        result.replace_all_uses_with(new)
    for launch in reversed(launches):
        for result in launch.results:
            for use in list(result.uses):
                raise AssertionError(f"fuse-kernels: dangling use of {launch.kernel_name} by {use.operation.name}")
        Rewriter.erase_op(launch)
