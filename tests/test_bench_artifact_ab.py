"""benchmarks/artifact_ab.py: two artifacts of one model, one with other tiles, run in one arena
buffer; their outputs compare bit-identical (tiles only reorder work, not a k sum here) and the
ratio printed is that of the two medians."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CNN = ROOT / "examples" / "models" / "cnn.onnx"


def test_artifact_ab_compares_two_builds_of_one_model(tmp_path):
    builds = []
    for name, tiles in (("before", []), ("after", ["--tile", "mr=2"])):
        subprocess.run([sys.executable, "-m", "dlc", "compile", str(CNN), "--threads", "1", "-o", str(tmp_path / name),
                        *tiles], check=True, capture_output=True, cwd=ROOT)
        builds.append(str(tmp_path / name))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "artifact_ab.py"), *builds, "--repeat", "4",
                          "--warmup", "1", "--clock", "thread"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "outputs bit-identical" in out.stdout, out.stdout
    before, after, ratio = re.search(r"before ([\d.]+) ms, after ([\d.]+) ms .* median ([\d.]+)", out.stdout).groups()
    before, after, ratio = float(before), float(after), float(ratio)
    assert before > 0 and after > 0
    # The ratio of the two medians, up to the printed rounding (3 decimals of ms each: on this
    # 0.05 ms model that alone moves after/before by 1-2%).
    rounding = after / before * (0.0005 / after + 0.0005 / before) + 0.0005
    assert abs(ratio - after / before) <= rounding
