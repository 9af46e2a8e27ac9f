"""The front door (issue 17): progress on stderr, `--version` and `python -m dlc`, no traceback
whatever the command line, MLIR written to stdout that compiles again, `--shape` on a static
dimension, `dlc passes` summaries, and tools that say clearly that onnxruntime is missing.
In-process through `dlc.cli.main` except where a real process is the point.
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from dlc import progress
from dlc.cli import main, mlir_phase

MLP = str(ROOT / "examples" / "models" / "mlp.onnx")
CNN = str(ROOT / "examples" / "models" / "cnn.onnx")
PLUGIN = str(ROOT / "examples" / "passes" / "remove_double_relu.py")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- progress --------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _progress_on(monkeypatch):
    monkeypatch.delenv(progress.QUIET_VARIABLE, raising=False)  # conftest turns it off for other tests


def test_progress_reports_import_phases_and_passes_as_they_finish():
    from dlc.driver import compile_model

    stream = io.StringIO()
    with progress.reporting(progress.Lines(stream, min_seconds=0)):
        compile_model(MLP, compile_to="loops")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("dlc: import (")
    for expected in ("dlc: pass fold-constants (", "dlc: graph phase (", "dlc: pass pack-weights (",
                     "dlc: linalg phase (", "dlc: loops phase ("):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    # Each pass finishes before its phase does.
    assert lines.index(next(x for x in lines if x.startswith("dlc: pass fold-constants"))) < \
        lines.index(next(x for x in lines if x.startswith("dlc: graph phase")))


def test_progress_is_silent_by_default_and_short_steps_leave_no_line(capsys):
    from dlc.driver import compile_model

    compile_model(MLP, compile_to="linalg")  # the Python API: no reporter installed
    assert capsys.readouterr().err == ""
    stream = io.StringIO()
    reporter = progress.Lines(stream, min_seconds=1.0)
    reporter.end("quick", 0.2)
    reporter.end("slow", 1.5)
    assert stream.getvalue() == "dlc: slow (1.5 s)\n"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_reporter_suits_the_stream(monkeypatch):
    assert type(progress.for_stream(io.StringIO(), quiet=True)) is progress.Progress
    monkeypatch.setenv(progress.QUIET_VARIABLE, "1")
    assert type(progress.for_stream(io.StringIO())) is progress.Progress
    monkeypatch.delenv(progress.QUIET_VARIABLE)
    assert type(progress.for_stream(io.StringIO())) is progress.Lines
    live = progress.for_stream(Terminal())
    try:
        assert isinstance(live, progress.Live)
    finally:
        live.close()


def test_live_line_leaves_a_redirected_stdout_alone(capsys):
    # rich's live display proxies stdout into its console (stderr) unless told not to:
    # `dlc opt m.mlir > o.mlir` on a terminal wrote an empty o.mlir.
    terminal = Terminal()
    with progress.reporting(progress.Live(terminal)):
        print("the IR")
    assert capsys.readouterr().out == "the IR\n" and "the IR" not in terminal.getvalue()


def test_cli_progress_lines_and_quiet(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)  # every step prints, however fast
    monkeypatch.setenv("DLC_CACHE", "0")
    code, _, err = run_cli(capsys, "compile", MLP, "-o", str(tmp_path / "out"))
    assert code == 0
    for expected in ("dlc: import (", "dlc: graph phase (", "dlc: LLVM IR emitted (", "dlc: LLVM: object code (",
                     "dlc: codegen ("):
        assert expected in err, (expected, err)
    code, _, err = run_cli(capsys, "--quiet", "compile", MLP, "-o", str(tmp_path / "out2"))
    assert code == 0 and "dlc:" not in err


# --- version, python -m dlc ------------------------------------------------------------------------

def test_version(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dlc 0.") and "xDSL" in out and "llvmlite" in out


def test_python_dash_m_dlc_is_the_cli():
    result = subprocess.run([sys.executable, "-m", "dlc", "--version"], capture_output=True, text=True,
                            cwd=str(ROOT), timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("dlc ")
    result = subprocess.run([sys.executable, "-m", "dlc", "run"], capture_output=True, text=True,
                            cwd=str(ROOT), timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("error: dlc run: ")
    assert "Traceback" not in result.stderr


# --- no traceback, whatever the command line -----------------------------------------------------

@pytest.fixture(scope="module")
def small_mlir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("mlir") / "m.mlir"
    assert main(["--quiet", "compile", MLP, "--compile-to", "onnx", "-o", str(path)]) == 0
    return str(path)


PIPELINES = ["dce,,", ",", "remove-double-relu,...", "tile{", "dce{", "dce}", "dce{x=1}", "{}", '"', "no-such-pass",
             "dce{=1}", "canonicalize{max-iterations=abc}", "dce,,dce", "fold-constants{", "a b"]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_malformed_pipelines(capsys, small_mlir, pipeline):
    for argv in (["opt", small_mlir, "-p", pipeline], ["compile", small_mlir, "-p", pipeline, "--compile-to", "graph"],
                 ["opt", small_mlir, "--load-pass-plugin", PLUGIN, "-p", pipeline]):
        _expect_one_line_error(capsys, argv)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_malformed_pipelines_from_python_are_compile_errors(pipeline):
    """dlc.compile raises a CompileError (a DlcError), never xDSL's BaseException-derived
    ArgSpecParseError that `except Exception` would miss."""
    import dlc
    from dlc.errors import DlcError

    with pytest.raises(DlcError):
        dlc.compile(MLP, pipeline=pipeline)


PLUGINS = {  # file name: contents (None: do not create it)
    "missing.py": None,
    "syntax.py": "def broken(:\n",
    "raises.py": "raise RuntimeError('plugin exploded')\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "imports.py": "import no_such_module_anywhere\n",
    "empty.py": "x = 1\n",
    "binary.py": b"\x00\xff\xfe binary",
    "base.py": "raise KeyboardInterrupt.__base__('a BaseException from a plugin')\n",
}


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_malformed_plugins(capsys, tmp_path, small_mlir, name):
    contents = PLUGINS[name]
    path = tmp_path / name
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    elif contents is not None:
        path.write_text(contents)
    err = _expect_one_line_error(capsys, ["opt", small_mlir, "--load-pass-plugin", str(path), "-p", "dce"])
    assert f"--load-pass-plugin {path}" in err
    _expect_one_line_error(capsys, ["compile", MLP, "--load-pass-plugin", str(path), "--compile-to", "graph"])


def test_a_folder_as_plugin(capsys, tmp_path, small_mlir):
    _expect_one_line_error(capsys, ["opt", small_mlir, "--load-pass-plugin", str(tmp_path)])


FLAGS = [
    [], ["nope"], ["compile"], ["compile", MLP, "--bogus"], ["compile", MLP, "--fusion", "most"],
    ["compile", MLP, "--threads", "abc"], ["compile", MLP, "--compile-to", "asm"],
    ["compile", MLP, "--compile-from", "exe"], ["compile", MLP, "--compile-from", "linalg"],
    ["compile", MLP, "--shape", "input"], ["compile", MLP, "--shape", "input=1xx"],
    ["compile", MLP, "--tiles", "/no/such.json"], ["compile", MLP, "--max-memory", "lots"],
    ["compile", MLP, "--print-ir-after"], ["run", MLP, "--repeat", "ten"], ["run", MLP, "--input", "x"],
    ["run", MLP, "--input", "input=/no/such.npy"], ["opt"], ["opt", "/no/such.mlir"], ["opt", MLP],
    ["passes", "--target", "tpu", "--pipeline"], ["explain"], ["bench", MLP, "--vs", "tvm"],
    ["verify", MLP, "--rtol", "x"], ["cache", "burn"], ["compare", MLP, "--threads"],
    ["run", "/no/such/dir/"], ["compile", MLP, "-p", "dce", "--compile-from", "onnx"],
    ["compile", MLP, "--tiles", MLP], ["run", MLP, "--seed", "-1"], ["verify", MLP, "--atol", "-1"],
    ["verify", MLP, "--json", "/dev/null/x.json"], ["compile", MLP, "--print-ir-after", "no-such-pass"],
    ["compile", MLP, "--disable-pass", "fold-constant"], ["compile", MLP, "-o", "/dev/null/x"],
    ["compile", MLP, "--target", "nope"], ["compile", MLP, "--max-memory", "0"],
]


@pytest.mark.parametrize("argv", FLAGS, ids=lambda argv: " ".join(argv) or "nothing")
def test_malformed_flags(capsys, argv):
    _expect_one_line_error(capsys, argv)


def _expect_one_line_error(capsys, argv) -> str:
    """Exit 1, stderr `error: <reason>` on one line and optional `  hint:` lines; no traceback."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 1, f"{argv}: exit {code}; stdout {out!r}; stderr {err!r}"
    assert "Traceback" not in out + err and "internal error" not in err, err
    assert err.startswith("error: "), err
    first, *rest = err.rstrip("\n").split("\n")
    assert len(first) > len("error: ") and all(line.startswith("  hint: ") for line in rest), err
    return err


# --- MLIR text on stdout, and compiling it without --compile-from --------------------------------

def test_mlir_phase_is_read_from_the_ops(tmp_path):
    for phase, expected in (("onnx", "onnx"), ("graph", "onnx"), ("kernels", "kernels"), ("linalg", "linalg"),
                            ("loops", "loops")):
        path = tmp_path / f"{phase}.mlir"
        assert main(["--quiet", "compile", CNN, "--compile-to", phase, "-o", str(path)]) == 0
        assert mlir_phase(path) == expected
    assert mlir_phase(ROOT / "examples" / "models" / "mlp.onnx") is None
    assert mlir_phase(tmp_path / "missing.mlir") is None


def test_opt_to_a_redirected_stdout_writes_the_weights_and_compiles(capsys, tmp_path):
    import dlc

    source = tmp_path / "m.mlir"
    assert main(["--quiet", "compile", CNN, "--compile-to", "linalg", "-o", str(source)]) == 0
    with open(tmp_path / "opt.mlir", "w") as stdout:
        result = subprocess.run([sys.executable, "-m", "dlc", "opt", str(source), "-p", "tile-contractions"],
                                stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=str(ROOT), timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "opt.weights.npz").exists() and "opt.weights.npz" in result.stderr
    capsys.readouterr()
    code, out, err = run_cli(capsys, "compile", str(tmp_path / "opt.mlir"), "-o", str(tmp_path / "out"))
    assert code == 0, err
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(dlc.load(tmp_path / "out").run({"image": x})["probabilities"],
                               dlc.compile(CNN).run({"image": x})["probabilities"], rtol=1e-5, atol=1e-6)


def test_mlir_on_a_terminal_or_pipe_says_where_the_weights_are_not(capsys, small_mlir):
    code, out, err = run_cli(capsys, "opt", small_mlir)
    assert code == 0 and out.startswith("builtin.module")
    assert "weights of this IR were not written" in err and "-o FILE.mlir" in err


# --- --shape, dlc passes ---------------------------------------------------------------------------

def test_shape_cannot_change_a_static_dimension(capsys):
    err = _expect_one_line_error(capsys, ["compile", CNN, "--shape", "image=2x3x32x32", "--compile-to", "onnx"])
    assert "axis 0 of input 'image' is static (1)" in err and "got 2" in err
    code, _, _ = run_cli(capsys, "compile", CNN, "--shape", "image=1x3x32x32", "--compile-to", "onnx")
    assert code == 0  # the sizes it already has are fine


def test_every_pass_has_its_own_summary(capsys):
    code, out, _ = run_cli(capsys, "passes")
    assert code == 0 and "A Pass is a named rewrite pass" not in out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert "Common subexpression elimination" in lines["cse"]
    assert "Dead code elimination" in lines["dce"]
    assert "affine" in lines["lower-affine"].split(None, 1)[1]


# --- without onnxruntime ---------------------------------------------------------------------------

@pytest.fixture
def no_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError


@pytest.mark.parametrize("command", ["bench", "verify"])
def test_tools_that_need_onnxruntime_say_how_to_install_it(capsys, no_onnxruntime, command):
    err = _expect_one_line_error(capsys, [command, MLP])
    assert "onnxruntime" in err and "pip install" in err


def test_compare_without_onnxruntime_says_why_its_row_is_missing(capsys, no_onnxruntime):
    code, out, err = run_cli(capsys, "compare", MLP, "--repeat", "2")
    assert code == 0 and "fused" in out
    assert "onnxruntime is not installed" in err and "pip install" in err


def test_fuzz_without_onnxruntime_stops_with_the_hint(capsys, no_onnxruntime):
    from dlc.tools.fuzz.campaign import main as fuzz_main

    assert fuzz_main(["--cases", "1", "--no-isolate", "--no-save"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "pip install" in err and "failing" not in out


# --- the fuzzer's corpus, help and progress --------------------------------------------------------

def test_fuzz_corpus_is_the_checkouts_only_in_a_checkout(tmp_path, monkeypatch):
    from dlc.tools.fuzz.corpus import default_corpus

    assert default_corpus() == ROOT / "tests" / "fuzz_corpus"
    monkeypatch.delenv("DLC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    site_packages = tmp_path / "site-packages"
    (site_packages / "tests" / "fuzz_corpus").mkdir(parents=True)  # another distribution's `tests`
    assert default_corpus(site_packages) == tmp_path / "cache" / "dlc" / "fuzz_corpus"


def test_fuzz_help_and_progress(capsys):
    from dlc.tools.fuzz.campaign import fuzz
    from dlc.tools.fuzz.campaign import main as fuzz_main

    with pytest.raises(SystemExit):
        fuzz_main(["--help"])
    assert "issue" not in capsys.readouterr().out.lower()
    lines = []
    summary = fuzz(cases=2, configs=(("reference", "all"),), corpus=None, isolate=False, log=lines.append,
                   progress_every_s=0.0)
    assert summary.cases == 2
    reports = [line for line in lines if line.startswith("fuzz: ")]
    assert len(reports) == 2 and reports[0].startswith("fuzz: 0 models in ") and reports[1].startswith("fuzz: 1 ")


def test_bash_completion_completes_commands_and_options(capsys):
    import shutil

    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed: the completion script can only be exercised by bash itself")

    def complete(*words: str) -> list[str]:
        probe = f'COMP_WORDS=({" ".join(words)}); COMP_CWORD={len(words) - 1}; _dlc; echo "${{COMPREPLY[@]}}"'
        done = subprocess.run(["bash", "-c", script + probe], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("dlc", "com") == ["compile", "compare", "completion"]
    assert complete("dlc", "compile", "--compile-") == ["--compile-to", "--compile-from"]
    assert complete("dlc", "cache", "--") == ["--help"]


def test_the_live_line_is_paused_while_timing(capsys):
    terminal = Terminal()
    live = progress.Live(terminal)
    try:
        with live.paused("timing 3 runs"):
            assert not live._bar.live.is_started  # no refresh thread shares the cores being timed
        assert live._bar.live.is_started
    finally:
        live.close()
    assert "dlc: timing 3 runs" in terminal.getvalue()
