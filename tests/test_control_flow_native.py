"""Loops compiled once and run natively (dialects/loop.py, dlc/frontend/control_flow.py
`import_native_loop`, passes/lowering/rules/loop.py, the emitter's `loop.run`) against onnxruntime:
constant and run-time trip counts, a condition the body computes (TorchScript's `while`), scan
outputs, outer values, nested loops, and every MLIR phase printed and read back.

Tolerance: the bodies are small MatMuls and elementwise ops iterated up to a few hundred times
(tanh keeps the state bounded); dlc and onnxruntime differ by MatMul's summation order only,
so 1e-5 relative with 1e-6 absolute.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

import dlc
from dlc.driver import MLIR_PHASES, compile_model, write_mlir
from dlc.errors import DlcError
from dlc.frontend.control_flow import UNROLL_MAX_NODES
from dlc.frontend.importer import import_model

F, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
v = helper.make_tensor_value_info


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "native_loop", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _assert_matches(model, feeds_list, compiled=None) -> None:
    compiled = compiled or dlc.compile(model)
    for feeds in feeds_list:
        expected = run_onnxruntime(model, feeds)
        actual = compiled.run(feeds)
        for name, want in zip(actual, expected):
            assert actual[name].shape == want.shape, name
            np.testing.assert_allclose(actual[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def _rnn_loop(trips=None, hidden=8, scan=False, cond_nodes=(), cond_out="cond_in", constants=(), inputs=()):
    """h = tanh(h @ W + b + x) for M steps; x is an outer run-time input, W and b outer
    constants; with `scan`, each step's h is also stacked."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["h_in", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Add", ["a", "x"], ["a2"]), helper.make_node("Tanh", ["a2"], ["h_out"]),
             *cond_nodes, helper.make_node("Identity", [cond_out], ["cond_out"])]
    outputs = [v("cond_out", BOOL, []), v("h_out", F, [2, hidden])]
    if scan:
        nodes.append(helper.make_node("Identity", ["h_out"], ["h_scan"]))
        outputs.append(v("h_scan", F, [2, hidden]))
    body = helper.make_graph(nodes, "body", [v("i", I64, []), v("cond_in", BOOL, []), v("h_in", F, None)], outputs)
    initializers = [numpy_helper.from_array((rng.standard_normal((hidden, hidden)) * 0.5).astype(np.float32), "W"),
                    numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b"),
                    helper.make_tensor("go", BOOL, [], [True]), *constants]
    inputs = [v("h0", F, [2, hidden]), v("x", F, [2, hidden]), *inputs]
    if trips is None:
        inputs.append(v("M", I64, []))
    else:
        initializers.append(helper.make_tensor("M", I64, [], [trips]))
    outs = [v("h", F, [2, hidden])] + ([v("all", F, [trips, 2, hidden])] if scan else [])
    loop = helper.make_node("Loop", ["M", "go", "h0"], [o.name for o in outs], name="steps", body=body)
    return _model([loop], inputs, outs, initializers)


def _feeds(hidden=8, **extra):
    rng = np.random.default_rng(1)
    return {"h0": rng.standard_normal((2, hidden)).astype(np.float32),
            "x": (rng.standard_normal((2, hidden)) * 0.1).astype(np.float32), **extra}


def _count(module, name):
    return sum(1 for op in module.walk() if op.name == name)


def test_constant_trip_count_compiles_the_body_once():
    """300 steps: one onnx.Loop and one copy of the body, whatever the trip count."""
    model = _rnn_loop(300)
    module = import_model(model)
    assert _count(module, "onnx.Loop") == 1 and _count(module, "onnx.MatMul") == 1
    longer = import_model(_rnn_loop(100_000))
    assert len(list(longer.walk())) == len(list(module.walk()))
    _assert_matches(model, [_feeds()])


def test_run_time_trip_count_including_zero():
    model = _rnn_loop(None)
    compiled = dlc.compile(model)
    _assert_matches(model, [_feeds(M=np.array(m, np.int64)) for m in (0, 1, 7, 250)], compiled)
    # A negative M runs no iteration (onnxruntime does the same).
    _assert_matches(model, [_feeds(M=np.array(-3, np.int64))], compiled)


@pytest.mark.parametrize("trips", [2**63 - 1, 90])
def test_while_loop_with_the_condition_computed_by_the_body(trips):
    """`while sum(h) < limit: h = h + x` as TorchScript exports it (M = INT64_MAX, the body
    computes cond), and the same with a trip count that may end it first. x > 0, so it ends."""
    body = helper.make_graph(
        [helper.make_node("Add", ["h_in", "x"], ["h_out"]),
         helper.make_node("ReduceSum", ["h_out"], ["total"], keepdims=0),
         helper.make_node("Less", ["total", "limit"], ["cond_out"])],
        "body", [v("i", I64, []), v("cond_in", BOOL, []), v("h_in", F, [4])],
        [v("cond_out", BOOL, []), v("h_out", F, [4])])
    model = _model([helper.make_node("Loop", ["M", "go", "h0"], ["h"], name="steps", body=body)],
                   [v("h0", F, [4]), v("x", F, [4])], [v("h", F, [4])],
                   [helper.make_tensor("M", I64, [], [trips]), helper.make_tensor("go", BOOL, [], [True]),
                    helper.make_tensor("limit", F, [], [100.0])])
    assert _count(import_model(model), "onnx.Loop") == 1
    feeds = [{"h0": np.array([1, 2, 3, 4], np.float32), "x": np.array([0.1, 0.2, 0.05, 0.15], np.float32)},
             {"h0": np.array([50, 60, 0, 0], np.float32), "x": np.ones(4, np.float32)},  # stops after one
             {"h0": np.zeros(4, np.float32), "x": np.full(4, 0.01, np.float32)}]  # 2500 steps, or M
    _assert_matches(model, feeds)


def test_scan_outputs_stack_every_iteration():
    model = _rnn_loop(120, scan=True)
    assert _count(import_model(model), "onnx.Loop") == 1
    _assert_matches(model, [_feeds()])


def test_nested_native_loops():
    """An outer loop of 150 iterations whose body holds an inner loop of 40: both native."""
    inner = helper.make_graph(
        [helper.make_node("Mul", ["a_in", "decay"], ["scaled"]), helper.make_node("Add", ["scaled", "x"], ["a_out"]),
         helper.make_node("Identity", ["ci"], ["co"])],
        "inner_body", [v("j", I64, []), v("ci", BOOL, []), v("a_in", F, [3])],
        [v("co", BOOL, []), v("a_out", F, [3])])
    outer = helper.make_graph(
        [helper.make_node("Loop", ["forty", "", "s_in"], ["t"], name="inner", body=inner),
         helper.make_node("Cast", ["i"], ["fi"], to=F), helper.make_node("Mul", ["fi", "tiny"], ["step"]),
         helper.make_node("Sub", ["t", "step"], ["s_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "outer_body", [v("i", I64, []), v("cond_in", BOOL, []), v("s_in", F, [3])],
        [v("cond_out", BOOL, []), v("s_out", F, [3])])
    model = _model([helper.make_node("Loop", ["many", "", "s0"], ["s"], name="outer", body=outer)],
                   [v("s0", F, [3]), v("x", F, [3])], [v("s", F, [3])],
                   [helper.make_tensor("many", I64, [], [150]), helper.make_tensor("forty", I64, [], [40]),
                    helper.make_tensor("decay", F, [], [0.9]), helper.make_tensor("tiny", F, [], [0.01])])
    module = import_model(model)
    assert _count(module, "onnx.Loop") == 2 and _count(module, "builtin.module") == 3
    _assert_matches(model, [{"s0": np.array([1.0, -2.0, 0.5], np.float32),
                             "x": np.array([0.1, 0.2, -0.3], np.float32)}])


def test_few_iterations_are_still_unrolled():
    """The rule (control_flow.UNROLL_MAX_NODES): trip count x body nodes <= the bound unrolls."""
    trips = UNROLL_MAX_NODES // 5  # the body has 5 nodes
    assert _count(import_model(_rnn_loop(trips)), "onnx.Loop") == 0
    assert _count(import_model(_rnn_loop(trips + 1)), "onnx.Loop") == 1


@pytest.mark.parametrize("phase", MLIR_PHASES)
def test_every_phase_prints_and_reads_back(tmp_path, phase):
    model = _rnn_loop(50, scan=True)
    result = compile_model(model, compile_to=phase)
    text = str(result.module)
    assert "builtin.module @loop_0" in text
    path = tmp_path / f"{phase}.mlir"
    write_mlir(result.module, path)
    again = compile_model(str(path), compile_from=phase)
    feeds = _feeds()
    expected = run_onnxruntime(model, feeds)
    actual = again.executable.run(feeds)
    for name, want in zip(actual, expected):
        np.testing.assert_allclose(actual[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_body_that_changes_a_carried_type_is_refused_naming_the_node():
    """A nested Loop hides the state's shape from ONNX's inference; the body's import finds it."""
    inner = helper.make_graph(
        [helper.make_node("Concat", ["a_in", "a_in"], ["a_out"], axis=0), helper.make_node("Identity", ["ci"], ["co"])],
        "inner_body", [v("j", I64, []), v("ci", BOOL, []), v("a_in", F, ["n"])],
        [v("co", BOOL, []), v("a_out", F, ["m"])])
    outer = helper.make_graph(
        [helper.make_node("Loop", ["one", "", "s_in"], ["s_out"], name="inner", body=inner),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "outer_body", [v("i", I64, []), v("cond_in", BOOL, []), v("s_in", F, ["n"])],
        [v("cond_out", BOOL, []), v("s_out", F, ["n"])])
    model = _model([helper.make_node("Loop", ["many", "", "s0"], ["s"], name="outer", body=outer)],
                   [v("s0", F, [2])], [v("s", F, ["n"])],
                   [helper.make_tensor("many", I64, [], [100]), helper.make_tensor("one", I64, [], [1])])
    with pytest.raises(DlcError, match=r"node 'outer' \(Loop\): its body turns loop-carried value 's0'"):
        import_model(model)


def _scan_model(steps, in_directions=(0, 1), out_directions=(0, 1), axes=None):
    """acc = (acc + x_t) * k; y_t = tanh(acc + u_t), z_t = y_t + bias: two scanned inputs (x one
    way, u the other by default), two scan outputs, an outer constant k and an outer input bias."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "xt"], ["a"]), helper.make_node("Mul", ["a", "k"], ["acc_out"]),
         helper.make_node("Add", ["acc_out", "ut"], ["y1"]), helper.make_node("Tanh", ["y1"], ["y2"]),
         helper.make_node("Add", ["y2", "bias"], ["y3"])],
        "body", [v("acc_in", F, [3]), v("xt", F, [3]), v("ut", F, [3])],
        [v("acc_out", F, [3]), v("y2", F, [3]), v("y3", F, [3])])
    node = helper.make_node("Scan", ["acc0", "x", "u"], ["acc", "ys", "zs"], name="scan", body=body,
                            num_scan_inputs=2, scan_input_directions=list(in_directions),
                            scan_output_directions=list(out_directions), **(axes or {}))
    x_shape = [3, steps] if axes else [steps, 3]
    out_shape = [3, steps] if axes else [steps, 3]
    return _model([node], [v("acc0", F, [3]), v("x", F, x_shape), v("u", F, [steps, 3]), v("bias", F, [3])],
                  [v("acc", F, [3]), v("ys", F, out_shape), v("zs", F, [steps, 3])],
                  [helper.make_tensor("k", F, [], [0.9])])


def _scan_feeds(model):
    rng = np.random.default_rng(3)
    return {value.name: rng.standard_normal([d.dim_value for d in value.type.tensor_type.shape.dim]).astype(np.float32)
            for value in model.graph.input}


@pytest.mark.parametrize("in_directions, out_directions", [((0, 0), (0, 0)), ((0, 1), (1, 0)), ((1, 1), (1, 1))])
def test_scan_runs_natively_in_either_direction(in_directions, out_directions):
    model = _scan_model(200, in_directions, out_directions)
    assert _count(import_model(model), "onnx.Loop") == 1
    _assert_matches(model, [_scan_feeds(model)])


@pytest.mark.parametrize("steps", [5, 300])
def test_scan_on_another_axis_matches(steps):
    """Axis 1 in and out: transposed to axis 0 and back around the native loop (300 steps), or
    unrolled (5 steps)."""
    model = _scan_model(steps, axes={"scan_input_axes": [1, 0], "scan_output_axes": [1, 0]})
    assert _count(import_model(model), "onnx.Loop") == (steps > 5)
    _assert_matches(model, [_scan_feeds(model)])


@pytest.mark.parametrize("target", ["npu-sim", "reference"])
def test_targets_without_native_loops_unroll(target):
    """Only cpu runs native loops; the others get the loop unrolled, and the same answers."""
    model = _rnn_loop(40, scan=True)
    _assert_matches(model, [_feeds()], dlc.compile(model, target=target))


def _gather_loop(trips):
    """s = s * 0.5 + table[i]: a Gather at the iteration number, checked at run time; the
    table has 50 rows, so a trip count over 50 indexes past it (onnxruntime refuses)."""
    body = helper.make_graph(
        [helper.make_node("Gather", ["table", "i"], ["row"]), helper.make_node("Mul", ["s_in", "half"], ["scaled"]),
         helper.make_node("Add", ["scaled", "row"], ["s_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [v("i", I64, []), v("cond_in", BOOL, []), v("s_in", F, [3])],
        [v("cond_out", BOOL, []), v("s_out", F, [3])])
    return _model([helper.make_node("Loop", ["M", "", "s0"], ["s"], name="steps", body=body)],
                  [v("s0", F, [3]), v("table", F, [50, 3]), v("M", I64, [])], [v("s", F, [3])],
                  [helper.make_tensor("half", F, [], [0.5])])


def test_a_body_check_that_fails_stops_the_run_with_the_nodes_error():
    """The body's run-time index check reports through the loop (dialects/loop.py, status)."""
    model = _gather_loop(None)
    compiled = dlc.compile(model)
    rng = np.random.default_rng(4)
    feeds = {"s0": rng.standard_normal(3).astype(np.float32), "table": rng.standard_normal((50, 3)).astype(np.float32)}
    _assert_matches(model, [{**feeds, "M": np.array(m, np.int64)} for m in (0, 7, 50)], compiled)
    with pytest.raises(DlcError, match=r"node 'Gather_0' \(Gather\).*index"):
        compiled.run({**feeds, "M": np.array(51, np.int64)})
    _assert_matches(model, [{**feeds, "M": np.array(20, np.int64)}], compiled)  # the next run is clean


def test_integer_and_bool_state_and_the_iteration_number():
    """Carried int64 and bool tensors (a counter, a flag flipped each step) and a float fed
    by the iteration number, over run-time trip counts up to 1000."""
    body = helper.make_graph(
        [helper.make_node("Add", ["c_in", "one"], ["c_out"]), helper.make_node("Not", ["f_in"], ["f_out"]),
         helper.make_node("Cast", ["i"], ["fi"], to=F), helper.make_node("Add", ["x_in", "fi"], ["x_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [v("i", I64, []), v("cond_in", BOOL, []), v("c_in", I64, [2]), v("f_in", BOOL, [3]),
                 v("x_in", F, [2])],
        [v("cond_out", BOOL, []), v("c_out", I64, [2]), v("f_out", BOOL, [3]), v("x_out", F, [2])])
    model = _model([helper.make_node("Loop", ["M", "", "c0", "f0", "x0"], ["c", "f", "x"], name="l", body=body)],
                   [v("c0", I64, [2]), v("f0", BOOL, [3]), v("x0", F, [2]), v("M", I64, [])],
                   [v("c", I64, [2]), v("f", BOOL, [3]), v("x", F, [2])], [helper.make_tensor("one", I64, [], [1])])
    feeds = [{"c0": np.array([3, -4], np.int64), "f0": np.array([True, False, True]),
              "x0": np.zeros(2, np.float32), "M": np.array(m, np.int64)} for m in (0, 1, 5, 1000)]
    _assert_matches(model, feeds)


def test_dlc_opt_runs_a_pipeline_on_the_bodies_too(tmp_path, capsys):
    """`dlc opt -p form-kernels` on graph-phase text: the body's ops get their kernels too."""
    from dlc.cli import main

    write_mlir(compile_model(_rnn_loop(50), compile_to="graph").module, tmp_path / "graph.mlir")
    assert main(["opt", str(tmp_path / "graph.mlir"), "-p", "form-kernels"]) == 0
    text = capsys.readouterr().out
    body = text[text.index("builtin.module @loop_0"):text.index("func.func @main(%h0")]
    assert "kernel.launch" in body and "kernel.launch" in text[text.index("func.func @main(%h0"):]


def test_explain_shows_which_kernels_run_in_a_loop_body():
    from dlc.tools.fusion_report import explain

    text = explain(_rnn_loop(trips=20))
    body_kernels = [line for line in text.splitlines() if "(in loop body @" in line]
    assert body_kernels and all("Loop" not in line.split(":")[1] for line in body_kernels)
    loop_line = next(line for line in text.splitlines() if line.startswith("kernel") and "(Loop)" in line)
    assert "in loop body" not in loop_line
    body = body_kernels[0].split("(in loop body @")[1].split(")")[0]
    assert f"runs loop body @{body} once per iteration" in text


# --- scan outputs whose length is known only at run time (dlc/specializations.py, values) ----

def _stopping_loop(trips=None, consumed=False):
    """_rnn_loop whose body ends the loop after iteration `stop` (a run-time input): the scan
    output's length is min(M, stop + 1), known only at run time."""
    model = _rnn_loop(trips=trips, scan=True, cond_nodes=[helper.make_node("Less", ["i", "stop"], ["going"])],
                      cond_out="going", inputs=[v("stop", I64, [])])
    if consumed:  # the scan output feeds another node instead of being a graph output
        model.graph.node.append(helper.make_node("Relu", ["all"], ["relu"]))
        del model.graph.output[1]
        model.graph.output.append(v("relu", F, ["n", 2, 8]))
    return model


def test_a_run_time_trip_count_compiles_once_per_value_and_sizes_the_scan_outputs():
    # onnx's test_loop11 pattern: the trip count is a graph input, the condition passes through.
    model = _rnn_loop(trips=None, scan=True)
    compiled = dlc.compile(model)
    _assert_matches(model, [_feeds(M=np.array(m)) for m in (5, 70, 0, -3, 5, 70)], compiled)
    assert compiled.compiles == 3  # 5, 70, and 0 = -3 (no iteration, as onnxruntime); then held


def test_a_loop_that_ends_early_returns_the_rows_its_body_wrote():
    model = _stopping_loop()
    compiled = dlc.compile(model)
    cases = [(50, 10), (50, 100), (50, 0), (20, 3), (20, 19), (0, 5)]
    _assert_matches(model, [_feeds(M=np.array(m), stop=np.array(s)) for m, s in cases], compiled)
    assert compiled.compiles == 3  # one per trip count: the bounded scan output serves every stop
    # A constant trip count: one compile for every early exit, through InferenceSession too.
    model = _stopping_loop(trips=60)
    session = dlc.InferenceSession(model.SerializeToString())
    for stop in (0, 7, 59, 80):
        feeds = _feeds(stop=np.array(stop))
        for got, want in zip(session.run(None, feeds), run_onnxruntime(model, feeds)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert session._specializing.compiles == 1


def test_run_time_scan_lengths_that_cannot_be_specialised_are_clear_errors():
    compiled = dlc.compile(_rnn_loop(trips=None, scan=True))
    with pytest.raises(DlcError, match=r"trip count 33554432 is beyond dlc's bound of 16,777,216"):
        compiled.run(_feeds(M=np.array(1 << 25)))
    with pytest.raises(DlcError, match=r"scan output\(s\) \['all'\] .* feed other nodes"):
        dlc.compile(_stopping_loop(trips=60, consumed=True))
    # A trip count computed from a tensor too big to compile per value.
    model = _rnn_loop(trips=None, scan=True)
    model.graph.input[-1].CopyFrom(v("sizes", F, [64]))
    model.graph.node.insert(0, helper.make_node("ReduceMax", ["sizes"], ["most"], keepdims=0))
    model.graph.node.insert(1, helper.make_node("Cast", ["most"], ["M"], to=I64))
    with pytest.raises(DlcError, match=r"trip count 'M' is known only at run time and is not computed from a few "
                                       r"small graph inputs"):
        dlc.compile(model)


def test_a_loop_kernels_flops_and_bytes_count_every_iteration_of_its_body():
    """--profile's GFLOP/s, GB/s and %roof divide by the kernel's flops and bytes: the body's
    times the trips (its weights are read again every iteration)."""
    def loop_costs(trips):
        kernels = compile_model(_rnn_loop(trips)).executable.manifest["kernels"]
        return next((k["flops"], k["bytes"]) for k in kernels if k["name"].endswith("_Loop"))

    matmul, weight = 2 * 2 * 8 * 8, 8 * 8 * 4  # [2, 8] @ [8, 8] (a multiply-add counted 2), W's bytes
    (flops, moved), (flops_twice, moved_twice) = loop_costs(300), loop_costs(600)
    assert flops >= 300 * matmul and moved >= 300 * weight
    assert flops_twice == 2 * flops
    step = moved_twice - moved  # 300 more iterations; the kernel's own operands are the same
    assert step % 300 == 0 and step // 300 >= weight


def test_a_trip_count_computed_from_small_inputs_with_its_scan_output_consumed():
    """onnx's Range function body: M = ceil(n / step) from two float scalars; the scan output
    then feeds a ReduceSum (fine: once M is a constant, every shape after the loop is static)."""
    model = _ceiling_loop(scaled_by_n=False)
    compiled = dlc.compile(model)
    cases = [(10.0, 3.0), (10.0, 0.5), (7.0, 3.5), (10.0, 3.0)]
    _assert_matches(model, [_feeds(n=np.array(n, np.float32), step=np.array(s, np.float32)) for n, s in cases],
                    compiled)
    assert compiled.compiles == 3


def _ceiling_loop(scaled_by_n: bool = True):
    """onnx's Range function body as a Loop: M = ceil(n / step) from two float scalars, its
    scan output summed; with `scaled_by_n` the graph outputs ReduceSum(all) * n, so n is
    needed at run time too, else ReduceSum(all)."""
    model = _rnn_loop(trips=None, scan=True, inputs=[v("n", F, []), v("step", F, [])])
    model.graph.node.insert(0, helper.make_node("Div", ["n", "step"], ["ratio"]))
    model.graph.node.insert(1, helper.make_node("Ceil", ["ratio"], ["ceiling"]))
    model.graph.node.insert(2, helper.make_node("Cast", ["ceiling"], ["M"], to=I64))
    model.graph.input.remove(next(value for value in model.graph.input if value.name == "M"))
    model.graph.node.append(helper.make_node("ReduceSum", ["all"], ["total"], keepdims=0))
    if scaled_by_n:
        model.graph.node.append(helper.make_node("Mul", ["total", "n"], ["scaled"]))
    model.graph.output.append(v("scaled" if scaled_by_n else "total", F, []))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_values_giving_the_same_trip_count_share_one_compile(monkeypatch, tmp_path):
    """The key is what the compile depends on: the trip count the values give (4 for 10/3,
    11/3, 12/3 and 8/2; none for -4/2 and 0/1), not the values, which stay run-time inputs
    (the output scales by n)."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))  # every specialisation a real compile
    model = _ceiling_loop()
    compiled = dlc.compile(model)
    cases = [(10.0, 3.0), (11.0, 3.0), (12.0, 3.0), (8.0, 2.0), (10.0, 0.5), (-4.0, 2.0), (0.0, 1.0), (11.0, 3.0)]
    _assert_matches(model, [_feeds(n=np.array(n, np.float32), step=np.array(s, np.float32)) for n, s in cases],
                    compiled)
    assert compiled.compiles == 3  # 4, 20 and 0 iterations
    # Each specialisation is listed with the first values that compiled it.
    assert sorted((shape["n"][2][0], shape["step"][2][0]) for shape in compiled.shapes) == \
        [(-4.0, 2.0), (10.0, 0.5), (10.0, 3.0)]
    # The loop's own input: M = 0 and M = -3 both run no iteration.
    model = _rnn_loop(trips=None, scan=True)
    counted = dlc.compile(model)
    _assert_matches(model, [_feeds(M=np.array(m)) for m in (0, -3, 2, -1)], counted)
    assert counted.compiles == 2


def test_values_that_fix_more_than_a_trip_count_compile_per_value(monkeypatch, tmp_path):
    """M also sizes a ConstantOfShape: its value is needed as a constant, so each value
    compiles (with M as a constant of the model), as before keys were trip counts."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path))
    model = _rnn_loop(trips=None, scan=True, constants=[helper.make_tensor("zero_axis", I64, [1], [0])])
    model.graph.node.append(helper.make_node("Unsqueeze", ["M", "zero_axis"], ["m_shape"]))
    model.graph.node.append(helper.make_node("ConstantOfShape", ["m_shape"], ["zeros"]))
    model.graph.output.append(v("zeros", F, ["m"]))
    compiled = dlc.compile(model)
    _assert_matches(model, [_feeds(M=np.array(m)) for m in (5, 7, 5, 3)], compiled)
    assert compiled.compiles == 3


def test_a_model_compiled_per_trip_count_saves_and_loads_its_values(tmp_path):
    model = _stopping_loop()
    compiled = dlc.compile(model)
    feeds = [_feeds(M=np.array(m), stop=np.array(s)) for m, s in ((30, 4), (12, 100))]
    for feed in feeds:
        compiled.run(feed)
    compiled.save(tmp_path / "saved", include_model=True)
    compiled.save(tmp_path / "held")
    loaded = dlc.load(tmp_path / "saved")
    _assert_matches(model, [*feeds, _feeds(M=np.array(30), stop=np.array(40))], loaded)
    assert loaded.compiles == 0  # both trip counts were saved
    _assert_matches(model, [_feeds(M=np.array(9), stop=np.array(2))], loaded)  # compiled from model.onnx
    assert loaded.compiles == 1
    with pytest.raises(DlcError, match=r"no specialisation for input shapes M=value 9: this artifact holds "
                                       r"M=value 30; M=value 12"):
        dlc.load(tmp_path / "held").run(_feeds(M=np.array(9), stop=np.array(2)))


def test_a_symbolic_batch_and_a_run_time_trip_count_key_the_specialisations_together():
    model = _rnn_loop(trips=None, scan=True)
    for value in (*model.graph.input[:2], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "b"
    model.graph.output[1].type.tensor_type.shape.dim[1].dim_param = "b"
    compiled = dlc.compile(model)
    rng = np.random.default_rng(2)
    cases = [(2, 5), (3, 5), (2, 9), (2, 5)]
    _assert_matches(model, [{"h0": rng.standard_normal((b, 8)).astype(np.float32),
                             "x": (rng.standard_normal((b, 8)) * 0.1).astype(np.float32), "M": np.array(m)}
                            for b, m in cases], compiled)
    assert compiled.compiles == 3


def test_a_nested_loop_sized_by_its_enclosing_iteration_is_a_clear_error():
    """The inner Loop runs `i` times (the outer iteration number) with a scan output: no model
    input fixes its length, so no compile per value can."""
    inner = helper.make_graph(
        [helper.make_node("Identity", ["ci"], ["co"]), helper.make_node("Add", ["s_in", "one"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["sc"])], "inner",
        [v("j", I64, []), v("ci", BOOL, []), v("s_in", F, [2])],
        [v("co", BOOL, []), v("s_out", F, [2]), v("sc", F, [2])],
        [helper.make_tensor("one", F, [], [1.0])])
    outer = helper.make_graph(
        [helper.make_node("Loop", ["i", "c", "h_in"], ["h_mid", "scans"], body=inner, name="inner_loop"),
         helper.make_node("ReduceSum", ["scans"], ["t"], keepdims=0),
         helper.make_node("Add", ["h_mid", "t"], ["h_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])], "outer",
        [v("i", I64, []), v("c", BOOL, []), v("h_in", F, [2])], [v("c_out", BOOL, []), v("h_out", F, [2])])
    model = _model([helper.make_node("Loop", ["M", "go", "h0"], ["h"], body=outer)], [v("h0", F, [2])],
                   [v("h", F, [2])],
                   [helper.make_tensor("M", I64, [], [100]), helper.make_tensor("go", BOOL, [], [True])])
    with pytest.raises(DlcError, match=r"node 'inner_loop' \(Loop\): .* comes from \['i', 'c'\], values of an "
                                       r"enclosing loop body"):
        dlc.compile(model)


def test_dlc_run_compiles_per_value_and_takes_values_on_the_command_line(capsys, tmp_path, monkeypatch):
    from dlc.cli import main
    from dlc.progress import QUIET_VARIABLE

    monkeypatch.setenv(QUIET_VARIABLE, "0")  # the line naming the values is what this test reads

    model = _rnn_loop(trips=None, scan=True)
    path = tmp_path / "loop.onnx"
    onnx.save(model, path)
    feeds = _feeds()
    for name in ("h0", "x"):
        np.save(tmp_path / f"{name}.npy", feeds[name])
    inputs = [f"--input={name}={tmp_path / name}.npy" for name in ("h0", "x")]
    assert main(["run", str(path), "--input", "M=7", *inputs, "--check-bounds", "--save-outputs",
                 str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "compiled for the input values M=7:" in err and "(random)" not in err
    assert "all: shape [7, 2, 8]" in out and "bounds check: no invalid access" in out
    want = run_onnxruntime(model, {**feeds, "M": np.array(7)})
    np.testing.assert_allclose(np.load(tmp_path / "out/all.npy"), want[1], rtol=1e-5, atol=1e-6)
    # Without a value, dlc run picks a small random one (as 1 for a symbolic dimension) and says so.
    assert main(["run", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "(random)" in err and "all: shape [" in out
    # `dlc compile` cannot write one artifact for every value: exit 1, and the hint says what can.
    assert main(["compile", str(path), "-o", str(tmp_path / "art")]) == 1
    err = capsys.readouterr().err
    assert "known only at run time" in err and "--input NAME=VALUE" in err and "include_model=True" in err
