"""The `dlc` command line: compile, run, opt, explain, compare, verify, bench, passes, ops, cache.

Errors print one clear message and exit with code 1, whatever the input (usage errors, pipeline
text, plugins included); `--debug` shows the traceback. Long work reports its progress on
stderr (dlc/progress.py); `--quiet` turns that off.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from dlc.errors import DlcError, InputError, UnsupportedError
from dlc.tools.oracle import random_inputs

# `dlc compare --target cuda` with TF32 contractions (the default; cuda:fp32 keeps float32's 1e-3,
# fusion_report.FLOAT_*_TOLERANCE):
# an operand rounded to TF32 is off by up to 2^-11 relative, a product by 2^-10 (~1e-3, the fp32
# bound itself), and layers compound it: ResNet-50's logits differ from onnxruntime's by 1e-2, as
# torch's TF32 ones do (benchmarks/README.md). 3e-2, abs and rel, leaves 3x.
COMPARE_TF32_TOLERANCE = 3e-2
PHASE_CHOICES = ("onnx", "graph", "kernels", "linalg", "loops", "llvm", "exe")


def _parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """--shape NAME=AxB[,NAME=C...], repeatable, later wins. NAME is an input (its whole shape)
    or a symbolic dimension name (one size); the importer tells them apart by the model."""
    shapes = {}
    for item in (part for text in items or [] for part in text.split(",")):
        name, _, dims = item.strip().rpartition("=")
        example = "such as x=1x3x224x224, batch=1 or input_ids=1x128,attention_mask=1x128"
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise DlcError(f"--shape {item}: expected NAME=DIMxDIMx... {example}") from None
        if not name or any(d <= 0 for d in shapes[name]):
            raise DlcError(f"--shape {item}: expected NAME=DIMxDIMx... with positive dims, {example}")
    return shapes


def _parse_inputs(items: list[str] | None) -> dict[str, np.ndarray]:
    """--input NAME=FILE.npy, or NAME=VALUE for a scalar or a short list (NAME=5, NAME=[2,3]),
    which takes the input's declared type when the model is known (`_typed_literals`)."""
    feeds = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"--input {item}: expected NAME=FILE.npy or NAME=VALUE")
        literal = _literal(path)
        if literal is not None:
            feeds[name] = literal
            continue
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"--input {item}: no such file '{path}'",
                             "check the path, or give a value such as NAME=5 or NAME=[1,2]") from None
        except Exception as error:
            raise InputError(f"--input {item}: cannot read '{path}' as a .npy file ({error})",
                             "write it with numpy.save(path, array)") from None
        if not isinstance(feeds[name], np.ndarray):  # an .npz archive holds several arrays
            raise InputError(f"--input {item}: '{path}' is an .npz archive, not one .npy array",
                             "save the input alone with numpy.save(path, array)")
    return feeds


class _Literal(np.ndarray):
    """An --input given as a value on the command line, not a file: its dtype is numpy's guess
    until the model's declared type replaces it."""


def _literal(text: str) -> np.ndarray | None:
    import json

    if text.endswith(".npy"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, (int, float, bool, list)):
        return None
    try:
        return np.asarray(value).view(_Literal)
    except ValueError:  # a ragged list
        return None


def _typed_literals(given: dict[str, np.ndarray], specs) -> None:
    """Values typed on the command line take their input's declared dtype (M=5 for an int64
    trip count, 0.5 for a float input)."""
    dtypes = {spec.name: np.dtype(spec.dtype) for spec in specs}
    for name, value in given.items():
        if isinstance(value, _Literal):
            given[name] = np.asarray(value).astype(dtypes.get(name, value.dtype))


def _load_plugins(paths: list[str] | None) -> None:
    """--load-pass-plugin FILE.py: register its passes, or say in one line why it cannot."""
    if not paths:
        return  # `passes` imports xDSL: a compile the cache answers needs none of it
    from passes import load_pass_plugin

    for path in paths or []:
        if not Path(path).is_file():
            raise DlcError(f"--load-pass-plugin {path}: no such file",
                           "give the path of a Python file that defines xDSL ModulePass classes "
                           "(examples/passes/remove_double_relu.py is one)")
        try:
            names = load_pass_plugin(path)
        except (DlcError, KeyboardInterrupt):
            raise
        except BaseException as error:  # the plugin's own code failed (sys.exit too): report it as its error
            where = ""
            if isinstance(error, SyntaxError) and error.lineno:
                where = f" (line {error.lineno})"
            raise DlcError(f"--load-pass-plugin {path}: importing it raised {type(error).__name__}{where}: "
                           f"{error}", f"run `python {path}` to see the error in full") from error
        if not names:
            raise DlcError(f"--load-pass-plugin {path}: the file defines no pass (no subclass of "
                           "xdsl.passes.ModulePass with a `name`)",
                           "see docs/writing-passes.md for the shape of a pass")


def _pipeline_syntax_error(error: BaseException) -> DlcError | None:
    """xDSL's ArgSpecParseError (a BaseException, so `except Exception` misses it) as one line:
    the pipeline text, the column and xDSL's reason."""
    from passes.pipeline import PIPELINE_SYNTAX_HINT, pipeline_syntax_message

    if type(error).__name__ != "ArgSpecParseError":
        return None
    return DlcError(pipeline_syntax_message(error), PIPELINE_SYNTAX_HINT)


MLIR_STARTS = ("builtin.module", "module", '"builtin.module"', "func.func", "//")


def mlir_phase(path: Path) -> str | None:
    """The phase of an MLIR text file (None: not MLIR text), from the dialects it holds:
    linalg -> linalg, kernel.launch -> kernels, onnx ops -> onnx (the graph passes that then
    run again change nothing on graph-phase IR), else loops (also linalg-phase IR of GEMMs
    alone, whose loops stage has no linalg op to lower: the same result)."""
    import re

    try:
        with open(path, "rb") as file:
            text = file.read().decode()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.lstrip().startswith(MLIR_STARTS):
        return None
    found = set(re.findall(r'^\s*(?:%[^=\n]*=\s*)?"?(linalg|kernel|onnx)\.', text, re.M))
    return ("linalg" if "linalg" in found else "kernels" if "kernel" in found
            else "onnx" if "onnx" in found else "loops")


def _stdout_file() -> Path | None:
    """The regular file stdout is redirected to (`dlc opt m.mlir > opt.mlir`), or None."""
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return None
    return path if path.is_file() else None


def _print_mlir(module) -> None:
    """MLIR on stdout. Redirected to a file, the weights go beside it as they do with -o
    (`> opt.mlir` writes opt.weights.npz), so `dlc compile opt.mlir` finds them."""
    from dialects.weights import sidecar_path, weights_of

    print(module)
    weights = weights_of(module)
    if not weights:
        return
    target = _stdout_file()
    if target is not None:
        with _writing(sidecar_path(target)):
            weights.save(sidecar_path(target))
        print(f"dlc: wrote the weights beside {target}: {sidecar_path(target)}", file=sys.stderr)
    else:
        print("dlc: the weights of this IR were not written (stdout is not a file); use -o FILE.mlir "
              "or `> FILE.mlir` to get FILE.weights.npz beside it", file=sys.stderr)


def _instrumentation(args):
    from passes.pipeline import PassInstrumentation, verify_each_default

    def printer(pass_name, module):
        print(f"// -----// IR after {pass_name} //----- //", file=sys.stderr)
        print(module, file=sys.stderr)

    print_after_all = getattr(args, "print_ir_after_all", False)
    print_after = frozenset(getattr(args, "print_ir_after", None) or [])
    disabled = frozenset(getattr(args, "disable_pass", None) or [])
    if print_after or disabled:  # a misspelt pass would otherwise be silently never matched
        from passes import all_passes

        known = all_passes()
        for option, names in (("--print-ir-after", print_after), ("--disable-pass", disabled)):
            unknown = sorted(names - set(known))
            if unknown:
                raise DlcError(f"{option} {unknown[0]}: unknown pass '{unknown[0]}'",
                               "`dlc passes` lists the registered passes")
    verify_each = getattr(args, "verify_each", False)
    if not (print_after_all or print_after or disabled or verify_each):
        return None  # nothing to watch or change: the compile may come from the cache
    return PassInstrumentation(print_after_all=print_after_all, print_after=print_after,
                               disabled=disabled, printer=printer, verify_each=verify_each or verify_each_default())


def _print_timings(timings) -> None:
    total = sum(t for _, t in timings) or 1e-9
    print("===- pass execution timing -===", file=sys.stderr)
    for name, seconds in timings:
        print(f"  {seconds * 1e3:9.2f} ms  {100 * seconds / total:5.1f}%  {name}", file=sys.stderr)
    print(f"  {total * 1e3:9.2f} ms  100.0%  total", file=sys.stderr)


def _tiles(args) -> str | None:
    """--tiles FILE.json then each --tile, as apply-user-tiles' text (None: no override)."""
    import json

    entries = []
    if getattr(args, "tiles", None):
        from passes.tiling.apply_user_tiles import format_tiles  # xDSL: only when asked for

        try:
            entries.append(format_tiles(json.loads(Path(args.tiles).read_text())))
        except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise DlcError(f"--tiles {args.tiles}: cannot read tile overrides: {error}",
                           'write a JSON object such as {"*": {"mr": 8, "nr": 32}}') from None
    entries += getattr(args, "tile", None) or []
    return ";".join(entries) or None


def _options(args):
    from dlc.targets import CompileOptions

    return CompileOptions(threads=getattr(args, "threads", None),
                          fusion=getattr(args, "fusion", "all"),
                          profile=getattr(args, "profile", False),
                          placement_from=getattr(args, "placement_from", None),
                          max_memory=getattr(args, "max_memory", None),
                          tiles=_tiles(args),
                          cpu=getattr(args, "cpu", "native"),
                          cpu_features=getattr(args, "cpu_features", ""),
                          embed_weights=getattr(args, "embed_weights", False),
                          winograd=getattr(args, "winograd", "f2"),
                          initializers_as_inputs=getattr(args, "initializers_as_inputs", False))


def _compile(args, compile_to: str):
    from dlc.driver import compile_model

    instrument = _instrumentation(args)
    compile_from = getattr(args, "compile_from", None)
    if compile_from is not None:
        _check_mlir_text(Path(args.model))
    elif not Path(args.model).is_dir():
        compile_from = mlir_phase(Path(args.model))  # MLIR text: --compile-from is implied
    result = compile_model(args.model, target=args.target, options=_options(args),
                           input_shapes=_parse_shapes(getattr(args, "shape", None)),
                           pipeline=getattr(args, "pipeline", None), compile_to=compile_to,
                           compile_from=compile_from, instrument=instrument)
    if getattr(args, "time_passes", False):
        _print_timings(result.timings)
    return result


def _check_output(option: str, path: Path, directory: bool) -> None:
    """Refuse an output path that cannot be written before compiling (an artifact is a
    directory, created with its parents; any other output is a file in an existing folder)."""
    if directory:
        blocked = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            raise DlcError(f"{option} {path}: '{blocked}' is a file, and the output is a directory",
                           "give a directory path (it is created if missing), or remove the file")
    elif path.is_dir():
        raise DlcError(f"{option} {path}: is a directory, and this output is a file",
                       "give a file name, e.g. -o model.mlir")
    elif not path.parent.is_dir():
        raise DlcError(f"{option} {path}: the folder '{path.parent}' does not exist",
                       f"create it first (mkdir -p {path.parent}) or write elsewhere")


@contextlib.contextmanager
def _writing(path: Path):
    """The OS's refusal to write (permissions, a full disk) becomes an error naming the path."""
    try:
        yield
    except OSError as error:
        raise DlcError(f"cannot write {path}: {error.strerror or error}",
                       "check the path's permissions and the free disk space") from None


def _cache_key(args) -> str | None:
    """The cache key of `dlc compile`/`dlc run` on an ONNX file with the default pipeline, as
    the driver computes it (dlc/driver.py `_cache_key`), read without importing onnx or xDSL;
    None when the compile cannot come from the cache or only the driver can tell: another
    target, a pipeline, plugins, IR printed or checked between passes, MLIR text, a model
    whose weights may be in other files."""
    if (getattr(args, "compile_to", "exe") != "exe" or args.target != "cpu" or args.pipeline
            or getattr(args, "load_pass_plugin", None) or getattr(args, "compile_from", None)
            or args.time_passes or args.print_ir_after_all or args.print_ir_after or args.disable_pass
            or args.verify_each):
        return None
    import dataclasses

    from dlc import cache

    if cache.cache_dir() is None:
        return None
    try:
        data = Path(args.model).read_bytes()
    except OSError:  # a directory, or missing: the slow path says so
        return None
    try:  # mlir_phase's test, on the bytes just read
        if data.decode().lstrip().startswith(MLIR_STARTS):
            return None
    except UnicodeDecodeError:
        pass
    if b"location" in data:  # external data: the driver asks onnx whether the key covers the weights
        return None
    return cache.cache_key(data, args.target, dataclasses.asdict(_options(args)), _parse_shapes(args.shape))


def _copied_from_cache(args, out: Path) -> bool:
    """`dlc compile MODEL.onnx -o DIR` whose artifact is in the cache: its files copied into DIR
    with neither onnx nor xDSL imported (issue 16: a hit took 0.7-0.9 s as a process, most of
    it importing them). False: the compile runs, and looks the entry up itself."""
    from dlc import cache

    key = _cache_key(args)
    return key is not None and cache.copy_entry(key, out, args.max_memory)


def cmd_compile(args) -> int:
    _load_plugins(args.load_pass_plugin)
    writes_directory = args.compile_to == "exe"
    if args.output or writes_directory:
        _check_output("-o", Path(args.output or "out"), writes_directory)
    if writes_directory and _copied_from_cache(args, Path(args.output or "out")):
        out = Path(args.output or "out")
        print(f"wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
        return 0
    from dlc.driver import write_mlir
    from dlc.runtime.artifact import no_huge_pages, weights_written_early

    no_huge_pages()  # this process runs no model (dlc/runtime/artifact.py)

    # An artifact's weights.bin is written while its code compiles (dlc/runtime/artifact.py).
    with weights_written_early(Path(args.output or "out")) if writes_directory else contextlib.nullcontext():
        result = _compile(args, args.compile_to)
        if result.phase == "exe" and hasattr(result.executable, "placement"):
            _print_placement(result.executable, args)
            return 0
        if result.phase == "exe":
            out = Path(args.output or "out")
            with _writing(out):
                result.executable.save(out)
            print(f"wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
            return 0
    if result.phase == "llvm":
        if args.output:
            with _writing(Path(args.output)):
                Path(args.output).write_text(result.text)
            print(f"wrote {args.output}")
        else:
            print(result.text)
    elif args.output:
        with _writing(Path(args.output)):
            write_mlir(result.module, args.output)
        from dialects.weights import sidecar_path

        print(f"wrote {args.output} and {sidecar_path(args.output)}")
    else:
        _print_mlir(result.module)
    return 0


def _print_placement(executable, args) -> None:
    """A model split across targets: placement summary, placement file, and each NPU stream."""
    from dlc.targets.partition import placement_summary, write_placement

    print(placement_summary(executable.placement, executable.partitions))
    if getattr(args, "placement", None):
        write_placement(args.placement, executable.placement)
        print(f"wrote {args.placement}")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        streams = 0
        for i, step in enumerate(executable.steps):
            if hasattr(step.executable, "module"):
                (out / f"partition{i}.{step.target}.mlir").write_text(str(step.executable.module) + "\n")
                streams += 1
        if streams:  # a simulator's instruction streams (npu-sim): nothing to run from disk
            print(f"wrote the instruction streams of the {executable.placement.target} partitions to {out}/")
        else:  # e.g. cuda: one directory per partition and partitions.json, which dlc.load runs
            with _writing(out):
                executable.save(out)
            print(f"wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")


def _summary(array: np.ndarray) -> str:
    flat = array.reshape(-1)
    if flat.size == 0:
        return "empty"
    first = ", ".join(f"{v:.6g}" if array.dtype.kind == "f" else str(v) for v in flat[:5])
    if array.dtype.kind in "fiub":
        numeric = flat.astype(np.float64)
        return (f"min {numeric.min():.6g}  max {numeric.max():.6g}  mean {numeric.mean():.6g}  "
                f"first [{first}{', ...' if flat.size > 5 else ''}]")
    return f"first [{first}]"


def _pin_symbolic_dims(args, given: dict[str, np.ndarray]) -> None:
    """`dlc run` on an ONNX model with symbolic dimensions: the shapes of the --input arrays,
    then 1 for each dimension still unpinned, said in one line on stderr (not with --quiet)."""
    if getattr(args, "compile_from", None) is not None or mlir_phase(Path(args.model)) is not None:
        return
    import onnx

    from dlc.frontend.input_shapes import pins_of_one, symbolic_inputs

    try:
        proto = onnx.load(args.model, load_external_data=False)
    except Exception:  # noqa: BLE001 - not a readable model: the compile says why
        return
    symbolic = symbolic_inputs(proto)
    pins = {name: array.shape for name, array in given.items() if name in symbolic}
    pins.update(_parse_shapes(args.shape))
    added = pins_of_one(proto, pins)
    text = {name: "x".join(map(str, shape)) for name, shape in {**pins, **added}.items()}
    args.shape = [",".join(f"{name}={dims}" for name, dims in text.items())] if text else None
    from dlc.progress import QUIET_VARIABLE

    if added and not args.quiet and os.environ.get(QUIET_VARIABLE, "") in ("", "0"):
        chosen = ", ".join(f"{name}={text[name]}" for name in added)
        print(f"dlc run: symbolic dimensions set to {chosen}; pin other sizes with --shape NAME=SIZE",
              file=sys.stderr)


def _per_value_model(args, error):
    """`dlc run` on a model whose Loop's scan outputs are sized by input values: the model
    compiled per value (dlc/specializations.py), or `error` raised again when it is not that."""
    from dlc.specializations import DEFAULT_MAX_SHAPES, value_specializing_model

    if getattr(args, "compile_from", None) is not None or mlir_phase(Path(args.model)) is not None:
        raise error
    with warnings.catch_warnings():  # `_say_values` says it in dlc run's words
        warnings.filterwarnings("ignore", message="dlc: compiling per value")
        model = value_specializing_model(args.model, error, args.target, _options(args),
                                         _parse_shapes(args.shape), DEFAULT_MAX_SHAPES,
                                         getattr(args, "pipeline", None))
    if model is None:
        raise error
    return model


def _say_values(args, model, feeds: dict, given: dict) -> None:
    """One line on stderr naming the input values a per-value model is compiled for."""
    from dlc.progress import QUIET_VARIABLE

    values = model.value_inputs
    if args.quiet or os.environ.get(QUIET_VARIABLE, "") not in ("", "0") or not values:
        return
    def shown(value) -> str:
        flat = np.asarray(value).reshape(-1).tolist()
        return str(flat[0]) if np.ndim(value) == 0 else str(flat)

    text = ", ".join(f"{name}={shown(feeds[name])}"
                     + ("" if name in given else " (random)") for name in values)
    print(f"dlc run: compiled for the input values {text}: a Loop's scan outputs are sized by them; "
          "give others with --input NAME=VALUE", file=sys.stderr)


def _cached_model(args, given: dict[str, np.ndarray]):
    """`dlc run MODEL.onnx` whose artifact is in the cache, loaded without onnx or xDSL (issue
    16), or None. The key is taken before --input's shapes pin symbolic dimensions (that needs
    onnx): an entry under it was compiled with every dimension fixed, so it serves only when
    each --input has the shape the artifact takes (else the run pins and compiles as before)."""
    import dlc
    from dlc import cache

    key = _cache_key(args)
    executable = cache.lookup(key) if key is not None else None
    if executable is None:
        return None
    shapes = {spec.name: tuple(spec.shape) for spec in executable.inputs}
    if any(shapes.get(name) != np.shape(value) for name, value in given.items()):
        return None
    return dlc.CompiledModel(executable, args.target)


def cmd_run(args) -> int:
    import dlc

    path = Path(args.model)
    save_to = Path(args.save_outputs) if args.save_outputs else None
    if save_to is not None:
        _check_output("--save-outputs", save_to, directory=True)
    if path.is_dir():
        if args.target not in ("cpu",):
            raise DlcError(f"{path} is a compiled cpu artifact; --target {args.target} needs the .onnx model")
        given = _parse_inputs(args.input)  # a bad --input fails before a compile, not after it
        model = dlc.load(path, max_memory=args.max_memory)
    else:
        given = _parse_inputs(args.input)
        model = _cached_model(args, given)
    if model is None:
        _pin_symbolic_dims(args, given)
        try:
            result = _compile(args, "exe")
            model = dlc.CompiledModel(result.executable, args.target)
        except UnsupportedError as error:
            model = _per_value_model(args, error)  # a Loop sized by input values, else `error`
    _typed_literals(given, model.inputs)
    feeds = random_inputs(model.inputs, args.seed)
    feeds.update(given)
    if hasattr(model, "executable_for"):  # per input value: the specialisation these feeds pick
        _say_values(args, model, feeds, given)
        outputs = model.run(feeds)
        executable, own_feeds = model.specialisation(feeds)
    else:
        executable, own_feeds, outputs = model._executable, feeds, None
    if args.check_bounds:
        if not hasattr(executable, "_checked_run"):
            raise DlcError(f"--check-bounds checks native code: it needs --target cpu, not {args.target}")
        checked = executable.run(own_feeds, check_bounds=True)
        outputs = checked if outputs is None else outputs
        print("bounds check: no invalid access (every input, output, the arena and the weights between "
              "guard pages, end- then start-aligned; inputs and weights read-only)")
    elif outputs is None:
        outputs = model.run(feeds)
    profiler = executable
    if args.profile and not getattr(executable, "profile_sites", None):  # a cuda build: CUDA event timings
        from dlc.targets.cuda.runtime import CudaProfile

        profiler = CudaProfile.of(executable) or executable
    if args.profile and not getattr(profiler, "profile_sites", None):
        raise DlcError("--profile needs a cpu build compiled with profiling: run it on the .onnx model, or "
                       "compile the artifact with `dlc compile MODEL.onnx --profile -o DIR`")
    from dlc import progress

    profiled, latencies = None, []
    with progress.current().paused(f"timing {max(args.repeat, 1)} runs"):
        if args.profile:  # the counters are read after each run: per-kernel medians and means
            from dlc.tools.profiling import profile_runs

            profiled = profile_runs(profiler, lambda: model.run(feeds), args.repeat)
            latencies = profiled.latencies
        for _ in range(max(args.repeat, 1) if profiled is None else 0):
            start = time.perf_counter()
            model.run(feeds)
            latencies.append(time.perf_counter() - start)
    for name, value in outputs.items():
        print(f"{name}: shape {list(value.shape)} {value.dtype}  {_summary(value)}")
        if save_to is not None:
            file = save_to / f"{name.replace('/', '_')}.npy"
            with _writing(file):
                save_to.mkdir(parents=True, exist_ok=True)
                np.save(file, value)
    print(f"median latency over {len(latencies)} run(s): {np.median(latencies) * 1e3:.3f} ms "
          f"(mean {np.mean(latencies) * 1e3:.3f} ms; target {args.target})")
    if hasattr(executable, "format_reports"):
        print(executable.format_reports())
    if profiled is not None:
        from dlc.tools.profiling import format_profile

        print(format_profile(executable, profiled) if profiler is executable else profiler.format(profiled))
    return 0


def _check_mlir_text(path: Path) -> None:
    """`dlc opt` reads MLIR text: refuse a binary file (an .onnx model) by name, not by codec."""
    try:
        path.read_bytes().decode()
    except OSError:
        return  # read_mlir reports a missing or unreadable file
    except UnicodeDecodeError:
        raise DlcError(f"{path}: not MLIR text (the file is binary; an .onnx model?)",
                       "`dlc opt` and --compile-from read the text `dlc compile MODEL.onnx --compile-to "
                       "PHASE -o M.mlir` writes; give an .onnx model without --compile-from") from None


def cmd_opt(args) -> int:
    from dialects.context import make_context
    from dlc.driver import read_mlir, run_on_module_and_bodies, write_mlir
    from passes.pipeline import PassInstrumentation, parse_pass_pipeline

    _load_plugins(args.load_pass_plugin)
    if args.output:
        _check_output("-o", Path(args.output), directory=False)
    _check_mlir_text(Path(args.input))
    module = read_mlir(args.input)
    instrument = _instrumentation(args) or PassInstrumentation()  # --time-passes alone reads its timings
    if args.pipeline:
        run_on_module_and_bodies(make_context(), module, parse_pass_pipeline(args.pipeline), instrument)
    else:
        module.verify()
    if args.time_passes:
        _print_timings(instrument.timings)
    if args.output:
        write_mlir(module, args.output)
    else:
        _print_mlir(module)
    return 0


def cmd_explain(args) -> int:
    from dlc.tools.fusion_report import explain

    print(explain(args.model, fusion=args.fusion, input_shapes=_parse_shapes(args.shape), target=args.target))
    return 0


def cmd_compare(args) -> int:
    from dlc.targets import get_target
    from dlc.tools.fusion_report import FLOAT_ABS_TOLERANCE, FLOAT_REL_TOLERANCE, compare, format_compare

    backend = get_target(args.target)
    simulated = backend.partial and not getattr(backend, "runs_on_device", False)
    precision = getattr(backend, "precision", None)  # the cuda target: "tf32" or "fp32" contractions
    if args.quantized and simulated:  # fp32 against int8 on a simulated accelerator: its costs (issue 20)
        from dlc.tools.npu_report import compare_npu_quantized, format_npu_quantized

        print(format_npu_quantized(compare_npu_quantized(args.model, args.quantized, args.target,
                                                         _parse_shapes(args.shape)), args.target))
        return 0
    if args.quantized:  # fp32 against int8 (issue 20): accuracy and time, dlc and onnxruntime
        import importlib.util

        from dlc.tools.quantized_report import compare_quantized, format_quantized

        builds = compare_quantized(args.model, args.quantized, samples=args.samples, repeat=args.repeat,
                                   threads=args.threads, input_shapes=_parse_shapes(args.shape),
                                   with_onnxruntime=importlib.util.find_spec("onnxruntime") is not None)
        print(format_quantized(builds))
        return 0
    if simulated:  # a simulated accelerator: compare its cost model, not timings
        from dlc.tools.fusion_report import compare_fusion

        table, worst = compare_fusion(args.model, args.target, _parse_shapes(args.shape))
        print(table)
        return 0 if worst <= 1e-3 else 1

    import importlib.util

    with_onnxruntime = importlib.util.find_spec("onnxruntime") is not None
    if not with_onnxruntime:  # the fused/unfused rows stand alone; say why the third is missing
        print("dlc: onnxruntime is not installed, so the comparison has no onnxruntime row "
              "(pip install onnxruntime, or dlc's test extra: pip install 'dlc[test]')", file=sys.stderr)
    from dlc import progress

    # Fusion only reorders float32 arithmetic (TF32 contractions on cuda round each product).
    abs_tolerance, rel_tolerance = ((COMPARE_TF32_TOLERANCE,) * 2 if precision == "tf32"
                                    else (FLOAT_ABS_TOLERANCE, FLOAT_REL_TOLERANCE))
    with progress.step("compare: builds with fusion off and on, each run and timed"):
        reports, errors = compare(args.model, repeat=args.repeat, input_shapes=_parse_shapes(args.shape),
                                  target=args.target, threads=args.threads, with_onnxruntime=with_onnxruntime,
                                  profile=args.profile or args.html is not None,
                                  float_tolerance=(abs_tolerance, rel_tolerance))
    print(format_compare(reports, errors))
    if precision:
        print(f"{backend.name}: float32 MatMul, Gemm and Conv in {backend.precision_note}; the builds "
              f"must agree within {abs_tolerance:g} abs or {rel_tolerance:g} rel")
    if args.profile:
        for report in reports:
            if report.kernels:
                print(f"\n{report.label}: time per kernel (timers inside the native code; median over the runs, "
                      "GFLOP/s from the median)")
                print(f"  {'kernel':34s} {'median ms':>12s}  {'GFLOP/s':>16s}  ONNX nodes")
                for kernel in sorted(report.kernels, key=lambda k: -(k.ms_per_run or 0)):
                    ms = kernel.ms_per_run or 0.0
                    gflops = kernel.flops / (ms * 1e6) if ms else 0.0
                    print(f"  {kernel.name:34s} {ms:9.4f} ms  {gflops:8.2f} GFLOP/s  {', '.join(kernel.nodes)}")
    if args.html:
        from dlc.tools.html_report import write_html_report

        write_html_report(args.html, args.model, reports, errors)
        print(f"wrote {args.html}")
    # Fusion only reorders float32 arithmetic, and an int8 output may round a step or two apart
    # (fusion_report.OutputError): disagreement beyond that output's tolerance is a bug.
    bad = [f"{label} vs unfused: {o.describe()}" for label, e in errors.items() for o in e.outputs
           if o.beyond_tolerance]
    if bad:
        print("error: outputs disagree beyond tolerance: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


def cmd_verify(args) -> int:
    """Exit 0 when every tensor and final output matches onnxruntime, 1 on a divergence."""
    import json

    from dlc.tools.verify import verify

    _load_plugins(args.load_pass_plugin)
    if args.json:
        _check_output("--json", Path(args.json), directory=False)
    for name in ("rtol", "atol"):
        if getattr(args, name) is not None and not getattr(args, name) >= 0:
            raise DlcError(f"--{name} {getattr(args, name)}: a tolerance cannot be negative", "give 0 or more")
    from dlc import progress

    feeds = _parse_inputs(args.input)
    if any(isinstance(value, _Literal) for value in feeds.values()):
        import onnx

        from dlc.specializations import declared_inputs

        try:
            _typed_literals(feeds, declared_inputs(onnx.load(args.model, load_external_data=False), {}))
        except Exception:  # noqa: BLE001 - not a readable model: verify says why
            _typed_literals(feeds, [])
    with progress.step("verify: every tensor against onnxruntime"):
        report = verify(args.model, feeds=feeds, target=args.target, fusion=args.fusion,
                        rtol=args.rtol, atol=args.atol, seed=args.seed, input_shapes=_parse_shapes(args.shape),
                        threads=args.threads, pipeline=args.pipeline)
    print(report.format(only_divergent=args.only_divergent))
    if args.json:
        with _writing(Path(args.json)):
            Path(args.json).write_text(json.dumps(report.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if report.ok else 1


def cmd_bench(args) -> int:
    from dlc.tools.bench import bench, format_bench

    result = bench(args.model, threads=args.threads, repeat=args.repeat,
                   versus_onnxruntime=args.vs == "onnxruntime", input_shapes=_parse_shapes(args.shape),
                   fusion=args.fusion, tiles=_tiles(args), winograd=args.winograd)
    print(format_bench(result))
    return 0


def cmd_passes(args) -> int:
    import dataclasses

    from passes import all_passes, pass_summary

    if args.pipeline:  # the default pipeline as text that `-p` accepts
        from dlc.driver import pipeline_text
        from dlc.targets import CompileOptions, get_target

        print(pipeline_text(get_target(args.target), CompileOptions()))
        return 0
    for name, cls in all_passes().items():
        print(f"{name:34s} {XDSL_SUMMARIES.get(name) or pass_summary(cls)}")
        if dataclasses.is_dataclass(cls):
            for field in dataclasses.fields(cls):
                default = field.default if field.default is not dataclasses.MISSING else "required"
                print(f"{'':36s}{field.name.replace('_', '-')}={default}  ({field.type})")
    return 0


# xDSL's own passes whose class has no docstring of its own: `pass_summary` would show the
# docstring of xDSL's ModulePass base ("A Pass is a named rewrite pass ...").
XDSL_SUMMARIES = {
    "cse": "Common subexpression elimination: merge identical side-effect-free ops (xDSL's cse).",
    "dce": "Dead code elimination: erase side-effect-free ops whose results are unused (xDSL's dce).",
    "lower-affine": "Lower affine.for/if/apply/load/store to scf, arith and memref ops (xDSL's lower-affine).",
}


def cmd_cache(args) -> int:
    from dlc import cache
    from dlc.runtime.memory_limit import format_bytes

    if args.action == "clear":
        count, size = cache.clear()
        print(f"removed {count} entries ({format_bytes(size)}) from {cache.cache_location()}")
        return 0
    info = cache.info()
    cap = format_bytes(info["max_bytes"]) if info["max_bytes"] else "none"
    print(f"directory  {info['directory']}{'' if info['enabled'] else '  (off: DLC_CACHE=0)'}\n"
          f"entries    {info['entries']}, {format_bytes(info['bytes'])}\n"
          f"objects    {info['objects']}, {format_bytes(info['object_bytes'])} (compiled parts, kept by their IR)\n"
          f"cap        {cap} (${cache.MAX_VARIABLE}; least recently used entries go first)")
    return 0


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion script written from the parser itself (argparse has none of its own):
    commands, then each command's options, then file names. zsh loads it after `bashcompinit`."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    top = [o for a in parser._actions for o in a.option_strings]
    cases = "\n".join(f"    {name}) opts=\"{' '.join(o for a in sub._actions for o in a.option_strings)}\";;"
                      for name, sub in commands.items())
    return f"""_dlc() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} opts
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "{' '.join(commands)} {' '.join(top)}" -- "$cur")); return
  fi
  case "${{COMP_WORDS[1]}}" in
{cases}
  esac
  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
}}
complete -o filenames -F _dlc dlc
"""


def cmd_completion(args) -> int:
    print(bash_completion(build_parser()), end="")
    return 0


def cmd_ops(args) -> int:
    from dlc.tools.ops import supported_operators

    rows = supported_operators()
    print(f"{'operator':28s} {'opsets':10s} cpu lowering")
    for row in rows:
        print(f"{row.name:28s} {row.opsets:10s} {row.how}")
    print(f"\n{len(rows)} operators on cpu; the `reference` target runs every ONNX operator.")
    return 0


def _seed(text: str) -> int:
    """--seed: numpy's generators take non-negative integers only."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


class UsageError(DlcError):
    """A command line argparse refuses (unknown option, bad choice, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors reported as dlc reports errors: one line, exit 1."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}", f"`{self.prog} --help` lists the arguments")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from dlc.version import __version__

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return f"dlc {__version__} (xDSL {of('xdsl')}, llvmlite {of('llvmlite')}, onnx {of('onnx')})"


class _VersionAction(argparse.Action):
    """--version, its text made only when asked for: reading three packages' metadata took
    10-40 ms of every command (a compile the cache answers takes 0.2 s)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the versions of dlc, xDSL, llvmlite and onnx and exit", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dlc", description="dlc: an MLIR-style deep-learning compiler "
                     "(ONNX in, native CPU code out)")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--include-dir", action="store_true",
                        help="print the directory of dlc.h, the C API's header (docs/c-api.md), and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors (anywhere on the line)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (anywhere on the line; progress shows for steps of 1 s or more)")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_options(p):
        p.add_argument("--target", default="cpu",
                       help="target to compile for (cpu, reference, npu-sim, cuda; cuda:fp32: exact FP32 "
                            "contractions rather than TF32 tensor cores)")
        p.add_argument("--shape", action="append", metavar="NAME=AxBxC[,...]",
                       help="pin symbolic dimensions: an input's shape (x=1x3x224x224; its static dims must "
                            "match) or a dimension name (batch=1); comma-separated, repeatable, later wins")
        p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
        p.add_argument("--cpu", default="native",
                       help="CPU to compile for: native (default), x86-64-v2, x86-64-v3, x86-64-v4 or an LLVM "
                            "CPU name (haswell, znver3, skylake-avx512, ...); docs/artifact.md")
        p.add_argument("--cpu-features", default="", metavar="+F,-G",
                       help="LLVM features to add to or remove from --cpu's (+avx512vnni,-fma)")
        p.add_argument("--embed-weights", action="store_true",
                       help="put the weights inside model.so too: one file for the C API (docs/c-api.md)")
        winograd_options(p)
        p.add_argument("-p", "--pipeline", default=None, help="pass pipeline text replacing the default one")
        p.add_argument("--print-ir-after-all", action="store_true")
        p.add_argument("--print-ir-after", action="append", metavar="PASS")
        p.add_argument("--time-passes", action="store_true")
        p.add_argument("--verify-each", action="store_true",
                       help="verify the IR after every pass, not once per phase (names the pass that broke it)")
        p.add_argument("--fusion", default="all", choices=("none", "elementwise", "all"),
                       help="kernel fusion: none, elementwise chains only, or all rules (default)")
        p.add_argument("--disable-pass", action="append", metavar="PASS", help="skip a pass of the pipeline")
        p.add_argument("--initializers-as-inputs", action="store_true",
                       help="initializers the model also lists as inputs become inputs fed on every run "
                            "(default: compiled in as constants; feeding one is refused)")
        p.add_argument("--placement", metavar="OUT.json", help="write where each node runs (partial targets)")
        p.add_argument("--max-memory", metavar="SIZE", default=None,
                       help="refuse models needing more memory, e.g. 8GiB (default: $DLC_MAX_MEMORY, "
                            "else half the machine's RAM)")
        p.add_argument("--placement-from", metavar="IN.json",
                       help="force node placement from an (edited) --placement file")
        tile_options(p)

    def winograd_options(p) -> None:
        """`--winograd f2|f4|none` and `--no-winograd` (CompileOptions.winograd)."""
        p.add_argument("--winograd", default="f2", choices=("f2", "f4", "none"),
                       help="stride-1 3x3 convs over maps of 14x14 or more (10x10 from deep channels, odd "
                            "ones from 27x27) as Winograd F(2x2,3x3) (f2, the default: 16/36 of the multiply-adds) or "
                            "F(4x4,3x3) where it covers the map (f4: "
                            "1/4 of them, 2-3x the direct conv's rounding error), or direct convs (none)")
        p.add_argument("--no-winograd", dest="winograd", action="store_const", const="none",
                       help="stride-1 3x3 convs as direct convs")

    def tile_options(p):
        p.add_argument("--tile", action="append", metavar="[KERNEL:]mr=8,nr=32,kc=256",
                       help="GEMM tiles for every GEMM, a kernel (names as --profile prints them) "
                            "or a shape MxNxK; repeatable, later wins")
        p.add_argument("--tiles", metavar="FILE.json", help='GEMM tiles from JSON: {"KERNEL": {"mr": 8, ...}}')

    p = sub.add_parser("compile", help="compile a model to an artifact directory or stop at a phase")
    p.add_argument("model", help="an .onnx file, or MLIR text that `--compile-to`/`dlc opt` wrote (its phase "
                   "is read from the ops it holds, or given with --compile-from)")
    p.add_argument("-o", "--output", help="artifact directory (exe) or output file (other phases)")
    p.add_argument("--compile-to", default="exe", choices=PHASE_CHOICES)
    p.add_argument("--compile-from", default=None, choices=PHASE_CHOICES[:5],
                   help="the input is MLIR text of this phase (weights from NAME.weights.npz); "
                        "default: read from the ops")
    p.add_argument("--load-pass-plugin", action="append", metavar="FILE.py")
    p.add_argument("--profile", action="store_true",
                   help="time each kernel inside the native code (the artifact keeps it: dlc run DIR --profile)")
    model_options(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a model (.onnx or artifact directory) and print its outputs")
    p.add_argument("model")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input from a .npy file, or a value (M=5, shape=[1,3]) in the input's type; "
                        "others: seeded random")
    p.add_argument("--repeat", type=int, default=10, help="timed runs for the median latency")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random inputs")
    p.add_argument("--save-outputs", metavar="DIR",
                   help="write each output to DIR/NAME.npy (DIR is created if missing)")
    p.add_argument("--profile", action="store_true",
                   help="time each kernel inside the native code; print GFLOP/s, GB/s and roofline")
    p.add_argument("--check-bounds", action="store_true",
                   help="first run with every buffer between guard pages: an out-of-bounds access "
                        "is named on stderr and kills the run (SIGSEGV)")
    model_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("opt", help="run passes on MLIR text and print the result (like mlir-opt)")
    p.add_argument("input", help="an .mlir file; weights are read from NAME.weights.npz beside it")
    p.add_argument("-p", "--pipeline", default="", help='e.g. "form-kernels,kernels-to-linalg"')
    p.add_argument("-o", "--output")
    p.add_argument("--load-pass-plugin", action="append", metavar="FILE.py")
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("--print-ir-after", action="append", metavar="PASS")
    p.add_argument("--time-passes", action="store_true")
    p.add_argument("--verify-each", action="store_true", help="verify the IR after every pass, not once at the end")
    p.set_defaults(func=cmd_opt)

    p = sub.add_parser("explain", help="print the fusion decisions (node -> kernel, and why not) and how "
                                       "kernels run (a 3x3 conv as Winograd, or why not)")
    p.add_argument("model")
    p.add_argument("--fusion", default="all", choices=("none", "elementwise", "all"))
    p.add_argument("--shape", action="append", metavar="NAME=AxBxC[,...]")
    p.add_argument("--target", default="cpu")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("compare", help="compile with and without fusion (and run onnxruntime); compare")
    p.add_argument("model")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--shape", action="append", metavar="NAME=AxBxC[,...]")
    p.add_argument("--target", default="cpu")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--threads", type=int, default=1, help="threads for dlc and onnxruntime (default 1)")
    p.add_argument("--profile", action="store_true", help="also print the time of each kernel of both builds")
    p.add_argument("--quantized", metavar="INT8.onnx", help="compare MODEL (fp32) with its quantized version "
                   "instead: max and mean error, top-1 agreement and time, dlc and onnxruntime (with "
                   "--target npu-sim: the simulated cycles, MAC cycles and DMA bytes of both)")
    p.add_argument("--samples", type=int, default=8, help="random inputs for --quantized (default 8)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("verify", help="compare every intermediate tensor with onnxruntime; name the first "
                       "node that diverges (exit 1)")
    p.add_argument("model")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input from a .npy file, or a value (M=5) in the input's type; others: seeded random")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random inputs")
    p.add_argument("--shape", action="append", metavar="NAME=AxBxC[,...]")
    p.add_argument("--target", default="cpu")
    p.add_argument("--fusion", default="all", choices=("none", "elementwise", "all"))
    p.add_argument("--threads", type=int, default=None, help="dlc's worker threads (default: all cores)")
    p.add_argument("--rtol", type=float, default=None,
                   help="with --atol: |dlc - onnxruntime| <= atol + rtol*|onnxruntime| for every tensor, "
                        "replacing the per-operator tolerances")
    p.add_argument("--atol", type=float, default=None)
    p.add_argument("-p", "--pipeline", default=None, help="pass pipeline text replacing the default one")
    p.add_argument("--load-pass-plugin", action="append", metavar="FILE.py")
    p.add_argument("--only-divergent", action="store_true", help="list only the tensors that diverge")
    p.add_argument("--json", metavar="OUT.json", help="also write the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="median latency, GFLOP/s and %% of peak, against onnxruntime")
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=None, help="threads for both (default: all cores)")
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--vs", choices=("onnxruntime", "none"), default="onnxruntime")
    p.add_argument("--fusion", default="all", choices=("none", "elementwise", "all"))
    winograd_options(p)
    p.add_argument("--shape", action="append", metavar="NAME=AxBxC[,...]")
    tile_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("passes", help="list the registered passes and their options")
    p.add_argument("--pipeline", action="store_true",
                   help="print the default pipeline as text that `compile -p` and `opt -p` accept")
    p.add_argument("--target", default="cpu", help="the target whose pipeline --pipeline prints")
    p.set_defaults(func=cmd_passes)
    p = sub.add_parser("ops", help="list the supported ONNX operators")
    p.set_defaults(func=cmd_ops)
    p = sub.add_parser("cache", help="the compile cache: where it is, its size and cap; or empty it")
    p.add_argument("action", choices=("info", "clear"), nargs="?", default="info")
    p.set_defaults(func=cmd_cache)
    p = sub.add_parser("completion", help="print a bash completion script: eval \"$(dlc completion bash)\"")
    p.add_argument("shell", choices=("bash",), nargs="?", default="bash")
    p.set_defaults(func=cmd_completion)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; its exit status. Run as a program (`argv` None: the console script,
    `python -m dlc`), the process then ends at once (`_exit`)."""
    code = _main(list(sys.argv[1:] if argv is None else argv))
    if argv is None:
        _exit(code)
    return code


def _exit(code: int) -> None:
    """End the process now: atexit handlers run and the standard streams are flushed, but the
    interpreter does not tear down. A compile leaves its IR, llvmlite's module and the weights
    alive, and freeing them one object at a time (a full collection, then every module's
    objects) took ResNet-50's `dlc compile` 0.3 CPU-s for the collection alone and ~0.8 s of
    wall time at a load of 6 (issue 16), for memory the OS takes back whole."""
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`dlc ... | head`) or stream
            pass
    os._exit(code if isinstance(code, int) else 1)


def _main(argv: list[str]) -> int:
    # --debug is accepted anywhere on the line (`dlc run m.onnx --debug`), as the hint says.
    debug, quiet = "--debug" in argv, "--quiet" in argv
    argv = [a for a in argv if a not in ("--debug", "--quiet")]
    if argv[:1] == ["--version"]:  # answered here, not by argparse's SystemExit: main() returns its code
        print(_version())
        return 0
    if argv[:1] == ["--include-dir"]:  # cc -I"$(dlc --include-dir)": no compiler code is imported
        print(Path(__file__).resolve().parent / "include")
        return 0
    from dlc import progress

    try:
        args = build_parser().parse_args(argv)
        args.debug, args.quiet = debug, quiet
        with progress.reporting(progress.for_stream(sys.stderr, quiet)) as reporter:
            reporter.begin(f"{args.command} {getattr(args, 'model', '')}".strip())  # until a step says more
            return args.func(args)
    except DlcError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dlc ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except SystemExit:  # --help and --version
        raise
    except BaseException as error:  # not only Exception: xDSL's ArgSpecParseError is a BaseException
        if debug:
            raise
        reason = _pipeline_syntax_error(error)
        if reason is not None:
            print(f"error: {reason}", file=sys.stderr)
            return 1
        print(f"internal error: {type(error).__name__}: {error}\n"
              "  this is a bug in dlc; rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
