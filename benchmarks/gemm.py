"""Benchmark dlc's generated GEMM (dlc/codegen/ukernels.py) against numpy's BLAS, one thread each.

    python benchmarks/gemm.py                        # 1024^3 and CNN / transformer / GEMV shapes
    python benchmarks/gemm.py --shapes 1024x1024x1024 --tiles 14,32,256,1022,1024

Every kernel fuses bias + ReLU (numpy computes only the product, so the comparison favours
numpy). Runs of the two alternate so machine noise hits both; GFLOP/s = 2*M*N*K / time.
"""

from __future__ import annotations

import os

# OpenBLAS reads these when it loads: they must be set before numpy is imported.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import ctypes
import sys
import time
from pathlib import Path

import numpy as np
from llvmlite import ir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialects.gemm_ukernel import GemmSpec, pack_b
from dlc.codegen.native import compile_object
from dlc.codegen.ukernels import emit_gemm
from dlc.runtime import aligned_empty
from dlc.runtime.mcjit import NativeModule
from dlc.targets.cpu import CpuTarget

# (label, M, N, K): A (M x K) is the activation, B (K x N) the weight.
SHAPES = [
    ("square", 1024, 1024, 1024),
    ("resnet conv1 7x7", 12544, 64, 147),
    ("resnet 3x3 c64", 3136, 64, 576),
    ("resnet 1x1 c64->256", 3136, 256, 64),
    ("resnet 3x3 c256", 196, 256, 2304),
    ("resnet 3x3 c512", 49, 512, 4608),
    ("bert qkv", 128, 768, 768),
    ("bert ffn up", 128, 3072, 768),
    ("bert ffn down", 128, 768, 3072),
    ("gemv fc", 1, 1000, 2048),
]


def gemm_function(spec: GemmSpec):
    module = ir.Module("gemm")
    emit_gemm(module, "gemm", spec, exported=True)
    native = NativeModule(compile_object(str(module)))
    fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)(native.address("gemm"))
    return native, fn


def aligned(array: np.ndarray) -> np.ndarray:
    out = aligned_empty(array.shape, np.float32)
    out[...] = array
    return out


def time_pair(ours, theirs, flops: float, seconds: float) -> tuple[float, float]:
    """Best GFLOP/s of each over alternating runs lasting about `seconds`."""
    best = [np.inf, np.inf]
    ours(), theirs()  # warm-up
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for slot, run in enumerate((ours, theirs)):
            t0 = time.perf_counter()
            run()
            best[slot] = min(best[slot], time.perf_counter() - t0)
    return flops / best[0] / 1e9, flops / best[1] / 1e9


def bench(label: str, m: int, n: int, k: int, layout: str, tiles, seconds: float) -> tuple:
    rng = np.random.default_rng(0)
    a = aligned(rng.standard_normal((m, k), np.float32))
    b = rng.standard_normal((k, n), np.float32)
    bias = aligned(rng.standard_normal(n, np.float32))
    c = aligned_empty((m, n), np.float32)
    overrides = dict(zip(("mr", "nr", "kc", "mc", "nc"), tiles)) if tiles else {}
    # The host's vector width and caches, as the cpu target describes them to the compiler.
    host = CpuTarget().description()
    caches = {level.name: level.size_bytes for level in host.memory}
    spec = GemmSpec(m, n, k, a_row_stride=k, a_k_stride=1, b_layout=layout, ldb=n, ldc=n,
                    bias="row", activation="relu", vector_width=host.vector_bits // 32,
                    l1_bytes=caches["L1"], l2_bytes=caches["L2"], **overrides)
    b_arg = pack_b(b, spec.nr) if layout == "packed" else aligned(b)
    _native, fn = gemm_function(spec)
    pointers = (a.ctypes.data, b_arg.ctypes.data, c.ctypes.data, bias.ctypes.data, None)
    ours, numpy = time_pair(
        lambda: fn(*pointers), lambda: np.matmul(a, b), 2.0 * m * n * k, seconds
    )
    error = np.abs(c - np.maximum(a @ b + bias, 0)).max()
    tile_text = f"{spec.mr}x{spec.nr} kc={spec.kc} mc={spec.mc} nc={spec.nc}"
    return label, f"{m}x{n}x{k}", layout, tile_text, ours, numpy, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", help="MxNxK shapes instead of the built-in list")
    parser.add_argument("--layouts", default="packed,row", help="B layouts, comma-separated")
    parser.add_argument("--tiles", help="mr,nr,kc,mc,nc for every shape (default: choose_tiles)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing time per shape")
    args = parser.parse_args()
    shapes = SHAPES
    if args.shapes:
        shapes = [(s, *map(int, s.split("x"))) for s in args.shapes]
    tiles = tuple(map(int, args.tiles.split(","))) if args.tiles else None
    header = ("shape", "MxNxK", "B", "tiles", "dlc GF/s", "numpy GF/s", "dlc/numpy", "max err")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, m, n, k in shapes:
        for layout in args.layouts.split(","):
            row = bench(label, m, n, k, layout, tiles, args.seconds)
            label_, mnk, lay, tile_text, ours, numpy, error = row
            print(f"| {label_} | {mnk} | {lay} | {tile_text} | {ours:.1f} | {numpy:.1f} "
                  f"| {ours / numpy:.2f} | {error:.1e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
