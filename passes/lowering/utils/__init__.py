"""Helpers the lowering passes and rules share (not passes): the linalg builder, elementwise loop
fusion, micro-kernel call sites, run-time checks, NPU instruction selection."""
