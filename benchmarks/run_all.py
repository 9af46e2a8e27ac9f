"""The benchmark set: the nine ONNX light zoo models and the exporter-style models, dlc vs onnxruntime.

    python benchmarks/run_all.py --threads 1                  # everything; writes benchmarks/results.md
    python benchmarks/run_all.py --models resnet18,mlp_b64 --repeat 20   # prints only (--output FILE to write)

Same process, same inputs, same thread count, onnxruntime at ORT_ENABLE_ALL (benchmarks/run.py's
helpers). GFLOP/s counts the ONNX graph's own work (dialects.op_costs.flops on the imported graph).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run.py and models.py (xDSL ships a top-level `benchmarks` package)

import models
from run import ROOT, benchmark

import dlc
from dialects.diagnostics import DlcError

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO = ["squeezenet", "shufflenet", "resnet50", "vgg19", "densenet121", "inception_v1", "inception_v2",
       "bvlc_alexnet", "zfnet512"]
BUILT = {
    "resnet18": lambda: models.resnet18(),
    "mobilenet_v2": lambda: models.mobilenet_v2(),
    "mobilenet_v3": lambda: models.mobilenet_v3(),
    "efficientnet_b0": lambda: models.efficientnet_b0(),
    "mobilenet_block": lambda: models.mobilenet_block(channels=32, resolution=56, activation="hardswish"),
    "se_block": lambda: models.se_block(),
    "speech_front_end": lambda: models.speech_front_end(),
    "transformer_d256": lambda: models.transformer_encoder(256, 4, 128, 1024),
    "transformer_d768": lambda: models.transformer_encoder(768, 12, 128, 3072),
    "mlp_b1": lambda: models.mlp(1),
    "mlp_b64": lambda: models.mlp(64),
    "lstm_h256_s64": lambda: models.recurrent("LSTM", hidden=256, seq=64),
    "gru2_h256_s64": lambda: models.recurrent("GRU", hidden=256, seq=64, layers=2),
}
ALL = ZOO + list(BUILT)


def zoo_model(name: str) -> onnx.ModelProto:
    """A light model with its initializers no longer listed as inputs.

    IR version 3 lists them as inputs, which makes them overridable for onnxruntime: it then
    neither constant-folds the ConstantOfShape weights nor fuses BatchNormalization, and would
    be timed recomputing its weights on every run.
    """
    return without_initializer_inputs(onnx.load(LIGHT / f"light_{name}.onnx"))


def without_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its initializers no longer listed as graph inputs (IR version >= 4)."""
    initializers = {i.name for i in model.graph.initializer}
    real = [v for v in model.graph.input if v.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(real)
    model.ir_version = max(model.ir_version, 4)
    return model


def graph_flops(model: onnx.ModelProto) -> int:
    from dialects.onnx import OnnxOp
    from dialects.op_costs import flops
    from dlc.frontend.importer import import_model

    return sum(flops(op) for op in import_model(model).walk() if isinstance(op, OnnxOp))


def measure(name: str, threads: int, repeat: int, workdir: Path) -> dict:
    model = zoo_model(name) if name in ZOO else BUILT[name]()
    path = workdir / f"{name}.onnx"
    onnx.save(model, path)
    try:
        row = benchmark(path, threads, repeat)
    except DlcError as error:  # an unsupported operator or a compiler bug: a row saying so, the run goes on
        return {"model": name, "error": str(error).splitlines()[0]}
    row["gflops"] = graph_flops(model) / (row["dlc_ms"] * 1e-3) / 1e9
    return row


def table(rows: list[dict], threads: int, command: str, ort_version: str) -> str:
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    header = (f"{date.today()}, {machine}, threads={threads}, dlc {dlc.__version__}, "
              f"onnxruntime {ort_version}")
    lines = [header, "",
             f"`{command}`", "",
             "| model | dlc ms | ort ms | dlc/ort | dlc GFLOP/s | compile s | max abs err |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | - | - | - | - | - | {r['error']} |")
        else:
            lines.append(f"| {r['model']} | {r['dlc_ms']:.3f} | {r['ort_ms']:.3f} | {r['ratio']:.2f} | "
                         f"{r['gflops']:.1f} | {r['compile_s']:.1f} | {r['max_abs_err']:.1e} |")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    if ratios:
        worst = max((r for r in rows if "ratio" in r), key=lambda r: r["ratio"])
        geomean = float(np.exp(np.mean(np.log(ratios))))
        summary = (f"geomean dlc/ort over {len(ratios)} models: {geomean:.2f}; "
                   f"worst: {worst['model']} {worst['ratio']:.2f} (lower is better for dlc)")
        lines += ["", summary]
    return "\n".join(lines) + "\n"


def _ort_version() -> str:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # not one warning per unused IR-3 shape initializer
    return onnxruntime.__version__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=",".join(ALL), help=f"comma-separated, from: {','.join(ALL)}")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each (median)")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the table here (default: benchmarks/results.md for the whole set; "
                             "a run of some models only prints, so it never replaces the set's checked-in table)")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {ALL}")
    ort_version = _ort_version()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            rows.append(measure(name, args.threads, args.repeat, Path(workdir)))
            r = rows[-1]
            print(f"{name:20s} " + (r["error"] if "error" in r else
                  f"dlc {r['dlc_ms']:9.3f} ms  ort {r['ort_ms']:9.3f} ms  ratio {r['ratio']:5.2f}  "
                  f"{r['gflops']:6.1f} GFLOP/s"), flush=True)
    command = "python benchmarks/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(rows, args.threads, command.strip(), ort_version)
    print("\n" + text)
    output = args.output or (HERE / "results.md" if set(names) == set(ALL) else None)
    if output is not None:
        output.write_text(text)
        print(f"wrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
