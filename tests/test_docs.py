"""Docs that quote the code are checked against it, so they cannot go stale.

docs/writing-passes.md quotes the default pipeline (`dlc passes --pipeline`); the text
must be what the driver prints, and `dlc compile -p TEXT` must build what the default
compile builds.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from conftest import ROOT

from dlc.cli import main

CNN = str(ROOT / "examples" / "models" / "cnn.onnx")
WRITING_PASSES = ROOT / "docs" / "writing-passes.md"
PLUGIN = str(ROOT / "examples" / "passes" / "remove_double_relu.py")


def _printed_pipeline(capsys) -> str:
    assert main(["passes", "--pipeline"]) == 0
    return capsys.readouterr().out.strip()


def _quoted_pipeline() -> str:
    """The ```text block after the `<!-- dlc passes --pipeline ... -->` marker."""
    found = re.search(r"<!-- dlc passes --pipeline .*?-->\n```text\n(.*?)\n```",
                      WRITING_PASSES.read_text(), re.S)
    assert found, f"{WRITING_PASSES.name} lost its quoted default pipeline"
    return found[1].strip()


def _outputs(artifact) -> dict[str, np.ndarray]:
    import dlc

    model = dlc.load(artifact)
    rng = np.random.default_rng(0)
    feeds = {spec.name: rng.standard_normal(spec.shape).astype(spec.dtype) for spec in model.inputs}
    return model.run(feeds)


def test_writing_passes_quotes_the_current_default_pipeline(capsys):
    assert _quoted_pipeline() == _printed_pipeline(capsys), (
        "docs/writing-passes.md quotes an old default pipeline: paste `dlc passes --pipeline`")


def test_opt_accepts_the_printed_pipeline(capsys, tmp_path):
    graph = tmp_path / "cnn.mlir"
    assert main(["compile", CNN, "--compile-to", "graph", "-o", str(graph)]) == 0
    capsys.readouterr()
    assert main(["opt", str(graph), "-p", _printed_pipeline(capsys)]) == 0
    assert "func.func @main" in capsys.readouterr().out


def test_compile_with_the_printed_pipeline_builds_what_the_default_builds(capsys, tmp_path):
    pipeline = _printed_pipeline(capsys)
    assert main(["compile", CNN, "-o", str(tmp_path / "default")]) == 0
    assert main(["compile", CNN, "-o", str(tmp_path / "text"), "-p", pipeline]) == 0
    # The docs' example: a plugin pass in front of the default pipeline.
    assert main(["compile", CNN, "-o", str(tmp_path / "plugin"), "--load-pass-plugin", PLUGIN,
                 "-p", f"remove-double-relu,{pipeline}"]) == 0
    expected = _outputs(tmp_path / "default")
    for variant in ("text", "plugin"):
        got = _outputs(tmp_path / variant)
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{variant}: {name}")


# ---------------------------------------------------------------------------- every documented command

"""Every `sh` line and `python` block of README.md and docs/*.md is run here (in a folder
where `model.onnx` is the shipped cnn.onnx with its input named `x`, `x.npy` an input and
`examples/` the repository's), or is listed in SKIPPED with the reason. A new command in
the docs that this file does not know fails `test_every_documented_command_is_run_or_skipped`."""

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Placeholders the docs write for the reader to fill in, and what the test fills in.
FILL_INS = [
    ("--load-pass-plugin my_pass.py", "--load-pass-plugin examples/passes/remove_double_relu.py"),
    ('-p "my-pass,..."', '-p "remove-double-relu,$(dlc passes --pipeline)"'),
    ("--shape x=1x3x224x224", "--shape x=1x3x224x224 --model-symbolic"),
    ("--minutes 10", "--cases 2 --no-save --seed 0"),
    ("dlc compare fp32.onnx --quantized int8.onnx", "dlc compare model.onnx --quantized int8.onnx"),
]
# Lines not run, with the reason (matched by their start).
SKIPPED = {
    "pip install": "installing: the test runs in the installed environment",
    "ruff check .": "the CI's lint (tests/ runs under it, not the other way round)",
    "python -m pytest": "the CI itself (this test is part of it)",
}
# Lines that take minutes: run under `-m slow` only.
SLOW = ("python -m dlc.tools.fuzz", "dlc bench", "dlc compare model.onnx --html", "--model-symbolic")
# Python blocks that quote a shipped file (its lines in order, comments and annotations aside;
# the file itself is run by its own tests).
QUOTED_FROM = {"docs/writing-passes.md": ROOT / "examples" / "passes" / "remove_double_relu.py",
               "docs/adding-a-target.md": ROOT / "examples" / "targets" / "add_relu_target.py"}
PYTHON_PRELUDE = {"README.md": "import numpy as np\nx = np.load('x.npy')\n"}


def _blocks(path):
    return re.findall(r"```(sh|python)\n(.*?)```", path.read_text(), re.S)


def _sh_lines(body: str) -> list[str]:
    """Commands of an sh block: continuations joined, trailing comments dropped."""
    lines = []
    for line in body.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line:
            lines.append(re.sub(r"\s+", " ", line))
    return lines


def _expand(line: str) -> list[str]:
    """Fill in placeholders; `a|b|c` choices and `[--x|--y]` options become one command each."""
    for placeholder, value in FILL_INS:
        line = line.replace(placeholder, value)
    optional = re.search(r"\[([^\]]+)\]", line)
    if optional:
        return [variant for choice in ["", *optional[1].split("|")]
                for variant in _expand(line.replace(optional[0], choice).replace("  ", " ").strip())]
    choice = re.search(r"=(\w+(?:\|\w+)+)", line)
    if choice:
        return [variant for value in choice[1].split("|") for variant in _expand(line.replace(choice[1], value, 1))]
    return [line]


def _documented_commands():
    """(block id, commands in order) per sh block: later lines may read earlier lines' outputs."""
    for doc in DOCS:
        for index, (language, body) in enumerate(_blocks(doc)):
            if language != "sh":
                continue
            commands = [command for line in _sh_lines(body) for part in line.split(" && ")
                        if not any(part.startswith(prefix) for prefix in SKIPPED) for command in _expand(part)]
            if commands:
                yield f"{doc.relative_to(ROOT)}:{index}", commands


def _python_blocks():
    for doc in DOCS:
        for index, (language, body) in enumerate(_blocks(doc)):
            if language == "python":
                yield str(doc.relative_to(ROOT)), index, body


@pytest.fixture
def doc_folder(tmp_path, monkeypatch):
    """model.onnx (cnn.onnx, input renamed `x`), model-symbolic.onnx (its dims symbolic),
    m.onnx, x.npy, m.mlir (graph phase) and `examples/` from the repository."""
    import onnx

    model = onnx.load(CNN)
    old = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = ["x" if name == old else name for name in node.input]
    model.graph.input[0].name = "x"
    onnx.save(model, tmp_path / "model.onnx")
    onnx.save(model, tmp_path / "m.onnx")
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim, ("N", None, "H", "W")):
        if name:
            dim.dim_param = name
    onnx.save(model, tmp_path / "model-symbolic.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    assert main(["compile", "model.onnx", "--compile-to", "graph", "-o", "m.mlir"]) == 0
    return tmp_path


def _quantize(fp32: str, int8: str) -> None:
    """int8.onnx for the docs' `--quantized` lines: model.onnx through onnxruntime's static QDQ
    quantizer (what users run), calibrated on a few random inputs."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    shape = [d.dim_value for d in onnx.load(fp32).graph.input[0].type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter([{"x": rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(fp32, int8, Reader(), quant_format=QuantFormat.QDQ)


def _run_command(command: str, capsys) -> tuple[int, str]:
    """A documented line, in-process for `dlc` (fast: imports and compiles are shared),
    in a child for `python -m`; `$(dlc passes --pipeline)` is substituted first."""
    import shlex
    import subprocess
    import sys

    if "$(dlc passes --pipeline)" in command:
        command = command.replace("$(dlc passes --pipeline)", _printed_pipeline(capsys))
    if "--model-symbolic" in command:
        command = command.replace(" --model-symbolic", "").replace("model.onnx", "model-symbolic.onnx")
    if "int8.onnx" in command and not os.path.exists("int8.onnx"):
        _quantize("model.onnx", "int8.onnx")
    words = shlex.split(command)
    if words[0] == "dlc":
        capsys.readouterr()
        code = main(words[1:])
        captured = capsys.readouterr()
        return code, captured.out + captured.err
    assert words[0] == "python", f"a documented command this test cannot run: {command}"
    done = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


BLOCKS = dict(_documented_commands())
SLOW_COMMANDS = [c for commands in BLOCKS.values() for c in commands if any(m in c for m in SLOW)]


def _check_runs(command: str, capsys) -> None:
    code, output = _run_command(command, capsys)
    assert code == 0, f"`{command}` exited {code}:\n{output[-3000:]}"
    assert "Traceback" not in output and "internal error" not in output, output[-3000:]


@pytest.mark.parametrize("block", BLOCKS)
def test_documented_block_runs(block, doc_folder, capsys):
    """Each quick command of a block, in order (the slow ones run below, on their own)."""
    for command in BLOCKS[block]:
        if command not in SLOW_COMMANDS:
            _check_runs(command, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("command", SLOW_COMMANDS)
def test_documented_slow_command_runs(command, doc_folder, capsys):
    _check_runs(command, capsys)


def test_every_documented_command_is_run_or_skipped():
    """Drift guard: each documented sh line is run above or skipped with a reason, and the
    placeholders the test fills in are still in the docs (else the fill-in is dead)."""
    text = "\n".join(doc.read_text() for doc in DOCS)
    for placeholder, _ in FILL_INS:
        assert placeholder in text, f"FILL_INS has '{placeholder}', which no doc says any more"
    run = {c for commands in BLOCKS.values() for c in commands}
    for doc in DOCS:
        for language, body in _blocks(doc):
            for line in _sh_lines(body) if language == "sh" else []:
                for part in line.split(" && "):
                    assert any(part.startswith(p) for p in SKIPPED) or set(_expand(part)) <= run, part
    assert len(run) >= 30


def _code_line(line: str) -> str:
    """A line as an abridged quote may show it: no comment, no type annotations."""
    line = re.sub(r"\s+#.*$", "", line).rstrip()
    line = re.sub(r"\s*->\s*[^:]+:$", ":", line)
    return re.sub(r"(\w): [\w.\[\]| ]+(?=[,)])", r"\1", line)


@pytest.mark.parametrize("doc,index,body", list(_python_blocks()), ids=lambda v: str(v)[:40])
def test_documented_python_runs(doc, index, body, doc_folder):
    """A block that quotes a shipped file must be in it verbatim; any other block runs."""
    if doc in QUOTED_FROM:
        shipped = [_code_line(line) for line in QUOTED_FROM[doc].read_text().splitlines()]
        position = 0
        for line in filter(None, map(_code_line, body.splitlines())):
            assert line in shipped[position:], (f"{doc} block {index} no longer quotes "
                                                f"{QUOTED_FROM[doc].relative_to(ROOT)}: '{line}'")
            position = shipped.index(line, position) + 1
        return
    namespace = {}
    exec(compile(PYTHON_PRELUDE.get(doc, "") + body, f"{doc} block {index}", "exec"), namespace)
