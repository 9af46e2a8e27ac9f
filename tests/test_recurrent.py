"""LSTM, GRU and RNN (expand-recurrent): dlc vs onnxruntime on one-node models, every attribute.

Models are built with onnx.helper; weights are initializers (as exporters write them)
unless a case feeds them at run time. Tolerance is conftest's default (rtol=1e-4,
atol=1e-5): the steps' sums accumulate in another order than onnxruntime's.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from dialects.diagnostics import UnsupportedError

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _rng(seed):
    return np.random.default_rng(seed)


def _recurrent_model(kind: str, steps=5, batch=3, features=4, hidden=6, *, direction="forward",
                     layout=0, bias=True, lens=None, initial=False, peepholes=False,
                     outputs=("Y", "Y_h", "Y_c"), runtime_weights=False, seed=0, **attrs):
    """One LSTM/GRU/RNN node; returns (model, feeds). `lens` is a list of sequence lengths."""
    rng = _rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    width = GATES[kind] * hidden
    arrays = {"W": rng.uniform(-0.5, 0.5, (dirs, width, features)),
              "R": rng.uniform(-0.5, 0.5, (dirs, width, hidden))}
    if bias:
        arrays["B"] = rng.uniform(-0.5, 0.5, (dirs, 2 * width))
    state_shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    if initial:
        arrays["initial_h"] = rng.uniform(-1, 1, state_shape)
        if kind == "LSTM":
            arrays["initial_c"] = rng.uniform(-1, 1, state_shape)
    if peepholes:
        arrays["P"] = rng.uniform(-0.5, 0.5, (dirs, 3 * hidden))
    arrays = {name: value.astype(np.float32) for name, value in arrays.items()}
    x_shape = (batch, steps, features) if layout else (steps, batch, features)
    feeds = {"X": rng.uniform(-1, 1, x_shape).astype(np.float32)}
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][:8 if kind == "LSTM" else 6]
    inits, inputs = [], [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if lens is not None:
        feeds["sequence_lens"] = np.array(lens, np.int32)
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [batch]))
    for name, value in arrays.items():
        if runtime_weights:
            feeds[name] = value
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
        else:
            inits.append(numpy_helper.from_array(value, name))
    names = [n if n in feeds or n in arrays else "" for n in order]
    while names and not names[-1]:
        names.pop()
    wanted = ["Y", "Y_h", "Y_c"][:3 if kind == "LSTM" else 2]
    out_names = [n if n in outputs else "" for n in wanted]
    while out_names and not out_names[-1]:
        out_names.pop()
    node = helper.make_node(kind, names, out_names, name=kind.lower(), hidden_size=hidden,
                            direction=direction, layout=layout, **attrs)
    graph = helper.make_graph([node], kind, inputs,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in out_names if n],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), feeds


def _onnxruntime_batch_major(model, feeds) -> list[np.ndarray]:
    """onnxruntime's answer for a layout=1 model, which it refuses: the layout=0 model on the
    transposed inputs, outputs transposed back (the spec defines layout as exactly that)."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    node = twin.graph.node[0]
    for attr in node.attribute:
        if attr.name == "layout":
            attr.i = 0
    swap = {"X", "initial_h", "initial_c"}
    for init in twin.graph.initializer:
        if init.name in swap:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).transpose(1, 0, 2), init.name))
    for value in twin.graph.input:
        if value.name in swap:
            dims = value.type.tensor_type.shape.dim
            dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
    del twin.graph.value_info[:]
    for out in twin.graph.output:
        out.type.tensor_type.ClearField("shape")
    twin_feeds = {k: v.transpose(1, 0, 2) if k in swap else v for k, v in feeds.items()}
    answers = run_onnxruntime(twin, twin_feeds)
    return [a.transpose(2, 0, 1, 3) if a.ndim == 4 else a.transpose(1, 0, 2) for a in answers]


def _assert_matches(model, feeds, target="cpu") -> None:
    import dlc

    names = [o.name for o in model.graph.output]
    batch_major = any(a.name == "layout" and a.i == 1 for a in model.graph.node[0].attribute)
    expected = (_onnxruntime_batch_major if batch_major else run_onnxruntime)(model, feeds)
    got = dlc.compile(model, target=target).run(feeds)
    for name, want in zip(names, expected):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)


CASES = [  # (kind, options)
    pytest.param("LSTM", {}, id="lstm"),
    pytest.param("LSTM", {"direction": "reverse"}, id="lstm_reverse"),
    pytest.param("LSTM", {"direction": "bidirectional", "initial": True}, id="lstm_bidirectional_initial"),
    pytest.param("LSTM", {"layout": 1, "direction": "bidirectional", "initial": True}, id="lstm_layout1"),
    pytest.param("LSTM", {"peepholes": True, "initial": True}, id="lstm_peepholes"),
    pytest.param("LSTM", {"lens": [5, 2, 3], "direction": "bidirectional", "initial": True}, id="lstm_lens"),
    pytest.param("LSTM", {"lens": [1, 5, 4], "layout": 1, "peepholes": True, "initial": True,
                          "direction": "reverse"}, id="lstm_lens_layout1_reverse"),
    pytest.param("LSTM", {"clip": 0.3, "initial": True}, id="lstm_clip"),
    pytest.param("LSTM", {"bias": False, "outputs": ("Y_c",)}, id="lstm_only_y_c"),
    pytest.param("LSTM", {"input_forget": 1, "initial": True}, id="lstm_input_forget"),
    pytest.param("LSTM", {"input_forget": 1, "peepholes": True, "direction": "bidirectional"},
                 id="lstm_input_forget_peepholes"),
    pytest.param("LSTM", {"outputs": ("Y",), "runtime_weights": True, "peepholes": True, "initial": True},
                 id="lstm_runtime_weights"),
    pytest.param("LSTM", {"activations": ["HardSigmoid", "LeakyRelu", "Softsign"],
                          "activation_alpha": [0.3, 0.2], "activation_beta": [0.4]}, id="lstm_activations"),
    pytest.param("GRU", {}, id="gru"),
    pytest.param("GRU", {"linear_before_reset": 1, "direction": "bidirectional", "initial": True},
                 id="gru_linear_before_reset"),
    pytest.param("GRU", {"direction": "reverse", "lens": [4, 5, 1], "initial": True}, id="gru_reverse_lens"),
    pytest.param("GRU", {"layout": 1, "clip": 0.5, "linear_before_reset": 1}, id="gru_layout1_clip"),
    pytest.param("GRU", {"runtime_weights": True, "initial": True, "linear_before_reset": 1}, id="gru_runtime"),
    pytest.param("GRU", {"activations": ["Sigmoid", "Elu", "HardSigmoid", "Softplus"],
                         "activation_alpha": [0.7, 0.3], "activation_beta": [0.6],
                         "direction": "bidirectional"}, id="gru_activations"),
    pytest.param("RNN", {}, id="rnn"),
    pytest.param("RNN", {"direction": "bidirectional", "layout": 1, "initial": True, "lens": [2, 5, 3]},
                 id="rnn_bidirectional_layout1_lens"),
    pytest.param("RNN", {"activations": ["Relu"], "clip": 0.4, "outputs": ("Y_h",)}, id="rnn_relu_clip"),
    pytest.param("RNN", {"activations": ["Affine", "ScaledTanh"], "direction": "bidirectional",
                         "activation_alpha": [0.5, 0.8], "activation_beta": [0.1, 1.5]}, id="rnn_affine_scaledtanh"),
    pytest.param("RNN", {"activations": ["ThresholdedRelu"], "activation_alpha": [0.1]}, id="rnn_thresholded"),
]


@pytest.mark.parametrize("kind, options", CASES)
def test_matches_onnxruntime(kind, options):
    """One step more than UNROLL_MAX_STEPS: the native loop (the short test below unrolls)."""
    from passes.graph.expand_recurrent import UNROLL_MAX_STEPS

    _assert_matches(*_recurrent_model(kind, steps=UNROLL_MAX_STEPS + 1, **options))


_SHORT = {"lstm_lens", "lstm_lens_layout1_reverse", "lstm_peepholes", "gru_reverse_lens", "gru_runtime",
          "rnn_bidirectional_layout1_lens"}


@pytest.mark.parametrize("kind, options", [case for case in CASES if case.id in _SHORT])
def test_short_sequences_are_unrolled_and_match(kind, options):
    """At most UNROLL_MAX_STEPS steps unroll (test_matches_onnxruntime runs the native loop)."""
    from passes.graph.expand_recurrent import UNROLL_MAX_STEPS

    options = dict(options)
    if "lens" in options:
        options["lens"] = [min(n, UNROLL_MAX_STEPS) for n in options["lens"]]
    _assert_matches(*_recurrent_model(kind, steps=UNROLL_MAX_STEPS, **options))


@pytest.mark.parametrize("kind, options", [case for case in CASES if case.id in {"lstm_lens", "gru_reverse_lens"}])
def test_targets_without_native_loops_unroll_every_step(kind, options):
    """npu-sim places nodes, not loops: its steps are unrolled (masks for sequence_lens too)."""
    _assert_matches(*_recurrent_model(kind, steps=9, **options), target="npu-sim")


def test_long_sequences_compile_one_step_per_direction():
    """A 64-step bidirectional LSTM: one time-step body per direction, whatever the length."""
    from dlc.driver import compile_model

    ops = {}
    for steps in (9, 64):
        model, _ = _recurrent_model("LSTM", steps=steps, direction="bidirectional", initial=True)
        module = compile_model(model, compile_to="graph").module
        ops[steps] = sum(1 for _ in module.walk())
        assert sum(1 for op in module.walk() if op.name == "onnx.Loop") == 2
        assert sum(1 for op in module.walk() if op.name == "builtin.module") == 3
    assert ops[9] == ops[64]


def test_batch_one_long_sequence():
    _assert_matches(*_recurrent_model("LSTM", steps=17, batch=1, features=8, hidden=16))


def test_unknown_activation_is_a_clear_error():
    import dlc

    model, _ = _recurrent_model("RNN", activations=["Swish"])
    with pytest.raises(UnsupportedError, match=r"node 'rnn' \(RNN\).*activation 'Swish'"):
        dlc.compile(model)


def test_steps_share_one_packed_recurrent_weight(tmp_path):
    """Every step's GEMM reads the same packed R: one copy in the artifact, not one per step
    (pack-weights keys its copies by weight and layout)."""
    import json

    import dlc

    model, _ = _recurrent_model("LSTM", steps=6, hidden=8)
    dlc.compile(model).save(tmp_path / "lstm")
    weights = json.loads((tmp_path / "lstm" / "manifest.json").read_text())["weights"]
    packed = [name for name in weights if ".packed" in name]
    assert len(packed) == 2, packed  # W for the projection of every step, R for the steps


@pytest.mark.parametrize("batch", [1, 3])
def test_step_gemm_alternates_its_panel_order_without_changing_a_bit(monkeypatch, batch):
    """The step's GEMM walks R's panels forward, then backward on the next step (gemm_calls
    ALTERNATE_PANELS, so the panels read last are still in cache): an odd number of steps and a
    partial last panel (4 x 40 gate columns), bit for bit what the forward order gives."""
    import dlc
    import dlc.codegen.gemm_calls as gemm_calls
    from dlc.driver import compile_model

    monkeypatch.setenv("DLC_CACHE", "0")  # the same model compiled twice, differently
    model, feeds = _recurrent_model("LSTM", steps=11, batch=batch, features=8, hidden=40, initial=True)
    text = compile_model(model, compile_to="llvm").text
    flags = [line for line in text.splitlines() if line.startswith("@") and "_backward" in line]
    assert len(flags) == 1, flags  # the step's GEMV; the projection GEMM runs once, forward
    _assert_matches(model, feeds)
    alternate = dlc.compile(model).run(feeds)
    monkeypatch.setattr(gemm_calls, "ALTERNATE_PANELS", False)
    forward = dlc.compile(model).run(feeds)
    for name, value in forward.items():
        np.testing.assert_array_equal(alternate[name], value, err_msg=name)


def test_tile_overrides_reach_the_step_gemm_in_its_loop_body():
    """`tiles` selects the time step's GEMM (1 x 160 x 40, only in the loop body) by its shape:
    its register tile becomes 1 x 32 (nr = 2 vectors) instead of the 1 x 64 chosen otherwise (the
    IR for AVX-512, 16 lanes, on any host; AVX2 would choose 1 x 32 itself)."""
    import dlc
    from dlc.driver import compile_model
    from dlc.targets import CompileOptions

    model, feeds = _recurrent_model("LSTM", steps=11, batch=1, features=8, hidden=40, initial=True)
    text = compile_model(model, compile_to="llvm",
                         options=CompileOptions(tiles="1x160x40:nr=32", cpu="x86-64-v4")).text
    tiles = {line.split("@")[1].split("(")[0].strip('"') for line in text.splitlines()
             if line.startswith("define") and "gemm_tile" in line}
    assert any("_1x2v16_a40" in name for name in tiles) and not any("_1x4v16_a40" in name for name in tiles), tiles
    got = dlc.compile(model, tiles="1x160x40:nr=32").run(feeds)
    for name, want in zip(["Y", "Y_h", "Y_c"], run_onnxruntime(model, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("seed", [20, 50])
def test_fuzzer_recurrent_models_match_on_every_config(seed):
    """The fuzzer's recurrent generator (dlc/tools/fuzz): a recurrent node among other ops, on
    cpu and on the npu-sim partition (which named tensors by node until each expanded op got a
    name of its own)."""
    from dlc.tools.fuzz.checks import check_model
    from dlc.tools.fuzz.generator import generate

    model = generate(seed, max_nodes=6, kinds=("recurrent", "unary", "reshape", "transpose", "binary"))
    assert {n.op_type for n in model.graph.node} & set(GATES)
    findings = check_model(model, seed)
    assert not findings, "\n".join(f"{f.kind} on {f.config}: {f.message}" for f in findings)


@pytest.mark.parametrize("kind, layers", [("LSTM", 1), ("GRU", 2)])
def test_torch_style_stack(kind, layers):
    """torch.nn.LSTM/GRU(batch_first=True) as the TorchScript exporter writes it
    (benchmarks/models.py::recurrent): Transpose in, zero initial states as constants,
    Squeeze between layers, Transpose out; GRU with linear_before_reset=1."""
    import importlib.util
    import sys

    from conftest import ROOT, assert_matches_onnxruntime

    spec = importlib.util.spec_from_file_location("dlc_benchmark_models", ROOT / "benchmarks" / "models.py")
    models = sys.modules.get(spec.name)
    if models is None:  # by path: xDSL installs a top-level `benchmarks` package that shadows ours
        models = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = models
        spec.loader.exec_module(models)
    assert_matches_onnxruntime(models.recurrent(kind, hidden=16, seq=6, batch=2, features=8, layers=layers))
