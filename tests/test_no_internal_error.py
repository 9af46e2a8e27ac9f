"""README's error promise for every CLI command: the malformed models of issue 14, fed to
compile, run, explain, compare, verify, bench and opt, end in exit 1 and one message naming
what is wrong (the node, op type, initializer or option), with a hint and no traceback; never
"internal error". In-process through `dlc.cli.main`; each case fails at import, so it is cheap.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_hostile_inputs import expect_cli_error, make_model, save, tensor
from test_import_checks import INT64_MIN, NEGATIVE, constant, single_node_model

from dlc.runtime import memory_limit


def _weight_model(weight: onnx.TensorProto) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")],
        [tensor("x", [2, 2])],
        [tensor("y", [2, 2])],
        [weight],
    )


def _raw_data_too_long() -> onnx.ModelProto:
    weight = constant("w", np.ones((2, 2)), np.float32)
    weight.raw_data = np.ones(6, np.float32).tobytes()
    return _weight_model(weight)


def _float_data_too_long() -> onnx.ModelProto:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0] * 4)
    weight.float_data.extend([1.0, 1.0])
    return _weight_model(weight)


def _nul_in_external_location() -> onnx.ModelProto:
    weight = constant("w", np.ones((2, 2)), np.float32)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="w\0.bin")
    return _weight_model(weight)


def _max_unpool_bomb() -> onnx.ModelProto:
    unpool = helper.make_node(
        "MaxUnpool", ["v", "i", "shape"], ["u"], name="n", kernel_shape=[2, 2]
    )
    add = helper.make_node("Add", ["u", "x"], ["y"], name="add")
    return make_model(
        [unpool, add],
        [tensor("x", [1])],
        [tensor("y", [None] * 4)],
        [
            constant("v", np.ones((1, 1, 2, 2)), np.float32),
            constant("i", np.zeros((1, 1, 2, 2))),
            constant("shape", [1, 1, 8000, 8000]),
        ],
    )


def _negative(case: str):
    op, shape, rank, inputs, initializers, attributes = NEGATIVE[case]
    return lambda: single_node_model(op, shape, rank, inputs, initializers, opset=17, **attributes)


MODELS = {  # name: (builder, a fragment the message must hold)
    "raw_data_too_long": (_raw_data_too_long, "initializer 'w'"),
    "float_data_too_long": (_float_data_too_long, "initializer 'w'"),
    "nul_in_external_location": (_nul_in_external_location, "tensor 'w'"),
    "huge_conv_dilation": (
        lambda: single_node_model(
            "Conv",
            [1, 1, 3, 3],
            4,
            ("x", "w"),
            [constant("w", np.ones((1, 1, 2, 2)), np.float32)],
            dilations=[2**62] * 2,
        ),
        "node 'n' (Conv)",
    ),
    "pool_pads_reach_the_kernel": (
        lambda: single_node_model(
            "AveragePool", [1, 1, 4, 4], 4, kernel_shape=[2, 2], pads=[2, 2, 2, 2]
        ),
        "node 'n' (AveragePool)",
    ),
    "max_unpool_fold_bomb": (_max_unpool_bomb, "node 'n' (MaxUnpool)"),
    **{
        case: (_negative(case), f"node 'n' ({NEGATIVE[case][0]})")
        for case in (
            "conv_kernel_over_input",
            "negative_pad_past_the_size",
            "negative_resize_scale",
            "expand_to_minus_3",
        )
    },
}
COMMANDS = {
    "compile": ["compile", "{model}", "-o", "{tmp}/out"],
    "run": ["run", "{model}", "--repeat", "1"],
    "explain": ["explain", "{model}"],
    "compare": ["compare", "{model}"],
    "verify": ["verify", "{model}"],
    "bench": ["bench", "{model}"],
}


@pytest.fixture(autouse=True)
def small_memory_limit(monkeypatch):
    monkeypatch.setenv(memory_limit.ENV_VARIABLE, "100MiB")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", MODELS)
def test_every_command_refuses_the_model_by_name(capsys, tmp_path, case, command):
    build, fragment = MODELS[case]
    path = save(tmp_path, build())
    argv = [arg.format(model=path, tmp=tmp_path) for arg in COMMANDS[command]]
    expect_cli_error(capsys, argv, fragment, "hint:")


def test_opt_given_an_onnx_file(capsys, tmp_path):
    path = save(tmp_path, _raw_data_too_long())
    code, _, err = __import__("test_cli").run_cli(capsys, "opt", path)
    assert code == 1 and err.startswith("error: ") and "internal error" not in err, err


def test_slice_step_int64_min_runs_in_every_command(capsys, tmp_path):
    model = single_node_model(
        "Slice",
        [5],
        1,
        ("x", "starts", "ends", "axes", "steps"),
        [
            constant("starts", [-1]),
            constant("ends", [INT64_MIN]),
            constant("axes", [0]),
            constant("steps", [INT64_MIN]),
        ],
    )
    from test_cli import run_cli

    path = save(tmp_path, model)
    for command in ("run", "verify"):
        code, out, err = run_cli(capsys, command, path)
        assert code == 0, f"{command}: {out} {err}"
