"""Differential fuzzing against onnxruntime: `python -m dlc.tools.fuzz --minutes N`.
The campaign (generator, checks, minimiser, corpus) is fuzzer.py."""
