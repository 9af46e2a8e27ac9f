"""Golden IR tests (tests/filecheck, run by lit + filecheck) and pass-registry conventions."""

from __future__ import annotations

import inspect
import shutil
import subprocess
from pathlib import Path

import pytest

from passes import _XDSL_PASSES, all_passes

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "filecheck"


def _dlc_passes():
    return {name: cls for name, cls in all_passes().items() if name not in _XDSL_PASSES}


def _golden_files():
    # lit writes temporaries under Output/ directories: not tests.
    return sorted(p for p in GOLDEN.rglob("*.mlir") if "Output" not in p.relative_to(GOLDEN).parts)


@pytest.mark.parametrize("path", _golden_files(), ids=lambda p: str(p.relative_to(GOLDEN)))
def test_golden_file(path):
    if shutil.which("filecheck") is None or shutil.which("lit") is None:
        pytest.fail("lit and filecheck are test dependencies: pip install -e '.[test]'")
    result = subprocess.run([shutil.which("lit"), "-q", str(path)], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(_dlc_passes()))
def test_pass_name_is_its_file_stem(name):
    cls = _dlc_passes()[name]
    stem = Path(inspect.getfile(cls)).stem
    assert stem.replace("_", "-") == name


@pytest.mark.parametrize("name", sorted(_dlc_passes()))
def test_every_pass_has_a_golden_test(name):
    stem = name.replace("-", "_")
    assert any(p.stem == stem for p in _golden_files()), f"no tests/filecheck/**/{stem}.mlir for pass {name}"


@pytest.mark.parametrize("name", sorted(all_passes()))
def test_every_pass_has_a_summary(name):
    assert (inspect.getdoc(all_passes()[name]) or "").strip()
