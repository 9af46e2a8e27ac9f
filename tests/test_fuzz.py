"""Differential fuzzing (dlc/tools/fuzz/, issue 7): a seeded bounded campaign, the corpus replay,
and the fuzzer's own machinery (validity, minimiser, crash guard).

The campaign's size is measured: one model checked on every (target, fusion) pair takes
0.6-1.2 s on one core. The default run checks CAMPAIGN_CASES models in chunks that xdist
spreads (about 15 s of CPU); `-m slow` checks the rest of SLOW_CAMPAIGN_CASES (the default run checked 60, then
24, until the suite had to fit in 10 minutes on 2 cores); long campaigns are
`python -m dlc.tools.fuzz --minutes N`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from dlc.tools.fuzz import campaign
from dlc.tools.fuzz.campaign import Worker, fuzz
from dlc.tools.fuzz.checks import ALL_CONFIGS, check_model, tolerances
from dlc.tools.fuzz.corpus import corpus_entries, replay
from dlc.tools.fuzz.generator import generate, validate
from dlc.tools.fuzz.minimise import minimise, remove_nodes

CAMPAIGN_CASES = 16
SLOW_CAMPAIGN_CASES = 96
CAMPAIGN_CHUNK = 8
CAMPAIGN_SEED = 7


def _campaign(seed: int, cases: int) -> None:
    log: list[str] = []
    summary = fuzz(cases=cases, seed=seed, corpus=None, isolate=False, log=log.append)
    assert summary.cases == cases
    reproduce = f"reproduce: python -m dlc.tools.fuzz --cases {cases} --seed {seed} --no-save"
    assert not summary.findings, "\n".join([summary.report(), *log, reproduce])


# Each chunk is a campaign of its own seed (case seeds follow from it), so chunks check
# different models and run on different workers.
@pytest.mark.parametrize("chunk", range(CAMPAIGN_CASES // CAMPAIGN_CHUNK))
def test_seeded_campaign_finds_no_mismatch(chunk):
    _campaign(CAMPAIGN_SEED * 1000 + chunk, CAMPAIGN_CHUNK)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CAMPAIGN_CASES // CAMPAIGN_CHUNK, SLOW_CAMPAIGN_CASES // CAMPAIGN_CHUNK))
def test_seeded_campaign_finds_no_mismatch_longer(chunk):
    _campaign(CAMPAIGN_SEED * 1000 + chunk, CAMPAIGN_CHUNK)


CORPUS = corpus_entries()


@pytest.mark.parametrize("path,info", [
    pytest.param(p, i, id=p.stem, marks=[pytest.mark.xfail(reason=i["xfail"], strict=True)] if "xfail" in i else [])
    for p, i in CORPUS])
def test_corpus_model_now_matches_onnxruntime(path, info):
    findings = replay(path, info)
    assert not findings, "\n".join(f"{f.kind} on {f.config}: {f.message}" for f in findings)


def test_corpus_entries_are_small_and_documented():
    assert CORPUS, "tests/fuzz_corpus/ holds the minimised failures the fuzzer found"
    for path, info in CORPUS:
        assert path.stat().st_size < 8192, f"{path.name}: minimised models stay a few KB"
        assert {"kind", "config", "message", "feed_seed"} <= set(info), path.name
        assert "xfail" in info or "fixed" in info, f"{path.name}: say what fixed it, or why it still fails"


def test_generated_models_are_valid_and_diverse():
    ops: set[str] = set()
    for seed in range(300):
        model = generate(seed)  # raises GeneratorError when onnx disagrees with the tracked shapes
        ops.update(n.op_type for n in model.graph.node)
    wanted = {"Conv", "MatMul", "Gemm", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization",
              "Softmax", "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceMax", "Transpose", "Reshape",
              "Flatten", "Concat", "Slice", "Split", "LayerNormalization", "Clip", "Where", "Cast", "Sigmoid",
              "Tanh", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Div", "Pow"}
    assert wanted <= ops, f"never generated: {sorted(wanted - ops)}"
    assert generate(5).SerializeToString() == generate(5).SerializeToString()


def test_value_dependent_outputs_get_the_shape_they_declare():
    """NonZero's and Compress's masks are computed from a value with its tracked bound (|x| + c >
    0.5): a bound below the value's real reach makes the count differ from the declared shape,
    which dlc refuses (its static shapes) while onnxruntime warns and runs. A Compress driven by
    a dynamically quantized MatMul's Cast (bound +-2, values in the thousands) selected 8 rows
    where it declared 7 (campaign seed 1702, case 1702005218)."""
    from dlc.tools.oracle import input_specs, onnxruntime_session, random_inputs

    seeds = [1702005218] + [seed for seed in range(400) if any(
        n.op_type in ("Compress", "NonZero") for n in generate(seed).graph.node)][:12]
    for seed in seeds:
        model = generate(seed)
        outputs = onnxruntime_session(model).run(None, random_inputs(input_specs(model), seed))
        declared = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output]
        assert [o.shape for o in outputs] == declared, f"seed {seed}"


def test_tolerance_grows_with_the_reduction_length():
    from onnx import TensorProto, helper, numpy_helper

    def matmul(k):
        w = numpy_helper.from_array(np.full((k, 3), 1 / np.sqrt(k), np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "m",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
        model = helper.make_model(graph)
        x = np.ones((2, k), np.float32)
        return tolerances(model, {"x": x, "y": x @ numpy_helper.to_array(w)})["y"]

    assert 0 < matmul(4) < matmul(64)
    relu = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])]))
    assert tolerances(relu, {"x": np.ones(3, np.float32), "y": np.ones(3, np.float32)})["y"] == 0.0


def _model_with(op_type: str) -> tuple[int, onnx.ModelProto]:
    for seed in range(1000):
        model = generate(seed)
        if sum(n.op_type == op_type for n in model.graph.node) == 1 and len(model.graph.node) >= 6:
            return seed, model
    raise AssertionError(f"no generated model with one {op_type}")


def test_minimiser_shrinks_an_injected_failure_to_the_culprit_node():
    seed, model = _model_with("Softmax")
    configs = [("reference", "all")]

    def fault(candidate, config):  # a pretend miscompile of Softmax, seen by the real checker
        return "injected: Softmax is wrong" if any(n.op_type == "Softmax" for n in candidate.graph.node) else None

    def still_fails(candidate):
        return any(f.signature() == ("mismatch", "reference/all", "injected")
                   for f in check_model(candidate, seed, configs, fault=fault))

    assert still_fails(model)
    small = minimise(model, still_fails)
    assert [n.op_type for n in small.graph.node] == ["Softmax"], onnx.printer.to_text(small.graph)
    validate(small)
    assert not any(f.kind == "invalid-model" for f in check_model(small, seed, configs))


def test_remove_nodes_reroutes_to_same_shaped_inputs_or_makes_graph_inputs():
    _, model = _model_with("Softmax")
    index = next(i for i, n in enumerate(model.graph.node) if n.op_type == "Softmax")
    smaller = remove_nodes(model, {index})
    if smaller is not None:  # None only when nothing is left
        validate(smaller)
        assert all(n.op_type != "Softmax" for n in smaller.graph.node)
        assert len(smaller.graph.node) < len(model.graph.node)


def test_worker_survives_a_crashing_compile(monkeypatch, tmp_path):
    monkeypatch.setenv("DLC_FUZZ_CRASH_ON_OP", "Softmax")
    seed, crashing = _model_with("Softmax")
    clean = next(m for m in map(generate, range(100)) if all(n.op_type != "Softmax" for n in m.graph.node))
    worker = Worker()
    try:
        findings = worker.check(crashing, seed, [("cpu", "all")], timeout=120)
        assert [(f.kind, f.config) for f in findings] == [("crash", "cpu/all")]
        assert "signal 11" in findings[0].message
        assert worker.check(clean, 0, [("reference", "all")], timeout=120) == []  # a fresh worker took over
    finally:
        worker.close()


def test_replies_that_arrive_together_are_all_read(monkeypatch):
    """A worker's progress line and its findings in one read of the pipe: the second must not
    wait unseen in a buffer while select() waits on the empty pipe (the "timeout on
    npu-sim/all" a busy machine showed, the worker idle and waiting for its next request)."""
    replies = json.dumps({"config": ["npu-sim", "all"]}) + "\n" + json.dumps({"findings": []}) + "\n"
    answer_at_once = f"import sys; sys.stdin.readline(); sys.stdout.write({replies!r}); sys.stdout.flush(); " \
                     "sys.stdin.readline()"

    def start(worker):
        worker.process = subprocess.Popen([sys.executable, "-c", answer_at_once], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE)
        worker.unread = b""

    monkeypatch.setattr(Worker, "_start", start)
    worker = Worker()
    try:
        began = time.monotonic()
        assert worker.check(generate(0), 0, [("npu-sim", "all")], timeout=20) == []
        assert time.monotonic() - began < 10
    finally:
        worker.close()


def test_campaign_minimises_and_saves_a_failure(monkeypatch, tmp_path):
    # A pretend Softmax miscompile, in-process: the campaign minimises it, writes model + sidecar,
    # and the saved entry replays as failing (with the same injected fault).
    seed, model = _model_with("Softmax")
    real = check_model

    def softmax_is_wrong(candidate, config):
        return "injected" if any(n.op_type == "Softmax" for n in candidate.graph.node) else None

    def check_with_fault(candidate, feed_seed=0, configs=ALL_CONFIGS, **_):
        return real(candidate, seed, configs, fault=softmax_is_wrong)

    monkeypatch.setattr(campaign, "generate", lambda case_seed, max_nodes=10: model)
    monkeypatch.setattr(campaign, "check_model", check_with_fault)
    summary = fuzz(cases=1, seed=0, corpus=tmp_path, isolate=False, configs=[("reference", "all")],
                        log=lambda line: None)
    assert summary.findings == {"mismatch": 1} and len(summary.saved) == 1
    info = json.loads(summary.saved[0].with_suffix(".json").read_text())
    assert info["kind"] == "mismatch" and info["config"] == "reference/all" and info["nodes"] == ["Softmax"]
    assert info["original_nodes"] == len(model.graph.node)
    assert [n.op_type for n in onnx.load(summary.saved[0]).graph.node] == ["Softmax"]


# --- the hostile side (issue 14): --hostile and --artifacts ---------------------------------------

HOSTILE_CASES = 15
HOSTILE_SEED = 5  # it found the reference target's GatherElements and the -FLT_MAX max window


def test_seeded_hostile_campaign_finds_nothing():
    log: list[str] = []
    summary = fuzz(cases=HOSTILE_CASES, seed=HOSTILE_SEED, corpus=None, isolate=True, hostile=True,
                   log=log.append)
    assert summary.cases == HOSTILE_CASES
    assert not summary.findings, "\n".join([summary.report(), *log, "reproduce: python -m dlc.tools.fuzz "
                                            f"--hostile --cases {HOSTILE_CASES} --seed {HOSTILE_SEED} --no-save"])


def test_hostile_models_carry_their_inputs_and_reach_the_hostile_cases():
    from dlc.tools.fuzz.hostile import generate_hostile, hostile_feeds, predicted_error

    ops, errors, extremes = set(), 0, set()
    for seed in range(60):
        model = generate_hostile(seed)
        assert generate_hostile(seed).SerializeToString() == model.SerializeToString()
        ops.update(n.op_type for n in model.graph.node)
        feeds = hostile_feeds(model, seed)
        assert set(feeds) == {i.name for i in model.graph.input}
        errors += predicted_error(model, feeds) is not None
        for v in feeds.values():
            if v.dtype == np.float32:
                extremes.update(k for k, bad in (("nan", np.isnan(v)), ("inf", np.isinf(v)),
                                                 ("denormal", (v != 0) & (np.abs(v) < 1.2e-38))) if bad.any())
            elif v.dtype.kind in "iu" and v.size:
                extremes.update(k for k, bad in (("min", v == np.iinfo(v.dtype).min), ("zero", v == 0)) if bad.any())
        if any(n.op_type in ("MaxPool", "AveragePool") for n in model.graph.node):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for n in model.graph.node for a in n.attribute}
            extremes.add("ceil_mode") if attrs.get("ceil_mode") else None
    assert {"Div", "Mod", "Gather", "GatherElements", "GatherND", "MaxPool", "AveragePool"} <= ops, ops
    assert {"nan", "inf", "denormal", "min", "zero", "ceil_mode"} <= extremes, extremes
    assert 5 <= errors <= 50, errors  # some runs are errors by ONNX's rules, most are not


def test_hostile_oracle_wants_a_dlc_error_for_a_division_by_zero():
    from onnx import TensorProto, helper

    from dlc.tools.fuzz.hostile import check_hostile, set_feeds

    graph = helper.make_graph([helper.make_node("Div", ["a", "b"], ["y"], name="div0")], "d",
                              [helper.make_tensor_value_info(n, TensorProto.INT32, [3]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    set_feeds(model, {"a": np.array([7, -7, 1], np.int32), "b": np.array([2, 0, 1], np.int32)})
    assert check_hostile(model, 0, [("cpu", "all"), ("reference", "all")]) == []
    set_feeds(model, {"a": np.array([7, -7, 1], np.int32), "b": np.array([2, 3, 1], np.int32)})
    assert check_hostile(model, 0, [("cpu", "all")]) == []


def test_hostile_oracle_takes_the_reference_evaluators_word_where_onnxruntime_flushes_a_denormal():
    """Sqrt(Tanh(-denormal)): IEEE and onnx.reference give NaN, onnxruntime's Tanh flushes the
    denormal to -0 (so -0). dlc's NaN is not a finding; finite elements still go to onnxruntime."""
    from onnx import TensorProto, helper

    from dlc.tools.fuzz.hostile import check_hostile, set_feeds

    graph = helper.make_graph([helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Sqrt", ["t"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    set_feeds(model, {"x": np.array([-1e-40, 0.25, 4.0], np.float32)})
    assert check_hostile(model, 0, [("cpu", "all"), ("reference", "all")]) == []


def test_hostile_oracle_excuses_a_contracted_multiply_add_only_where_the_product_overflows():
    """Mul then Sub with -2.6 * 3.4e38 - (-inf): unfused, the product overflows to -inf and
    -inf - -inf is NaN (onnxruntime); an FMA keeps the exact product, so +inf. Only that place
    is excused: a wrong finite element next to it is still a finding."""
    from onnx import TensorProto, helper

    from dlc.tools.fuzz.hostile import check_hostile, contractible, set_feeds

    graph = helper.make_graph([helper.make_node("Mul", ["s", "x"], ["p"]), helper.make_node("Sub", ["p", "z"], ["y"])],
                              "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3]) for n in "sxz"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert contractible(model, "y") and not contractible(model, "p")
    set_feeds(model, {"s": np.array([-2.6, -2.6, 1.5], np.float32),
                      "x": np.array([3.4028235e38, 2.0, 1.0], np.float32),
                      "z": np.array([-np.inf, 1.0, 0.5], np.float32)})
    assert check_hostile(model, 0, [("cpu", "all"), ("cpu", "none")]) == []


def test_reference_target_averages_in_float32_as_onnxruntime_does():
    """-2e38 three times overflows a float32 sum to -Inf (onnxruntime's answer); the reference
    target averaged in float64 and answered a finite -2e38."""
    from onnx import TensorProto, helper

    import dlc
    from dlc.tools.oracle import run_onnxruntime

    graph = helper.make_graph([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[1, 3])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    feeds = {"x": np.full((1, 1, 1, 3), -2e38, np.float32)}
    expected = run_onnxruntime(model, feeds)["y"]
    assert np.isneginf(expected).all()
    for target in ("reference", "cpu"):
        np.testing.assert_array_equal(dlc.compile(model, target=target).run(feeds)["y"], expected)


ARTIFACT_CASES = 15
ARTIFACT_SEED = 1


def test_seeded_artifact_mutation_campaign_finds_nothing():
    from dlc.tools.fuzz.artifacts import fuzz_artifacts

    log: list[str] = []
    summary = fuzz_artifacts(cases=ARTIFACT_CASES, seed=ARTIFACT_SEED, log=log.append)
    assert summary.cases == ARTIFACT_CASES
    assert summary.outcomes["refused"] >= 5, summary.report()  # the mutations reach the checks
    assert not summary.findings, "\n".join([summary.report(), *log, "reproduce: python -m dlc.tools.fuzz "
                                            f"--artifacts --cases {ARTIFACT_CASES} --seed {ARTIFACT_SEED} --no-save"])


@pytest.mark.parametrize("second", ["object", "weights", "manifest-field", "manifest-bytes"])
def test_a_mutation_after_a_fifo_is_refused_not_blocked_on(tmp_path, second):
    """Two mutations at once: the first left a FIFO (or a device link) where the second reads or
    rewrites a file. The campaign blocked forever reading manifest.json as a FIFO, which has no
    writer; now the second mutation raises (the case runs as it stands)."""
    import os
    import threading

    from dlc.tools.fuzz.artifacts import MUTATIONS, NotARegularFile

    (tmp_path / "model.o").write_bytes(b"\x7fELF" + bytes(60))
    os.mkfifo(tmp_path / "manifest.json")
    os.mkfifo(tmp_path / "weights.bin")
    outcome = []

    def mutate():
        for attempt in range(20):  # the rng's branches: each returns or raises, none blocks
            try:
                MUTATIONS[second][0](tmp_path, np.random.default_rng(attempt))
                outcome.append(None)
            except Exception as error:  # noqa: BLE001 - the campaign takes any (a fake ELF's too)
                outcome.append(error)

    thread = threading.Thread(target=mutate, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), f"{second} blocked on a FIFO"
    assert len(outcome) == 20 and any(isinstance(error, NotARegularFile) for error in outcome), outcome


def test_hostile_oracle_takes_the_spec_evaluators_integer_answer_over_onnxruntimes(monkeypatch):
    """onnxruntime 1.30 computes an int64 fmod through double (Mod(INT64_MAX, 22) comes out
    wrong): dlc equal to onnx.reference on an integer output is not a finding, and dlc differing
    from both still is."""
    from onnx import TensorProto, helper

    import dlc.tools.fuzz.hostile as hostile
    import dlc.tools.oracle as oracle

    graph = helper.make_graph([helper.make_node("Mod", ["a", "b"], ["y"], fmod=1)], "g",
                              [helper.make_tensor_value_info(n, TensorProto.INT64, [2]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    hostile.set_feeds(model, {"a": np.array([2**63 - 1, -7], np.int64), "b": np.array([22, 3], np.int64)})
    true_run = oracle.run_onnxruntime

    def off_by_one(m, feeds):
        return {k: v + 1 if k == "y" else v for k, v in true_run(m, feeds).items()}

    monkeypatch.setattr(oracle, "run_onnxruntime", off_by_one)
    assert hostile.check_hostile(model, 0, [("cpu", "all")]) == []
    monkeypatch.setattr(hostile, "onnx_reference", lambda m, feeds: off_by_one(m, feeds))
    (finding,) = hostile.check_hostile(model, 0, [("cpu", "all")])
    assert finding.kind == "mismatch" and "'y'" in finding.message


def test_reference_target_runs_a_unary_op_on_a_0d_tensor():
    """ReduceSum to a scalar, then Softsign: onnx.reference's Softsign cannot take a 0-d
    tensor (fuzz seed 412, 16-core machine); the reference target answers as onnxruntime."""
    from conftest import assert_matches_onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                               helper.make_node("Softsign", ["s"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert_matches_onnxruntime(model, target="reference")


def _transpose_matmul_1d() -> onnx.ModelProto:
    """x[10, 84] -> Transpose -> MatMul by a 1-D weight [10] -> y[84] (`--seed 1801`'s case)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(3).standard_normal(10).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), helper.make_node("MatMul", ["t", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 84])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [84])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_an_answer_only_onnxruntimes_optimiser_changes_is_not_a_dlc_mismatch():
    """onnxruntime 1.32 at ORT_ENABLE_ALL fuses a Transpose into a MatMul of 1-D B and answers
    wrongly; dlc gives what onnxruntime gives without graph optimisations and what the ONNX
    reference evaluator gives. The check says so (an oracle finding, never saved) instead of
    reporting a mismatch; an onnxruntime without the bug gives no finding at all."""
    from onnx.reference import ReferenceEvaluator

    import dlc

    model = _transpose_matmul_1d()
    x = np.random.default_rng(0).standard_normal((10, 84)).astype(np.float32)
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(dlc.compile(model).run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    findings = check_model(model, 1801005698, (("cpu", "all"),))
    assert {f.kind for f in findings} <= {"onnxruntime-optimiser"}, findings


def test_the_optimiser_is_blamed_only_where_dlc_matches_the_unoptimised_session():
    from dlc.tools.fuzz.checks import _optimiser_changed_it

    model = _transpose_matmul_1d()
    right, wrong = np.ones(84, np.float32), np.full(84, 2, np.float32)
    tolerance = {"y": 1e-5}
    assert _optimiser_changed_it(model, {"y": right}, {"y": wrong}, {"y": right}, tolerance)
    assert not _optimiser_changed_it(model, {"y": wrong}, {"y": right}, {"y": right}, tolerance)  # dlc's fault
    assert not _optimiser_changed_it(model, {"y": wrong}, {"y": wrong}, {"y": right}, tolerance)  # both off
    assert not _optimiser_changed_it(model, {"y": right}, {"y": wrong}, {}, tolerance)  # no second answer
