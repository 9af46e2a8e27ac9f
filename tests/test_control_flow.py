"""If, Loop and Scan (dlc/frontend/control_flow.py) against onnxruntime, and the errors for what
is refused: a run-time If whose untaken branch could fail the run, a Loop too long to unroll,
a run-time trip count, branches of different types.

Tolerance: the bodies are a few elementwise ops and small MatMuls, so dlc and onnxruntime
agree to a few ulp; 1e-5 relative with 1e-6 absolute leaves room for MatMul's summation order.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper

import dlc
from dlc.errors import DlcError
from dlc.frontend.control_flow import MAX_UNROLLED_NODES
from dlc.frontend.importer import import_model

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=17, check=True) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "control_flow", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def _assert_matches(model, feeds_list) -> None:
    compiled = dlc.compile(model)
    for feeds in feeds_list:
        expected = run_onnxruntime(model, feeds)
        actual = compiled.run(feeds)
        for name, want in zip(actual, expected):
            assert actual[name].shape == want.shape, name
            np.testing.assert_allclose(actual[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def _op_names(model) -> set[str]:
    module = import_model(model)
    return {op.name for op in module.walk() if "onnx_node_name" in op.attributes}


def _branch(name, nodes, outputs):
    return helper.make_graph(nodes, name, [], outputs)


def _runtime_if(then_nodes, else_nodes, out_type=F, shape=(3,), else_type=None, inputs=()):
    """y = If(c) with both branches reading the outer x (float[3])."""
    then = _branch("then", then_nodes, [helper.make_tensor_value_info("t", out_type, list(shape))])
    other = _branch("else", else_nodes, [helper.make_tensor_value_info("e", else_type or out_type, list(shape))])
    node = helper.make_node("If", ["c"], ["y"], name="select", then_branch=then, else_branch=other)
    return _model([node], [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("x", F, [3]), *inputs],
                  [helper.make_tensor_value_info("y", out_type, list(shape))], check=else_type is None)


def test_run_time_if_selects_either_branch():
    model = _runtime_if([helper.make_node("Exp", ["x"], ["t"])], [helper.make_node("Neg", ["x"], ["e"])])
    x = np.array([0.5, -1.0, 2.0], np.float32)
    _assert_matches(model, [{"c": np.array(True), "x": x}, {"c": np.array(False), "x": x}])


def test_run_time_if_does_not_fail_on_the_untaken_branchs_index_or_divisor():
    """then: Gather(x, i); else: x / (k div d) on integers. An out-of-range i, or d = 0, is an
    error only where its branch is taken (onnxruntime runs only that branch)."""
    helper_i = TensorProto.INT64
    then = [helper.make_node("Gather", ["x", "i"], ["t"], name="pick")]
    other = [helper.make_node("Div", ["k", "d"], ["q"], name="ratio"),
             helper.make_node("Cast", ["q"], ["qf"], to=F),
             helper.make_node("Div", ["x", "qf"], ["e"])]
    model = _runtime_if(then, other, inputs=[helper.make_tensor_value_info(name, helper_i, [3])
                                             for name in ("i", "k", "d")])
    x, k = np.array([0.5, -1.0, 2.0], np.float32), np.array([6, 4, 9], np.int64)
    good_i, bad_i = np.array([2, 0, -1], np.int64), np.array([7, 0, 1], np.int64)
    good_d, bad_d = np.array([3, 2, 1], np.int64), np.array([3, 0, 1], np.int64)
    _assert_matches(model, [{"c": np.array(True), "x": x, "i": good_i, "k": k, "d": bad_d},
                            {"c": np.array(False), "x": x, "i": bad_i, "k": k, "d": good_d}])
    compiled = dlc.compile(model)
    with pytest.raises(DlcError, match=r"'select/then/pick' \(Gather\).*out of range"):
        compiled.run({"c": np.array(True), "x": x, "i": bad_i, "k": k, "d": good_d})
    with pytest.raises(DlcError, match=r"'select/else/ratio' \(Div\).*division by zero"):
        compiled.run({"c": np.array(False), "x": x, "i": good_i, "k": k, "d": bad_d})


def test_run_time_if_refuses_a_branch_whose_check_no_input_avoids():
    then = [helper.make_node("TopK", ["x", "k"], ["t", "ti"], name="best")]
    model = _runtime_if(then, [helper.make_node("Neg", ["x"], ["e"])],
                        inputs=[helper.make_tensor_value_info("k", TensorProto.INT64, [1])])
    with pytest.raises(DlcError, match=r"node 'select' \(If\).*'select/then/best' \(TopK\)"):
        import_model(model)


def test_if_branches_of_different_types_are_refused_naming_the_node():
    model = _runtime_if([helper.make_node("Identity", ["x"], ["t"])],
                        [helper.make_node("Cast", ["x"], ["e"], to=TensorProto.INT64)], else_type=TensorProto.INT64)
    with pytest.raises(DlcError, match=r"'select' \(If\)"):
        import_model(model)


def test_constant_if_inlines_the_taken_branch_with_nested_if_and_outer_values():
    """cond = (x.shape[0] == 4) folds to true; the then branch holds an If on a constant too,
    whose branches read outer values (x, w) two scopes up."""
    inner = helper.make_node(
        "If", ["k"], ["t"], name="inner",
        then_branch=_branch("it", [helper.make_node("Mul", ["x", "w"], ["it"])],
                            [helper.make_tensor_value_info("it", F, [4])]),
        else_branch=_branch("ie", [helper.make_node("Add", ["x", "w"], ["ie"])],
                            [helper.make_tensor_value_info("ie", F, [4])]))
    false = helper.make_tensor("kv", TensorProto.BOOL, [], [False])
    then = _branch("then", [helper.make_node("Constant", [], ["k"], value=false), inner],
                   [helper.make_tensor_value_info("t", F, [4])])
    other = _branch("else", [helper.make_node("Sub", ["x", "w"], ["e"])],
                    [helper.make_tensor_value_info("e", F, [4])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["n"], keepdims=0),
             helper.make_node("Equal", ["n", "four"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="outer", then_branch=then, else_branch=other)]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [4])],
                   [helper.make_tensor_value_info("y", F, [4])],
                   [helper.make_tensor("four", TensorProto.INT64, [], [4]),
                    helper.make_tensor("w", F, [4], [1.0, 2.0, 3.0, 4.0])])
    names = _op_names(model)
    assert "onnx.If" not in names and "onnx.Add" in names and "onnx.Mul" not in names
    _assert_matches(model, [{"x": np.array([0.5, -1.0, 2.0, 3.0], np.float32)}])


def _loop_body(cond_out_nodes=(), cond_out="cond_in"):
    """s_out = s_in * 0.5 + i; scan output: s_out."""
    nodes = [helper.make_node("Cast", ["i"], ["fi"], to=F),
             helper.make_node("Mul", ["s_in", "half"], ["scaled"]),
             helper.make_node("Add", ["scaled", "fi"], ["s_out"]),
             *cond_out_nodes, helper.make_node("Identity", [cond_out], ["cond_out"])]
    return helper.make_graph(
        nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", F, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", F, [2])])


def _loop_model(trips, body, scan_output=True, trips_input=False):
    if scan_output:
        body.output.append(helper.make_tensor_value_info("s_scan", F, [2]))
        body.node.append(helper.make_node("Identity", ["s_out"], ["s_scan"]))
    outputs = [helper.make_tensor_value_info("final", F, [2])]
    if scan_output:
        outputs.append(helper.make_tensor_value_info("all", F, [trips, 2]))
    inputs = [helper.make_tensor_value_info("s0", F, [2])]
    initializers = [helper.make_tensor("half", F, [], [0.5]),
                    helper.make_tensor("go", TensorProto.BOOL, [], [True])]
    if trips_input:
        inputs.append(helper.make_tensor_value_info("M", TensorProto.INT64, []))
    else:
        initializers.append(helper.make_tensor("M", TensorProto.INT64, [], [trips]))
    node = helper.make_node("Loop", ["M", "go", "s0"], [o.name for o in outputs], name="steps", body=body)
    return _model([node], inputs, outputs, initializers)


def test_loop_with_a_run_time_condition_keeps_the_state_of_the_iterations_it_allows():
    """cond_out = sum(s_out) < 6: the loop stops early, at an iteration that depends on s0."""
    body = _loop_body([helper.make_node("ReduceSum", ["s_out"], ["total"], keepdims=0),
                       helper.make_node("Less", ["total", "six"], ["more"])], "more")
    body.initializer.append(helper.make_tensor("six", F, [], [6.0]))
    model = _loop_model(8, body, scan_output=False)
    # The state read by a node, not only output: ONNX infers no shape for it from outside.
    model.graph.node[0].output[0] = "state"
    model.graph.node.append(helper.make_node("Neg", ["state"], ["final"]))
    _assert_matches(model, [{"s0": np.array([0.0, 1.0], np.float32)},
                            {"s0": np.array([5.0, 4.0], np.float32)}])


def test_loop_with_a_run_time_condition_and_scan_outputs_is_refused():
    body = _loop_body([helper.make_node("ReduceSum", ["s_out"], ["total"], keepdims=0),
                       helper.make_node("Less", ["total", "half"], ["more"])], "more")
    with pytest.raises(DlcError, match=r"node 'steps' \(Loop\).*scan output"):
        import_model(_loop_model(3, body))


def _checked_body(cond_out_nodes=(), cond_out="cond_in"):
    """_loop_body plus a Gather (a run-time index check). The tests below import with
    native_loops=False (a target without native loops) to test the unrolling path's errors;
    tests/test_control_flow_native.py has the native loops."""
    body = _loop_body(cond_out_nodes, cond_out)
    body.node.insert(0, helper.make_node("Gather", ["s_in", "first"], ["picked"]))
    body.initializer.append(helper.make_tensor("first", TensorProto.INT64, [], [0]))
    return body


def test_loop_too_long_to_unroll_is_a_clear_error():
    with pytest.raises(DlcError, match=rf"node 'steps' \(Loop\): its 100000 iterations .* bound of "
                                       rf"{MAX_UNROLLED_NODES}"):
        import_model(_loop_model(100000, _checked_body(), scan_output=False), native_loops=False)


def test_loop_with_a_run_time_trip_count_is_a_clear_error():
    with pytest.raises(DlcError, match=r"node 'steps' \(Loop\): its trip count 'M' is known only at run time"
                                       r".*the target runs no native loops"):
        import_model(_loop_model(3, _checked_body(), scan_output=False, trips_input=True), native_loops=False)


def test_scan_reverse_direction_on_axis_1_with_output_axis_1():
    """A reversed scan over axis 1 of x[2, 4, 3] stacking its outputs on axis 1, and a forward
    one over axis 0 of u[4, 3]: the running sum of both."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "xt"], ["a"]),
         helper.make_node("Add", ["a", "ut"], ["acc_out"]),
         helper.make_node("Tanh", ["acc_out"], ["y"])],
        "body",
        [helper.make_tensor_value_info("acc_in", F, [2, 3]), helper.make_tensor_value_info("xt", F, [2, 3]),
         helper.make_tensor_value_info("ut", F, [3])],
        [helper.make_tensor_value_info("acc_out", F, [2, 3]), helper.make_tensor_value_info("y", F, [2, 3])])
    node = helper.make_node("Scan", ["acc0", "x", "u"], ["acc", "ys"], name="scan", body=body,
                            num_scan_inputs=2, scan_input_axes=[1, 0], scan_input_directions=[1, 0],
                            scan_output_axes=[1])
    model = _model([node], [helper.make_tensor_value_info("acc0", F, [2, 3]),
                            helper.make_tensor_value_info("x", F, [2, 4, 3]),
                            helper.make_tensor_value_info("u", F, [4, 3])],
                   [helper.make_tensor_value_info("acc", F, [2, 3]),
                    helper.make_tensor_value_info("ys", F, [2, 4, 3])])
    rng = np.random.default_rng(0)
    _assert_matches(model, [{"acc0": rng.standard_normal((2, 3), np.float32),
                             "x": rng.standard_normal((2, 4, 3), np.float32),
                             "u": rng.standard_normal((4, 3), np.float32)}])


def test_run_time_if_with_branches_of_different_shapes_is_refused():
    then = [helper.make_node("Identity", ["x"], ["t"])]
    other = [helper.make_node("ReduceSum", ["x"], ["e"], keepdims=1)]
    model = _runtime_if(then, other, shape=(None,))
    with pytest.raises(DlcError, match=r"node 'select' \(If\): its branches give output 'y' different shapes"):
        import_model(model)


def test_loop_over_a_shape_derived_trip_count_and_scan_outputs():
    """`for i in range(x.shape[0])`: the trip count folds from Shape -> Gather, then unrolls;
    each iteration's state is collected as a scan output."""
    body = _loop_body()
    model = _loop_model(3, body)
    model.graph.input.append(helper.make_tensor_value_info("rows", F, [3, 7]))
    model.graph.node.insert(0, helper.make_node("Shape", ["rows"], ["rows_shape"]))
    model.graph.node.insert(1, helper.make_node("Gather", ["rows_shape", "zero"], ["M_rows"], axis=0))
    model.graph.initializer.append(helper.make_tensor("zero", TensorProto.INT64, [], [0]))
    model.graph.node[2].input[0] = "M_rows"
    onnx.checker.check_model(model, full_check=True)
    _assert_matches(model, [{"s0": np.array([1.0, -2.0], np.float32), "rows": np.zeros((3, 7), np.float32)}])


def test_opset_8_scan_is_refused_by_name():
    v = helper.make_tensor_value_info
    body = helper.make_graph([helper.make_node("Add", ["s", "xt"], ["s2"]),
                              helper.make_node("Identity", ["s2"], ["y"])],
                             "body", [v("s", F, [2]), v("xt", F, [2])], [v("s2", F, [2]), v("y", F, [2])])
    node = helper.make_node("Scan", ["", "s0", "x"], ["s", "ys"], name="old_scan", body=body, num_scan_inputs=1)
    model = _model([node], [v("s0", F, [1, 2]), v("x", F, [1, 3, 2])], [v("s", F, [1, 2]), v("ys", F, [1, 3, 2])],
                   opset=8)
    with pytest.raises(DlcError, match=r"node 'old_scan' \(Scan\): the opset-8 Scan .* opset is 8"):
        import_model(model)


def test_loop_body_with_an_if_on_the_iteration_and_a_nested_scan():
    """`for i in range(3): s = (s + x) if i == 0 else s * cumsum_by_scan(x)`: the If folds in
    each unrolled iteration; the nested Scan reads the outer x and the loop's own state."""
    v = helper.make_tensor_value_info
    scan_body = helper.make_graph([helper.make_node("Add", ["acc", "xt"], ["acc2"]),
                                   helper.make_node("Mul", ["acc2", "s_in"], ["y"])],
                                  "scan_body", [v("acc", F, []), v("xt", F, [])], [v("acc2", F, []), v("y", F, [2])])
    else_branch = helper.make_graph(
        [helper.make_node("Scan", ["zero", "x"], ["total", "ys"], body=scan_body, num_scan_inputs=1),
         helper.make_node("Mul", ["s_in", "total"], ["e"])], "else", [], [v("e", F, [2])])
    then_branch = helper.make_graph([helper.make_node("Add", ["s_in", "x"], ["t"])], "then", [], [v("t", F, [2])])
    body = helper.make_graph(
        [helper.make_node("Equal", ["i", "zero_i"], ["first"]),
         helper.make_node("If", ["first"], ["s_out"], then_branch=then_branch, else_branch=else_branch),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [v("i", TensorProto.INT64, []), v("cond_in", TensorProto.BOOL, []), v("s_in", F, [2])],
        [v("cond_out", TensorProto.BOOL, []), v("s_out", F, [2])])
    node = helper.make_node("Loop", ["M", "", "s0"], ["s"], name="steps", body=body)
    model = _model([node], [v("s0", F, [2]), v("x", F, [2])], [v("s", F, [2])],
                   [helper.make_tensor("M", TensorProto.INT64, [], [3]),
                    helper.make_tensor("zero", F, [], [0.0]), helper.make_tensor("zero_i", TensorProto.INT64, [], [0])])
    names = _op_names(model)
    assert not names & {"onnx.If", "onnx.Loop", "onnx.Scan"}
    _assert_matches(model, [{"s0": np.array([0.5, -1.0], np.float32), "x": np.array([1.5, 0.25], np.float32)}])


def test_nested_loops_are_bounded_by_the_product_of_their_trip_counts():
    """100 outer iterations each holding a 100-iteration inner loop: 100 x 100 nodes, refused
    at the inner loop although each loop alone is small (the inner body's Gather keeps both
    unrolled without native loops: tests/test_control_flow_native.py runs them natively)."""
    v = helper.make_tensor_value_info
    inner_body = helper.make_graph(
        [helper.make_node("Gather", ["x", "zero_index"], ["x0"]),
         helper.make_node("Add", ["a_in", "x0"], ["a_out"]), helper.make_node("Identity", ["ci"], ["co"])],
        "inner_body", [v("j", TensorProto.INT64, []), v("ci", TensorProto.BOOL, []), v("a_in", F, [2])],
        [v("co", TensorProto.BOOL, []), v("a_out", F, [2])],
        [helper.make_tensor("zero_index", TensorProto.INT64, [], [0])])
    outer_body = helper.make_graph(
        [helper.make_node("Loop", ["hundred", "", "s_in"], ["s_out"], name="inner", body=inner_body),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "outer_body", [v("i", TensorProto.INT64, []), v("cond_in", TensorProto.BOOL, []), v("s_in", F, [2])],
        [v("cond_out", TensorProto.BOOL, []), v("s_out", F, [2])])
    node = helper.make_node("Loop", ["hundred", "", "s0"], ["s"], name="outer", body=outer_body)
    model = _model([node], [v("s0", F, [2]), v("x", F, [2])], [v("s", F, [2])],
                   [helper.make_tensor("hundred", TensorProto.INT64, [], [100])])
    with pytest.raises(DlcError, match=r"'outer/iter\d+/inner' \(Loop\): its 100 iterations of a 3-node body "
                                       r"\(in each of the 100 copies an enclosing loop made\) would unroll to 30000"):
        import_model(model, native_loops=False)


def test_loop_with_a_run_time_condition_whose_state_grows_is_refused():
    v = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Concat", ["s_in", "s_in"], ["s_out"], axis=0),
         helper.make_node("ReduceSum", ["s_out"], ["total"], keepdims=0),
         helper.make_node("Less", ["total", "limit"], ["cond_out"])],
        "body", [v("i", TensorProto.INT64, []), v("cond_in", TensorProto.BOOL, []), v("s_in", F, ["n"])],
        [v("cond_out", TensorProto.BOOL, []), v("s_out", F, ["m"])])
    node = helper.make_node("Loop", ["M", "", "s0"], ["s"], name="grow", body=body)
    model = _model([node], [v("s0", F, [2])], [v("s", F, ["k"])],
                   [helper.make_tensor("M", TensorProto.INT64, [], [3]), helper.make_tensor("limit", F, [], [9.0])])
    with pytest.raises(DlcError, match=r"node 'grow' \(Loop\): .*keep its shape; 's0' is float\[2\] .* "
                                       r"'s_out' float\[4\]"):
        import_model(model)


def test_while_loop_as_torchscript_exports_it_is_a_clear_error():
    """`while total < 6:` exports as Loop(M=INT64_MAX, cond) with the condition computed in the body."""
    body = _checked_body([helper.make_node("ReduceSum", ["s_out"], ["total"], keepdims=0),
                          helper.make_node("Less", ["total", "six"], ["more"])], "more")
    body.initializer.append(helper.make_tensor("six", F, [], [6.0]))
    with pytest.raises(DlcError, match=r"node 'steps' \(Loop\): it is a while loop \(trip count 9223372036854775807"):
        import_model(_loop_model(2**63 - 1, body, scan_output=False), native_loops=False)
