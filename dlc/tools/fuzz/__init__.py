"""Differential fuzzing: random valid ONNX graphs, every dlc target and fusion setting
against onnxruntime; failing models minimised by delta debugging into a replayed corpus.

Mirrors NNSmith (Liu et al., "NNSmith: Generating Diverse and Valid Test Cases for Deep
Learning Compilers", ASPLOS 2023): graphs are grown operator by operator while the
generator tracks every value's shape (so each node is valid by construction) and a
conservative value range (so Log/Sqrt/Div/Exp only see inputs on which they are well
conditioned, and discontinuous operators - Floor, comparisons, float->int Cast - only see
values computed without rounding); every model is then checked with onnx.checker and
strict shape inference against the tracked shapes. Each model is compiled with
`--fusion none|elementwise|all` on cpu, with the reference target and with npu-sim, and
run on seeded inputs next to onnxruntime (one thread). Failures are minimised with ddmin
(Zeller and Hildebrandt, "Simplifying and Isolating Failure-Inducing Input", TSE 2002)
over the nodes.

    python -m dlc.tools.fuzz --minutes 10 [--seed S] [--corpus DIR] [--targets cpu,reference,npu-sim]

The corpus defaults to tests/fuzz_corpus in a checkout of dlc, else to fuzz_corpus in dlc's
cache folder (an installed dlc has no tests/ of its own to write to). onnxruntime is the oracle:
without it the campaign stops at once with an install hint.

The long mode checks each model in a worker process, so a crash (segfault) or hang of
one compile is recorded as a finding and the fuzzer carries on. tests/test_fuzz.py runs a
bounded seeded campaign and replays the corpus (`python -m dlc.tools.fuzz --replay` does too).
A new corpus entry is triaged by hand: its json gets "fixed" (what fixed it) or "xfail"
(why it still fails; the replay test then expects the failure).

The modules: generator.py (random valid graphs), checks.py (a model against onnxruntime on
every target), minimise.py (ddmin), corpus.py (saved failures, replay) and campaign.py (the
loop, the crash-guarding worker, the command line).
"""
