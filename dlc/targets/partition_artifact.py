"""A model split across targets, saved and loaded: one directory per partition plus
`partitions.json` (the ordered partition calls and the values between them).

Each partition is saved by its own executable (`cpu`: the usual artifact; `cuda`: its PTX, plan
and weights) and loaded by its target's `Target.load` hook, so `dlc.load` runs the model without
recompiling. Like dlc/runtime, this imports no compiler code (no xDSL, onnx or passes): the run
loop here is the one PartitionedExecutable (dlc/targets/partition.py) uses too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dlc.errors import DlcError

MANIFEST = "partitions.json"
CONSTANTS = "constants.npz"
FORMAT = "dlc-partitions"


def is_partitioned(directory) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def run_steps(steps, inputs, constant_inputs, constants: dict, returned: list[str], outputs, feeds) -> dict:
    """Run the partition calls in order; each gets its own copies of its inputs (as a device
    memory would), unless its executable copies them itself (`copies_inputs`: the cuda
    partition's host-to-device copies; a second, host copy cost ResNet-50 at batch 32 2.7 ms of
    a 10.6 ms run), and the outputs are gathered by name."""
    from dlc.runtime import check_inputs

    env = dict(constants)
    env.update(zip((s.name for s in inputs), check_inputs(inputs, feeds, constant_inputs)))
    for step in steps:
        own = getattr(step.executable, "copies_inputs", False)
        results = step.executable.run({name: env[name] if own else np.array(env[name], copy=True)
                                       for name in step.inputs})
        env.update((name, results[name]) for name in step.outputs)
    return {spec.name: np.asarray(env[name]).reshape(spec.shape) for spec, name in zip(outputs, returned)}


def save_partitioned(executable, directory) -> None:
    """Write each partition to DIR/partN.TARGET and the calls between them to partitions.json."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    steps = []
    for i, step in enumerate(executable.steps):
        sub = f"part{i}.{step.target}"
        try:
            step.executable.save(out / sub)
        except DlcError as error:
            raise DlcError(f"partition {i} on {step.target} cannot be saved: {error.message}", error.hint) from None
        steps.append({"label": step.label, "target": step.target, "dir": sub, "inputs": step.inputs,
                      "outputs": step.outputs})
    manifest = {"format": FORMAT, "version": 1, "target": executable.placement.target,
                "inputs": [_spec(s) for s in executable.inputs], "outputs": [_spec(s) for s in executable.outputs],
                "constant_inputs": list(executable.constant_inputs), "returned": list(executable._returned),
                "steps": steps}
    np.savez(out / CONSTANTS, **{name.lstrip("@"): value for name, value in executable._constants.items()})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _spec(spec) -> dict:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}


class _Step:
    def __init__(self, label, target, executable, inputs, outputs):
        self.label, self.target, self.executable = label, target, executable
        self.inputs, self.outputs = inputs, outputs


class SavedPartitions:
    """A loaded split model: `inputs`, `outputs`, `run(feeds)`, the partition calls in `steps`."""

    def __init__(self, directory, max_memory=None):
        from dlc.runtime import TensorSpec

        path = Path(directory)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as error:
            raise DlcError(f"{path}: cannot read {MANIFEST} ({error})") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != 1:
            raise DlcError(f"{path}/{MANIFEST}: not a version-1 {FORMAT} manifest")
        self.target = manifest["target"]
        self.inputs = [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in manifest["inputs"]]
        self.outputs = [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in manifest["outputs"]]
        self.constant_inputs = tuple(manifest["constant_inputs"])
        self._returned = manifest["returned"]
        with np.load(path / CONSTANTS) as data:
            self._constants = {f"@{name}": data[name] for name in data.files}
        self.steps = [_Step(s["label"], s["target"], _load_step(path / s["dir"], s["target"], max_memory),
                            s["inputs"], s["outputs"]) for s in manifest["steps"]]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_steps(self.steps, self.inputs, self.constant_inputs, self._constants, self._returned,
                         self.outputs, feeds)

    def save(self, directory) -> None:
        raise DlcError("a loaded split model is saved already; copy its directory")


def _load_step(directory: Path, target: str, max_memory):
    if target == "cpu":
        from dlc.runtime import load_artifact

        return load_artifact(directory, max_memory=max_memory)
    from dlc.targets import get_target

    return get_target(target).load(directory)


def load_partitioned(directory, max_memory=None) -> SavedPartitions:
    return SavedPartitions(directory, max_memory)
