"""benchmarks/winograd.py: the per-conv table of Winograd, direct and onnxruntime times and
whether conv.py's rules take each shape (small shapes, a run or two each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _table(*flags: str) -> list[list[str]]:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "winograd.py"), "--shapes", "64x64x14,64x64x12",
                          "--threads", "1", "--runs", "2", "--rounds", "1", *flags],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.stdout.splitlines()
            if line.startswith("| 64 ->")]


def test_the_table_says_which_shapes_the_rules_take_and_times_all_three():
    rows = _table()
    assert [(row[0], row[2]) for row in rows] == [("64 -> 64 over 14x14", "yes"), ("64 -> 64 over 12x12", "no")]
    for row in rows:
        winograd, direct, onnxruntime, ratio = (float(cell) for cell in row[3:])
        assert min(winograd, direct, onnxruntime) > 0
        assert abs(ratio - winograd / direct) < 0.01


def test_force_still_reports_what_the_rules_decide():
    assert [row[2] for row in _table("--force")] == ["yes", "no"]


def test_a_malformed_shape_is_named():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "winograd.py"), "--shapes", "64x64"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and "shape '64x64' is not CxCOxSIDE" in out.stderr
