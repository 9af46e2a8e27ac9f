"""The corpus of minimised failures (tests/fuzz_corpus/): each a model and a json sidecar
saying how it failed and how to reproduce it; triaged by hand with "fixed" or "xfail"."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from dlc.tools.fuzz.checks import ALL_CONFIGS, Finding, check_model


def default_corpus(root: Path | None = None) -> Path:
    """tests/fuzz_corpus of the dlc checkout this code runs from (`root`, default the folder
    above dlc/); an installed dlc (whose parent folder is site-packages, where other
    distributions install a `tests` package) uses the user's cache folder instead."""
    root = Path(__file__).resolve().parents[3] if root is None else root
    if (root / "pyproject.toml").is_file() and (root / "tests" / "fuzz_corpus").is_dir():
        return root / "tests" / "fuzz_corpus"
    from dlc.cache import cache_location

    return cache_location() / "fuzz_corpus"


DEFAULT_CORPUS = default_corpus()


def save_to_corpus(corpus: Path, model: onnx.ModelProto, finding: Finding, info: dict) -> Path:
    import hashlib

    corpus.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    stem = f"{finding.kind}-{finding.config.replace('/', '-')}-{hashlib.sha256(data).hexdigest()[:10]}"
    path = corpus / f"{stem}.onnx"
    path.write_bytes(data)
    try:
        shown = path.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = path
    sidecar = {"kind": finding.kind, "config": finding.config, "error_type": finding.error_type,
               "message": finding.message, "nodes": [n.op_type for n in model.graph.node],
               "reproduce": f"python -m dlc.tools.fuzz --replay {shown}", **info}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    return path


def corpus_entries(corpus: Path = DEFAULT_CORPUS) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.with_suffix(".json").read_text()) if p.with_suffix(".json").exists() else {})
            for p in sorted(Path(corpus).glob("*.onnx"))]


def replay(path: Path, info: dict, configs=ALL_CONFIGS) -> list[Finding]:
    """Check a corpus model again (with the feed seed it failed on)."""
    if info.get("hostile"):  # the hostile oracle, on the inputs stored in the model
        from dlc.tools.fuzz.hostile import check_hostile

        return check_hostile(onnx.load(path), info.get("feed_seed", 0), configs, threads=info.get("threads", 1))
    return check_model(onnx.load(path), info.get("feed_seed", 0), configs, threads=info.get("threads", 1))
