"""Identical internal LLVM functions are compiled once (dlc/codegen/merge_functions.py)."""

from __future__ import annotations

import numpy as np
from conftest import ROOT, random_feeds

from dlc.codegen.merge_functions import merge_identical_functions
from dlc.codegen.native import parse_llvm

IR = """target triple = "x86_64-unknown-linux-gnu"

define internal void @"body_a"(ptr %p) {
  store float 1.0, ptr %p
  ret void
}

define internal void @"body_b"(ptr %p) {
  store float 1.0, ptr %p
  ret void
}

define internal void @"body_c"(ptr %p) {
  store float 2.0, ptr %p
  ret void
}

define internal void @"kernel_a"(ptr %p) {
  call void @"body_a"(ptr %p)
  ret void
}

define internal void @"kernel_b"(ptr %p) {
  call void @"body_b"(ptr %p)
  ret void
}

define void @"dlc_main"(ptr %p) {
  call void @"kernel_a"(ptr %p)
  call void @"kernel_b"(ptr %p)
  call void @"body_c"(ptr %p)
  ret void
}
"""


def test_equal_bodies_merge_and_their_callers_then_merge_too():
    merged = merge_identical_functions(IR)
    parse_llvm(merged)
    defined = [line.split("@")[1].split("(")[0] for line in merged.splitlines() if line.startswith("define")]
    assert defined == ['"body_a"', '"body_c"', '"kernel_a"', '"dlc_main"']
    assert merged.count('call void @"kernel_a"') == 2  # kernel_b became equal to kernel_a once bodies merged
    assert '@"body_b"' not in merged and '@"kernel_b"' not in merged


def test_exported_and_distinct_functions_stay():
    text = IR.replace("store float 1.0, ptr %p\n  ret void\n}\n\ndefine internal void @\"body_c\"",
                      "store float 3.0, ptr %p\n  ret void\n}\n\ndefine internal void @\"body_c\"")
    merged = merge_identical_functions(text)
    assert '@"body_b"' in merged and '@"kernel_b"' in merged and "@\"dlc_main\"" in merged
    assert merge_identical_functions("define void @f() {\n  ret void\n}\n") == "define void @f() {\n  ret void\n}\n"


def test_a_model_of_repeated_blocks_computes_the_same_merged_or_not(monkeypatch):
    import importlib.util

    import dlc
    import dlc.codegen.native as native

    # By path: xDSL installs a top-level `benchmarks` package that shadows ours.
    spec = importlib.util.spec_from_file_location("dlc_benchmark_models", ROOT / "benchmarks" / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    # A ResNet block's duplicate functions were its convolutions' im2col copies, now shared as
    # they are emitted (dlc/codegen/im2col.py); a MobileNet block still repeats a body.
    model = models.mobilenet_block(channels=8, resolution=8)
    feeds = random_feeds(model)
    monkeypatch.setenv("DLC_CACHE", "0")
    dropped = []
    monkeypatch.setattr(native, "merge_identical_functions",
                        lambda text: (merged := merge_identical_functions(text),
                                      dropped.append(text.count("\ndefine ") - merged.count("\ndefine ")))[0])
    merged = dlc.compile(model).run(feeds)
    assert dropped and dropped[0] > 0, "the model's repeated bodies share code"
    monkeypatch.setattr(native, "merge_identical_functions", lambda text: text)
    separate = dlc.compile(model).run(feeds)
    for name in merged:
        np.testing.assert_array_equal(merged[name], separate[name])
