"""`dlc` run as a program ends without tearing the interpreter down (dlc/cli.py `_exit`): its
output still arrives whole through a pipe, its exit status is the command's, and atexit
handlers still run. Called as a function (`main(argv)`, as the tests do), it returns."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def _dlc(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}\nfrom dlc.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_piped_output_arrives_whole_and_the_status_is_the_command_s():
    as_function = "import sys\nfrom dlc.cli import main\nsys.exit(main(sys.argv[1:]))"
    returned = subprocess.run([sys.executable, "-c", as_function, "ops"], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)
    expected = returned.stdout  # main(argv) returns, and the interpreter ends as usual
    result = _dlc("ops")
    assert result.returncode == 0 and result.stdout == expected and len(expected) > 5_000
    failed = _dlc("compile", "/no/such/model.onnx")
    assert failed.returncode == 1 and "error:" in failed.stderr


def test_atexit_handlers_still_run():
    handler = "import atexit, sys\natexit.register(lambda: print('atexit ran', file=sys.stderr))"
    result = _dlc("--version", prelude=handler)
    assert result.returncode == 0 and result.stdout.startswith("dlc ") and "atexit ran" in result.stderr
