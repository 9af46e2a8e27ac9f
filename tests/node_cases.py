"""The official node test cases of `onnx.backend.test`, generated once per onnx version.

onnx generates its node tests' inputs and expected outputs in Python when they are loaded
(`load_node_model_tests` runs every `export_*` function: the 3-D pool cases alone run
onnx's reference pools for seconds), about 10 s of CPU in every process that collects
them: each xdist worker, each `pytest -k` a developer runs. The cases depend only on the
onnx and numpy versions, so the first process pickles them beside the user's cache and
the next ones read them back in a fraction of a second. Delete the file to regenerate.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import warnings
from pathlib import Path


def cache_file() -> Path:
    import numpy
    import onnx

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "dlc-tests" / f"onnx-{onnx.__version__}-numpy-{numpy.__version__}-node-cases.pickle"


def load_node_cases() -> list:
    """onnx's node TestCases: from the pickle if it exists, else generated and pickled."""
    from onnx.backend.test import loader

    path = cache_file()
    with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, AttributeError):
        return pickle.loads(path.read_bytes())
    with warnings.catch_warnings():  # the generators overflow and divide by 0 on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        cases = getattr(loader, "_dlc_generate_node_cases", loader.load_node_model_tests)()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as scratch:
            pickle.dump(cases, scratch, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(scratch.name, path)  # atomic: xdist workers may race to write it
    return cases


def use_cached_node_cases() -> None:
    """Make `onnx.backend.test.loader.load_model_tests(kind="node")` (what BackendTest calls)
    read the cached cases."""
    from onnx.backend.test import loader

    if "_dlc_generate_node_cases" not in loader.__dict__:
        loader._dlc_generate_node_cases = loader.load_node_model_tests
        loader.load_node_model_tests = load_node_cases
