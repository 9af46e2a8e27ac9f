"""`dlc compare`'s per-output tolerance (dlc/tools/fusion_report.py): a float output within
1e-3 absolute or relative to its largest |value|; an output a DequantizeLinear with a constant
scale writes within two quantization steps (the largest scale of a per-axis one), since builds
may round the integer one step apart where the spec leaves the rounding open, and a deep net
compounds that by one more step (issue 20)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dlc.cli import main
from dlc.tools.fusion_report import output_errors, quantization_steps


def _qdq_model(scale) -> onnx.ModelProto:
    """x -> Relu -> QuantizeLinear -> DequantizeLinear -> y (the int8 logits' shape), and a float z."""
    scale = np.asarray(scale, np.float32)
    axis = {"axis": 1} if scale.ndim else {}
    zero = np.zeros(scale.shape, np.uint8)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["q"], **axis),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], **axis),
             helper.make_node("Neg", ["x"], ["z"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero, "zp")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_steps_of_outputs_a_dequantize_linear_writes():
    assert quantization_steps(_qdq_model(0.08)) == {"y": np.float32(0.08)}
    per_axis = quantization_steps(_qdq_model([0.01, -0.2, 0.05]))
    assert per_axis.keys() == {"y"} and np.isclose(per_axis["y"], 0.2)  # the largest |scale|


def test_two_steps_are_within_three_are_beyond():
    step = float(np.float32(0.08))
    ref = {"y": np.array([0.0, 0.0, step * 3], np.float32), "z": np.zeros(3, np.float32)}
    one = output_errors({"y": ref["y"] + np.float32([2 * step, 0, 0]), "z": ref["z"]}, ref, {"y": step})
    assert not one.beyond_tolerance
    y = {o.name: o for o in one.outputs}["y"]
    # relative to the output's largest |value| (0.24), not to the zero it differs from (was 1e+27)
    assert np.isclose(y.worst_rel, 2 / 3) and "2 quantization steps" in y.describe()
    two = output_errors({"y": ref["y"] + np.float32([3 * step, 0, 0]), "z": ref["z"]}, ref, {"y": step})
    assert two.beyond_tolerance
    assert "BEYOND 2 quantization steps of 0.08 (the DequantizeLinear writing it): 1 of 3 values" in \
        {o.name: o for o in two.outputs}["y"].describe()


def test_float_outputs_keep_1e_3():
    ref = {"z": np.array([0.0, 100.0], np.float32)}
    assert not output_errors({"z": np.array([0.05, 100.0], np.float32)}, ref, {}).beyond_tolerance  # rel 5e-4
    assert output_errors({"z": np.array([0.5, 100.0], np.float32)}, ref, {}).beyond_tolerance  # rel 5e-3
    # the same step as a float output's is beyond: only a DequantizeLinear's output gets it
    ref = {"z": np.array([0.0, 0.24], np.float32)}
    assert output_errors({"z": np.array([0.08, 0.24], np.float32)}, ref, {}).beyond_tolerance
    assert output_errors({"z": np.array([np.inf, 0.24], np.float32)}, ref, {"z": 1.0}).beyond_tolerance


def test_compare_prints_the_step_of_a_quantized_output(tmp_path, capsys):
    path = tmp_path / "qdq.onnx"
    onnx.save(_qdq_model(0.08), path)
    code = main(["compare", str(path), "--repeat", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "y: abs error" in out and "within 2 quantization steps of 0.08 (the DequantizeLinear" in out
    assert "z: abs error" not in out  # float outputs within tolerance get no line of their own
