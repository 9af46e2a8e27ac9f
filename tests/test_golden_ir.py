"""Golden IR tests (tests/filecheck, run by lit + filecheck) and the pass-registry conventions.

The layout mirrors MLIR upstream, where tests mirror the source: the golden tests of
`passes/<group>/<stem>.py` are `tests/filecheck/<group>/<stem>.mlir` (and
`<stem>_<case>.mlir`); xDSL's passes that dlc exposes are tested on dlc's IR in
`tests/filecheck/xdsl/`. Every file keeps one style: a `// RUN:` line, `CHECK-LABEL`s,
captures instead of literal SSA names, and a case that must not change.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from passes import all_passes

ROOT = Path(__file__).resolve().parent.parent
PASSES = ROOT / "passes"
GOLDEN = ROOT / "tests" / "filecheck"
XDSL_GOLDEN = GOLDEN / "xdsl"


def _dlc_passes():
    """dlc's own passes (not xDSL's, not plugins'), by name."""
    return {name: cls for name, cls in all_passes().items() if cls.__module__.startswith("passes.")}


def _mirrored_place(cls) -> Path:
    """`passes/graph/fold_constants.py` -> `tests/filecheck/graph/fold_constants`."""
    return GOLDEN / Path(inspect.getfile(cls)).resolve().relative_to(PASSES).with_suffix("")


def _golden_files():
    # lit writes temporaries under Output/ directories: not tests.
    return sorted(p for p in GOLDEN.rglob("*.mlir") if "Output" not in p.relative_to(GOLDEN).parts)


def _tests_of(place: Path) -> list[Path]:
    return [p for p in _golden_files() if p.parent == place.parent
            and (p.stem == place.name or p.stem.startswith(place.name + "_"))]


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
def test_every_pass_has_a_golden_test_in_its_mirrored_place(name):
    place = _mirrored_place(_dlc_passes()[name])
    assert _tests_of(place), (f"pass {name} has no golden test: write "
                              f"{place.relative_to(ROOT)}.mlir (see docs/writing-passes.md)")


def test_every_golden_test_mirrors_a_pass():
    owned = {p for cls in _dlc_passes().values() for p in _tests_of(_mirrored_place(cls))}
    xdsl_names = set(all_passes()) - set(_dlc_passes())
    owned |= {p for p in _golden_files()
              if p.parent == XDSL_GOLDEN and p.stem.replace("_", "-") in xdsl_names}
    strays = [str(p.relative_to(GOLDEN)) for p in _golden_files() if p not in owned]
    assert not strays, (f"golden tests in no pass's mirrored place: {strays}; "
                        "tests/filecheck/<group>/<stem>*.mlir tests passes/<group>/<stem>.py")


# A directive line (`// CHECK:`, `// ELEM-NEXT:`), and an SSA name that is neither a
# capture (`%[[X:.*]]`, `%[[X]]`) nor a pattern (`%{{.*}}`).
_DIRECTIVE = re.compile(r"//\s*[A-Z][A-Z0-9]*(-(NEXT|SAME|NOT|LABEL|DAG|COUNT-\d+))?:")
_LITERAL_SSA = re.compile(r"%(?!\[\[|\{\{)[\w.]")


@pytest.mark.parametrize("path", _golden_files(), ids=lambda p: str(p.relative_to(GOLDEN)))
def test_golden_file_keeps_the_house_style(path):
    text = path.read_text()
    checks = [line for line in text.splitlines() if _DIRECTIVE.search(line) and "RUN:" not in line]
    assert text.startswith("// RUN:"), "a golden test opens with its // RUN: line"
    assert any("-LABEL:" in line for line in checks), "one CHECK-LABEL per function"
    literal = [line.strip() for line in checks if _LITERAL_SSA.search(line)]
    assert not literal, f"capture SSA names (%[[X:.*]]) instead of literal ones: {literal}"
    assert "@preserve_" in text or any("-NOT:" in line for line in checks), (
        "add a case that must not change: a @preserve_* function or a CHECK-NOT")


@pytest.mark.parametrize("name", sorted(all_passes()))
def test_every_pass_has_a_summary(name):
    assert (inspect.getdoc(all_passes()[name]) or "").strip()
