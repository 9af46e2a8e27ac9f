"""The pass runner verifies once per run by default and after every pass with verify_each;
func.call verification looks callees up in a table (passes/pipeline.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, f32
from xdsl.passes import ModulePass
from xdsl.traits import SymbolTable

import passes.pipeline as pipeline
from dialects.context import make_context
from dialects.diagnostics import CompileError
from passes.pipeline import PassInstrumentation, run_passes, symbol_tables


def _module(functions: int, calls_per_function: int = 1) -> ModuleOp:
    """Functions f0..fN-1 of (f32) -> f32; @main calls each of them."""
    module = ModuleOp([])
    for index in range(functions):
        callee = func.FuncOp(f"f{index}", ((f32,), (f32,)))
        callee.body.block.add_op(func.ReturnOp(callee.body.block.args[0]))
        module.body.block.add_op(callee)
    main = func.FuncOp("main", ((f32,), (f32,)))
    block = main.body.block
    value = block.args[0]
    for index in range(functions):
        for _ in range(calls_per_function):
            call = func.CallOp(f"f{index}", [value], [f32])
            block.add_op(call)
            value = call.res[0]
    block.add_op(func.ReturnOp(value))
    module.body.block.add_op(main)
    return module


@dataclass(frozen=True)
class Nothing(ModulePass):
    name = "nothing"

    def apply(self, ctx, op: ModuleOp) -> None:
        pass


@dataclass(frozen=True)
class DropCallee(ModulePass):
    """Breaks the IR: removes @f0, which @main calls."""

    name = "drop-callee"

    def apply(self, ctx, op: ModuleOp) -> None:
        callee = next(o for o in op.ops if isinstance(o, func.FuncOp) and o.sym_name.data == "f0")
        op.body.block.erase_op(callee, safe_erase=False)


def _verifications(monkeypatch) -> list[int]:
    count = []
    original = ModuleOp.verify
    monkeypatch.setattr(ModuleOp, "verify", lambda self, *a, **k: (count.append(1), original(self, *a, **k))[1])
    return count


def test_verifies_once_after_the_passes_by_default(monkeypatch):
    count = _verifications(monkeypatch)
    instrument = PassInstrumentation(verify_each=False)
    run_passes(make_context(), _module(3), [Nothing(), Nothing(), Nothing()], instrument)
    assert len(count) == 1
    assert [name for name, _ in instrument.timings] == ["nothing", "nothing", "nothing", "verify"]


def test_verify_each_verifies_after_every_pass(monkeypatch):
    count = _verifications(monkeypatch)
    instrument = PassInstrumentation(verify_each=True)
    run_passes(make_context(), _module(3), [Nothing(), Nothing(), Nothing()], instrument)
    assert len(count) == 3
    assert "verify" not in [name for name, _ in instrument.timings]


def test_verify_each_names_the_pass_that_broke_the_ir():
    with pytest.raises(CompileError) as caught:
        run_passes(make_context(), _module(2), [Nothing(), DropCallee(), Nothing()],
                   PassInstrumentation(verify_each=True))
    assert "after pass 'drop-callee'" in str(caught.value)
    assert "'@f0' could not be found" in str(caught.value)


def test_once_per_run_names_the_passes_and_points_at_verify_each():
    with pytest.raises(CompileError) as caught:
        run_passes(make_context(), _module(2), [Nothing(), DropCallee()], PassInstrumentation(verify_each=False))
    message = str(caught.value)
    assert "after passes 'nothing', 'drop-callee'" in message
    assert "--verify-each" in message


def test_no_pass_run_means_no_verification(monkeypatch):
    count = _verifications(monkeypatch)
    run_passes(make_context(), _module(1), [Nothing()], PassInstrumentation(verify_each=False,
                                                                           disabled=frozenset({"nothing"})))
    assert count == []


def test_environment_turns_verify_each_on(monkeypatch):
    monkeypatch.setenv("DLC_VERIFY_EACH", "1")
    assert PassInstrumentation().verify_each
    monkeypatch.setenv("DLC_VERIFY_EACH", "0")
    assert not PassInstrumentation().verify_each


def test_symbol_table_finds_what_the_scan_finds_and_builds_one_table(monkeypatch):
    module = _module(50, calls_per_function=2)
    calls = [op for op in module.walk() if isinstance(op, func.CallOp)]
    scanned = [SymbolTable.lookup_symbol(call, call.callee) for call in calls]
    built = []
    symbols_of = pipeline._symbols_of
    monkeypatch.setattr(pipeline, "_symbols_of", lambda op: (built.append(op), symbols_of(op))[1])
    with symbol_tables():
        assert [SymbolTable.lookup_symbol(call, call.callee) for call in calls] == scanned
        assert SymbolTable.lookup_symbol(calls[0], "missing") is None
        module.verify()
    assert built == [module], "one table for the module, however many calls"
    assert isinstance(SymbolTable.__dict__["lookup_symbol"], staticmethod), "xDSL's lookup is put back"


def test_symbol_table_keeps_the_checks_of_func_call():
    module = _module(2)
    call = next(op for op in module.walk() if isinstance(op, func.CallOp))
    call.operands = [*call.operands, call.operands[0]]  # one argument too many for @f0
    with pytest.raises(CompileError, match="incorrect number of operands"):
        pipeline.verify_module(module, "in this test", "")


def test_cli_verify_each_and_time_passes(tmp_path, capsys, monkeypatch):
    from conftest import ROOT

    from dlc.cli import main

    monkeypatch.delenv("DLC_VERIFY_EACH", raising=False)
    linalg = tmp_path / "cnn.mlir"
    assert main(["compile", str(ROOT / "examples" / "models" / "cnn.onnx"), "--compile-to", "linalg",
                 "-o", str(linalg)]) == 0
    capsys.readouterr()
    assert main(["opt", str(linalg), "-p", "tile-contractions,plan-memory", "--time-passes",
                 "-o", str(tmp_path / "once.mlir")]) == 0
    once = capsys.readouterr().err
    assert "tile-contractions" in once and "verify" in once
    assert main(["opt", str(linalg), "-p", "tile-contractions,plan-memory", "--time-passes", "--verify-each",
                 "-o", str(tmp_path / "each.mlir")]) == 0
    each = capsys.readouterr().err
    assert "tile-contractions" in each and "verify" not in each
    assert (tmp_path / "once.mlir").read_text() == (tmp_path / "each.mlir").read_text()


def test_collector_thresholds_are_raised_during_passes_and_put_back():
    import gc

    seen = []

    @dataclass(frozen=True)
    class Look(ModulePass):
        name = "look"

        def apply(self, ctx, op: ModuleOp) -> None:
            seen.append(gc.get_threshold())

    before = gc.get_threshold()
    run_passes(make_context(), _module(1), [Look()], PassInstrumentation(verify_each=False))
    assert seen[0][0] > before[0]
    assert gc.get_threshold() == before


def _adds(*types) -> ModuleOp:
    """@adds(args of `types`): one arith.addi of each argument with itself."""
    from xdsl.dialects import arith

    function = func.FuncOp("adds", (types, ()))
    block = function.body.block
    for argument in block.args:
        block.add_op(arith.AddiOp(argument, argument))
    block.add_op(func.ReturnOp())
    return ModuleOp([function])


def test_constraints_checked_once_per_signature_still_refuse_a_new_one(monkeypatch):
    from xdsl.dialects.builtin import i32
    from xdsl.irdl import OpDef

    checked = []
    original = OpDef.verify
    monkeypatch.setattr(OpDef, "verify", lambda self, op: (checked.append(op.name), original(self, op))[1])
    monkeypatch.setattr(pipeline, "_SIGNATURES_PASSED", set())  # what earlier tests verified
    pipeline.verify_module(_adds(i32, i32, i32), "in this test", "")
    assert checked.count("arith.addi") == 1, "three adds of one signature: their constraints are checked once"
    pipeline.verify_module(_adds(i32), "in this test", "")
    assert checked.count("arith.addi") == 1, "a later verification (another phase, compile) checks it no more"
    with pytest.raises(CompileError, match="operand 'lhs' .* does not verify"):  # addi of f32: a new signature
        pipeline.verify_module(_adds(i32, f32), "in this test", "")


def test_constraints_checked_once_keep_the_traits_that_read_the_context():
    from xdsl.dialects import test
    from xdsl.ir import Block, Region

    module = _module(2)
    returns = [op for op in module.walk() if isinstance(op, func.ReturnOp)]
    stray = returns[0].clone()  # same signature as a return that verified, outside any func.func
    module.body.block.add_op(test.TestOp(regions=[Region(Block([stray], arg_types=[f32]))]))
    stray.operands = [stray.parent_block().args[0]]
    with pytest.raises(CompileError, match="func.return"):
        pipeline.verify_module(module, "in this test", "")


def test_constraints_checked_once_put_xdsl_back():
    from xdsl.irdl import OpDef

    before = OpDef.__dict__["verify"]
    pipeline.verify_module(_module(3), "in this test", "")
    with pytest.raises(CompileError):
        pipeline.verify_module(_adds(f32), "in this test", "")
    assert OpDef.__dict__["verify"] is before
