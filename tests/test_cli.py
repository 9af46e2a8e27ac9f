"""The `dlc` command line: each command's normal path and its bad-input paths."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT

from dlc.cli import main

MLP = str(ROOT / "examples" / "models" / "mlp.onnx")
CNN = str(ROOT / "examples" / "models" / "cnn.onnx")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_onnx_prints_outputs_and_latency(capsys):
    code, out, _ = run_cli(capsys, "run", CNN, "--repeat", "3")
    assert code == 0
    assert "probabilities: shape [1, 10] float32" in out and "min " in out and "first [" in out
    assert "median latency over 3 run(s)" in out


def test_run_with_input_file_matches_python_api(capsys, tmp_path):
    import dlc

    x = np.random.default_rng(1).standard_normal((1, 784)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, _ = run_cli(capsys, "run", MLP, "--input", f"input={tmp_path / 'x.npy'}", "--repeat", "1",
                         "--save-outputs", str(tmp_path))
    assert code == 0
    expected = dlc.compile(MLP).run({"input": x})["logits"]
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected)


def test_compile_artifact_then_run_it(capsys, tmp_path):
    out_dir = tmp_path / "art"
    code, out, _ = run_cli(capsys, "compile", MLP, "-o", str(out_dir))
    assert code == 0 and "wrote" in out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 784], "dtype": "float32"}]
    assert manifest["weights_size"] % 64 == 0
    assert all(offset % 64 == 0 for offset in manifest["weights"].values())
    code, out, _ = run_cli(capsys, "run", str(out_dir), "--repeat", "1")
    assert code == 0 and "logits: shape [1, 10]" in out


@pytest.mark.parametrize("phase", ["onnx", "graph", "kernels", "linalg", "loops"])
def test_compile_to_phase_writes_mlir_and_sidecar(capsys, tmp_path, phase):
    path = tmp_path / "m.mlir"
    code, _, _ = run_cli(capsys, "compile", CNN, "--compile-to", phase, "-o", str(path))
    assert code == 0
    assert path.exists() and (tmp_path / "m.weights.npz").exists()
    code, out, _ = run_cli(capsys, "opt", str(path))
    assert code == 0 and out.startswith("builtin.module")


def test_compile_to_llvm_prints_llvm_ir(capsys):
    code, out, _ = run_cli(capsys, "compile", MLP, "--compile-to", "llvm")
    assert code == 0 and "dlc_main" in out and "define" in out


def test_opt_runs_a_pipeline_with_options(capsys, tmp_path):
    path = tmp_path / "k.mlir"
    run_cli(capsys, "compile", MLP, "--compile-to", "kernels", "-o", str(path))
    code, out, _ = run_cli(capsys, "opt", str(path), "-p", "kernels-to-linalg,plan-memory")
    assert code == 0 and "memref.view" in out and "dlc.arena_size" in out


def test_pipeline_flag_replaces_default_pipeline(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "compile", MLP, "-p", "form-kernels", "--compile-to", "kernels")
    assert code == 0 and "kernel.launch" in out


def test_print_ir_after_and_time_passes(capsys):
    code, _, err = run_cli(capsys, "compile", MLP, "--compile-to", "linalg", "--print-ir-after",
                           "form-kernels", "--time-passes")
    assert code == 0
    assert "IR after form-kernels" in err and "kernel.launch" in err
    assert "IR after kernels-to-linalg" not in err
    assert "pass execution timing" in err and "plan-memory" in err


def test_print_ir_after_all(capsys):
    code, _, err = run_cli(capsys, "compile", MLP, "--compile-to", "kernels", "--print-ir-after-all")
    assert code == 0 and "IR after dce" in err and "IR after form-kernels" in err


def test_passes_and_ops_list(capsys):
    code, out, _ = run_cli(capsys, "passes")
    assert code == 0 and "form-kernels" in out and "plan-memory" in out and "canonicalize" in out
    code, out, _ = run_cli(capsys, "ops")
    assert code == 0 and "Conv" in out and "MatMul" in out and "operators on cpu" in out


@pytest.mark.parametrize("command", [
    (), ("compile",), ("run",), ("opt",), ("explain",), ("compare",), ("verify",), ("bench",),
    ("passes",), ("ops",),
])
def test_help_prints_for_every_command(capsys, command):
    # argparse formats help strings with %: a stray "%" in one of them crashed `dlc --help`.
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: dlc" in capsys.readouterr().out


def _write(tmp_path, name, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("case,expected", [
    ("missing", "no such file"),
    ("empty", "the file is empty"),
    ("garbage", "not an ONNX model"),
    ("truncated", "not an ONNX model"),
])
def test_bad_model_files_fail_cleanly(capsys, tmp_path, case, expected):
    data = open(MLP, "rb").read()
    path = {"missing": str(tmp_path / "nope.onnx"),
            "empty": _write(tmp_path, "e.onnx", b""),
            "garbage": _write(tmp_path, "g.onnx", b"\x00\xffnot a protobuf at all\xff" * 3),
            "truncated": _write(tmp_path, "t.onnx", data[: len(data) // 3])}[case]
    code, _, err = run_cli(capsys, "run", path)
    assert code == 1
    assert expected in err and "Traceback" not in err


def test_checker_failure_is_reported(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph), path)
    code, _, err = run_cli(capsys, "compile", str(path))
    assert code == 1 and "onnx.checker" in err


def test_unsupported_operator_names_node_and_points_to_dlc_ops(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # Bernoulli: an operator the cpu target has no lowering for (a random draw no generator of
    # ours reproduces; pick another if it gets one). The reference target runs it.
    node = helper.make_node("Bernoulli", ["x"], ["y"], name="my_coin")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2])])
    path = tmp_path / "coin.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, _, err = run_cli(capsys, "compile", str(path))
    assert code == 1
    assert "my_coin" in err and "Bernoulli" in err and "dlc ops" in err
    np.save(tmp_path / "p.npy", np.full((1, 8, 2), 0.5, np.float32))
    code, out, _ = run_cli(capsys, "run", str(path), "--target", "reference", "--repeat", "1",
                           "--input", f"x={tmp_path / 'p.npy'}")
    assert code == 0 and "y: shape [1, 8, 2]" in out
    # dlc's own random inputs are no probabilities: the evaluator's refusal names the node.
    code, _, err = run_cli(capsys, "run", str(path), "--target", "reference", "--repeat", "1")
    assert code == 1 and "node 'my_coin' (Bernoulli)" in err and "internal error" not in err


def test_bad_inputs_fail_before_native_code(capsys, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 784), np.float32))
    code, _, err = run_cli(capsys, "run", MLP, "--input", f"input={tmp_path / 'wrong.npy'}")
    assert code == 1 and "expected shape [1, 784], got [2, 784]" in err
    np.save(tmp_path / "f64.npy", np.zeros((1, 784), np.float64))
    code, _, err = run_cli(capsys, "run", MLP, "--input", f"input={tmp_path / 'f64.npy'}")
    assert code == 1 and "expected dtype float32, got float64" in err
    code, _, err = run_cli(capsys, "run", MLP, "--input", f"nosuch={tmp_path / 'f64.npy'}")
    assert code == 1 and "unknown input name" in err
    code, _, err = run_cli(capsys, "run", MLP, "--input", "input=/no/such.npy")
    assert code == 1 and "no such file" in err


def test_bad_artifact_directory(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", str(tmp_path))
    assert code == 1 and "not a dlc artifact" in err


def test_unknown_pass_in_pipeline(capsys, tmp_path):
    path = tmp_path / "m.mlir"
    run_cli(capsys, "compile", MLP, "--compile-to", "onnx", "-o", str(path))
    code, _, err = run_cli(capsys, "opt", str(path), "-p", "no-such-pass")
    assert code == 1 and "unknown pass 'no-such-pass'" in err and "dlc passes" in err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    exe = shutil.which("dlc")
    if exe is None:
        pytest.skip("the dlc console script is not installed (pip install -e .)")
    result = subprocess.run([exe, "run", str(tmp_path / "missing.onnx")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([exe, "--debug", "run", str(tmp_path / "missing.onnx")], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_bench_prints_latency_gflops_peak_and_ratio(capsys):
    code, out, _ = run_cli(capsys, "bench", MLP, "--threads", "1", "--repeat", "3")
    assert code == 0
    assert "GFLOP/s" in out and "% of peak" in out and "dlc / onnxruntime = " in out


def test_explain_and_compare_commands(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "explain", CNN)
    assert code == 0 and "kernels from" in out and "apart:" in out
    code, out, _ = run_cli(capsys, "compare", MLP, "--repeat", "2", "--html", str(tmp_path / "r.html"))
    assert code == 0 and "unfused" in out and "fused" in out and "worst abs error" in out
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("threads", ["0", "-2", "5000"])
def test_a_thread_count_no_artifact_can_hold_is_refused_at_compile(capsys, tmp_path, threads):
    # It used to write an artifact that every later load refused as damaged.
    code, _, err = run_cli(capsys, "compile", CNN, "--threads", threads, "-o", str(tmp_path / "out"))
    assert code == 1 and "threads must be a count from 1 to" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.json").exists()
