"""One compile for every batch size (issue 18): a batch-1 compile run sample by sample, against a
compile pinned to the batch size, on a small CNN and a transformer layer with a symbolic batch.

    python benchmarks/symbolic_batch.py                     # batch 8, both models
    python benchmarks/symbolic_batch.py --batch 4 --repeat 50 --rounds 5

Each round times `--repeat` runs of each compile (median), the two alternating in one process;
the best round of each is kept, and the ratio is symbolic / pinned (1.0: as fast; the target is
<= 1.2). Compile times are printed too: the symbolic model compiles once for every batch size.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import models  # noqa: E402

import dlc  # noqa: E402


def cases(batch: int) -> list[tuple[str, object, dict, dict]]:
    """(name, model, the symbolic compile's pins, feeds at `batch`)."""
    rng = np.random.default_rng(0)
    cnn = models.resnet_block(channels=32, resolution=56, batch="N")
    seq = 128
    bert = models.symbolic_bert_layer(d_model=256, heads=4, ffn=1024, vocab=1000)
    ids = rng.integers(0, 1000, (batch, seq)).astype(np.int64)
    return [
        ("resnet_block 32ch 56x56", cnn, {}, {"x": rng.uniform(-1, 1, (batch, 3, 56, 56)).astype(np.float32)}),
        (f"BERT layer d=256 seq {seq}", bert, {"seq": seq},
         {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64)}),
    ]


def median_ms(model, feeds: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model.run(feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| model | batch | pinned compile s | symbolic compile s | pinned ms | symbolic ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, model, pins, feeds in cases(args.batch):
        batch_dim = "N" if "x" in feeds else "batch"
        start = time.perf_counter()
        pinned = dlc.compile(model, input_shapes={**pins, batch_dim: args.batch})
        pinned_compile = time.perf_counter() - start
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the proof must hold: no per-batch-size fallback here
            symbolic = dlc.compile(model, input_shapes=pins)
        start = time.perf_counter()
        symbolic.run(feeds)  # compiles the batch-1 body
        symbolic_compile = time.perf_counter() - start
        assert symbolic.batch == batch_dim and symbolic.compiles == 1
        np.testing.assert_allclose(symbolic.run(feeds)[pinned.output_names[0]],
                                   pinned.run(feeds)[pinned.output_names[0]], rtol=1e-4, atol=1e-4)
        best = {"pinned": float("inf"), "symbolic": float("inf")}
        for _ in range(args.rounds):
            for key, compiled in (("pinned", pinned), ("symbolic", symbolic)):
                median_ms(compiled, feeds, 2)  # warm
                best[key] = min(best[key], median_ms(compiled, feeds, args.repeat))
        print(f"| {name} | {args.batch} | {pinned_compile:.1f} | {symbolic_compile:.1f} | {best['pinned']:.2f} | "
              f"{best['symbolic']:.2f} | {best['symbolic'] / best['pinned']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
