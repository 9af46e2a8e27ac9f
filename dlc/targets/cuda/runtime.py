"""Runs a cuda partition: PTX and a launch plan, through the CUDA driver API of `cuda-bindings`.

Mirrors what a CUDA runtime does for a compiled graph (like a CUDA Graph's nodes, kept as a
list): one module loaded from PTX (the driver JIT-compiles it for the GPU present), one device
buffer per value, the weights uploaded once, one stream. A run copies the partition's inputs in,
enqueues every launch, copies its outputs out and synchronises once: values between kernels of
the partition never leave the GPU. cuda-bindings (`pip install 'dlc[cuda]'`) is imported when
the first run needs the GPU, so compiling, saving and `import dlc` need neither it nor a GPU.
Imports no compiler code: a saved partition (`save`, `load_cuda`) runs without recompiling.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from dlc.errors import DlcError

PLAN_FILE, PTX_FILE, WEIGHTS_FILE = "cuda_plan.json", "kernels.ptx", "cuda_weights.npz"

# A profiled run holds its stream with this kernel while the host enqueues the launches and the
# events between them: each enqueue costs the host 10-30 us through cuda-bindings, and a kernel
# whose launch arrives after the GPU went idle would be timed with that gap (the rounding kernel
# of a 4096^2 graph input, a 0.03 ms stream, read 0.07-0.1 ms). It spins on the GPU's
# nanosecond timer for its one parameter's nanoseconds (PTX ISA, "%globaltimer"); written as PTX
# so that running needs no compiler.
HOLD_KERNEL = "dlc_hold_stream"
HOLD_PTX = f"""
.version 7.0
.target sm_70
.address_size 64
.visible .entry {HOLD_KERNEL}(.param .u64 nanoseconds)
{{
  .reg .pred %p;
  .reg .b64 %start, %now, %spent, %wanted;
  ld.param.u64 %wanted, [nanoseconds];
  mov.u64 %start, %globaltimer;
SPIN:
  mov.u64 %now, %globaltimer;
  sub.s64 %spent, %now, %start;
  setp.lt.u64 %p, %spent, %wanted;
  @%p bra SPIN;
  ret;
}}
"""
# The first hold per launch it covers; doubled whenever the host was still enqueueing when it ended.
HOLD_NS_PER_LAUNCH = 40_000
HOLD_NS_MOST = 100_000_000


def driver():
    """cuda-bindings' driver module (`cuda.bindings.driver`; `cuda.cuda` before 12.6)."""
    try:
        from cuda.bindings import driver as cuda_driver
    except ImportError:
        try:
            from cuda import cuda as cuda_driver
        except ImportError:
            raise DlcError("the cuda target runs kernels through NVIDIA's cuda-bindings, which is not installed",
                           "pip install 'dlc[cuda]' (and run on a machine with an NVIDIA GPU and driver)") from None
    return cuda_driver


def check(result, call: str):
    """The values of a driver call's (CUresult, values...) tuple; a failed call is a DlcError."""
    cu = driver()
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cu.CUresult.CUDA_SUCCESS:
        name = cu.cuGetErrorName(error)[1]
        text = cu.cuGetErrorString(error)[1]
        name = name.decode() if isinstance(name, bytes) else str(error)
        text = text.decode() if isinstance(text, bytes) else ""
        raise DlcError(f"CUDA {call} failed: {name} ({text})",
                       "is an NVIDIA GPU present and its driver loaded (nvidia-smi)?")
    return values[0] if len(values) == 1 else tuple(values)


@functools.cache
def device() -> tuple:
    """(context, stream) on GPU 0: its primary context (shared with CuPy and PyTorch), one stream."""
    cu = driver()
    check(cu.cuInit(0), "cuInit")
    if check(cu.cuDeviceGetCount(), "cuDeviceGetCount") < 1:
        raise DlcError("the cuda target found no NVIDIA GPU (cuDeviceGetCount is 0)")
    handle = check(cu.cuDeviceGet(0), "cuDeviceGet")
    context = check(cu.cuDevicePrimaryCtxRetain(handle), "cuDevicePrimaryCtxRetain")
    check(cu.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    stream = check(cu.cuStreamCreate(0), "cuStreamCreate")
    return context, stream


def gpu_available() -> bool:
    """Whether cuda-bindings is installed and finds a GPU (for tests and tools)."""
    try:
        device()
    except (DlcError, OSError, RuntimeError):
        return False
    return True


class CudaExecutable:
    """A cuda partition ready to run: `inputs`, `outputs` (TensorSpecs), `run`, `save`.

    The GPU is touched on the first `run` (module load, buffers, weight upload), then reused."""

    copies_inputs = True  # a run copies its inputs to the device and never writes the host arrays

    def __init__(self, ptx: str, plan: dict, weights: dict[str, np.ndarray]):
        from dlc.runtime import TensorSpec

        self.ptx, self.plan, self.weights = ptx, plan, weights
        self.inputs = [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in plan["inputs"]]
        self.outputs = [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in plan["outputs"]]
        self.constant_inputs = tuple(plan.get("constant_inputs", ()))
        self._state = None
        self.last_kernel_ms: list[tuple[str, float]] | None = None
        self.profiling = False  # every run times its kernels (CudaProfile turns it on)
        self._hold_module = self._hold_function = None  # the profiled runs' hold kernel, loaded on first use
        self._hold_ns = 0
        self.last_hold_ms = 0.0

    # --- the device side ---------------------------------------------------------------------

    def _load(self):
        cu = driver()
        context, stream = device()
        check(cu.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        image = np.frombuffer(self.ptx.encode() + b"\0", np.uint8)  # the driver JIT-compiles it for this GPU
        module = check(cu.cuModuleLoadData(image.ctypes.data), "cuModuleLoadData (PTX JIT)")
        functions = {}
        for launch in self.plan["launches"]:
            if launch["kernel"] not in functions:
                functions[launch["kernel"]] = check(cu.cuModuleGetFunction(module, launch["kernel"].encode()),
                                                    f"cuModuleGetFunction({launch['kernel']})")
            if launch.get("shared_bytes", 0) > 48 << 10:  # dynamic shared memory past 48 KiB is opt-in
                attribute = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
                check(cu.cuFuncSetAttribute(functions[launch["kernel"]], attribute, launch["shared_bytes"]),
                      f"cuFuncSetAttribute({launch['kernel']}, {launch['shared_bytes']} bytes of shared memory)")
        pointers = []
        used = {i for launch in self.plan["launches"] for i in launch["args"]}
        used |= {spec["buffer"] for spec in self.plan["inputs"] + self.plan["outputs"]}
        for i, entry in enumerate(self.plan["buffers"]):
            if i not in used:  # a weight replaced by its copy (tap-major, TF32-rounded): no memory
                pointers.append(None)
                continue
            nbytes = max(4, _dtype(entry).itemsize * int(np.prod(entry["shape"], dtype=np.int64)))
            pointers.append(check(cu.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes} bytes)"))
        for i, entry in enumerate(self.plan["buffers"]):  # weights: uploaded once
            if entry["kind"] == "weight" and entry["name"] in self.weights and pointers[i] is not None:
                array = np.ascontiguousarray(self.weights[entry["name"]], _dtype(entry))
                check(cu.cuMemcpyHtoD(pointers[i], array.ctypes.data, array.nbytes), "cuMemcpyHtoD (weights)")
        # Kernel parameters as the driver takes them: an array of pointers to each argument's value.
        launches = []
        for launch in self.plan["launches"]:
            values = np.array([int(pointers[i]) for i in launch["args"]], dtype=np.uint64)
            addresses = np.array([values.ctypes.data + 8 * j for j in range(len(values))], dtype=np.uint64)
            launches.append((functions[launch["kernel"]], launch, values, addresses))
        self._state = (module, pointers, launches, stream)
        return self._state

    def run(self, feeds: dict[str, np.ndarray], profile: bool = False) -> dict[str, np.ndarray]:
        from dlc.runtime import check_inputs

        arrays = check_inputs(self.inputs, feeds, self.constant_inputs)
        profile = profile or self.profiling
        cu = driver()
        _, pointers, launches, stream = self._state or self._load()
        check(cu.cuCtxSetCurrent(device()[0]), "cuCtxSetCurrent")
        staged = [np.ascontiguousarray(a, spec.get("dtype", "float32")) for a, spec in zip(arrays, self.plan["inputs"])]
        checks = [i for i, entry in enumerate(self.plan["buffers"]) if entry["kind"] == "check"]
        for i in checks:  # error words start clear on every run
            check(cu.cuMemsetD32Async(pointers[i], 0, 1, stream), "cuMemsetD32Async (checks)")
        for spec, array in zip(self.plan["inputs"], staged):
            check(cu.cuMemcpyHtoDAsync(pointers[spec["buffer"]], array.ctypes.data, array.nbytes, stream),
                  "cuMemcpyHtoDAsync (inputs)")
        events = []
        held = self._hold(stream, len(launches)) if profile else None
        for function, launch, _, addresses in launches:
            if profile:
                events.append((launch["kernel"], self._event(stream)))
            (gx, gy, gz), (bx, by, bz) = launch["grid"], launch["block"]
            check(cu.cuLaunchKernel(function, gx, gy, gz, bx, by, bz, launch.get("shared_bytes", 0), stream,
                                    addresses.ctypes.data, 0),
                  f"cuLaunchKernel({launch['kernel']})")
        if profile:
            events.append(("end", self._event(stream)))
            self._release(held)
        results = {}
        for spec in self.plan["outputs"]:
            out = np.empty(spec["shape"], spec.get("dtype", "float32"))
            check(cu.cuMemcpyDtoHAsync(out.ctypes.data, pointers[spec["buffer"]], out.nbytes, stream),
                  "cuMemcpyDtoHAsync (outputs)")
            results[spec["name"]] = out
        words = [np.zeros(1, np.int32) for _ in checks]
        for i, word in zip(checks, words):
            check(cu.cuMemcpyDtoHAsync(word.ctypes.data, pointers[i], 4, stream), "cuMemcpyDtoHAsync (checks)")
        check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize")
        if profile:  # per-kernel GPU time from CUDA events around each launch
            elapsed = getattr(cu, "cuEventElapsedTime_v2", None) or cu.cuEventElapsedTime
            self.last_kernel_ms = [(name, check(elapsed(start, stop), "cuEventElapsedTime"))
                                   for (name, start), (_, stop) in zip(events, events[1:])]
            for _, event in events:
                cu.cuEventDestroy(event)
        failed = [self.plan["buffers"][i]["message"] for i, word in zip(checks, words) if word[0]]
        if failed:  # a kernel met bad data (an index out of range): its result is not returned
            raise DlcError(f"cuda run failed: {failed[0]}", "check the values fed to the model")
        return results

    def _hold(self, stream, launches: int):
        """Enqueue the hold kernel (`HOLD_PTX`) for the time the host needs to enqueue `launches`
        timed launches, and an event at its end (for `_release`)."""
        cu = driver()
        if self._hold_function is None:
            image = np.frombuffer(HOLD_PTX.encode() + b"\0", np.uint8)
            self._hold_module = check(cu.cuModuleLoadData(image.ctypes.data), "cuModuleLoadData (hold kernel)")
            self._hold_function = check(cu.cuModuleGetFunction(self._hold_module, HOLD_KERNEL.encode()),
                                        "cuModuleGetFunction (hold kernel)")
            self._hold_ns = HOLD_NS_PER_LAUNCH * (launches + 1)
        self.last_hold_ms = self._hold_ns * 1e-6
        value = np.array([self._hold_ns], np.uint64)
        address = np.array([value.ctypes.data], np.uint64)
        check(cu.cuLaunchKernel(self._hold_function, 1, 1, 1, 1, 1, 1, 0, stream, address.ctypes.data, 0),
              "cuLaunchKernel(hold)")
        return self._event(stream)

    def _release(self, held) -> None:
        """After the last launch is enqueued: if the hold had already ended, the GPU waited for
        the host somewhere, so the next profiled run holds twice as long."""
        cu = driver()
        (status,) = cu.cuEventQuery(held)
        if status == cu.CUresult.CUDA_SUCCESS:
            self._hold_ns = min(2 * self._hold_ns, HOLD_NS_MOST)
        cu.cuEventDestroy(held)

    @staticmethod
    def _event(stream):
        cu = driver()
        event = check(cu.cuEventCreate(0), "cuEventCreate")
        check(cu.cuEventRecord(event, stream), "cuEventRecord")
        return event

    def __del__(self):
        if self._state is None:
            return
        try:
            cu = driver()
            module, pointers, _, _ = self._state
            for pointer in pointers:
                if pointer is not None:
                    cu.cuMemFree(pointer)
            cu.cuModuleUnload(module)
            if self._hold_module is not None:
                cu.cuModuleUnload(self._hold_module)
        except Exception:  # interpreter shutdown: the driver may be gone already
            pass

    # --- the artifact side -------------------------------------------------------------------

    def save(self, directory) -> None:
        """PTX, plan and weights: `load_cuda` runs them without the compiler."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / PTX_FILE).write_text(self.ptx)
        (out / PLAN_FILE).write_text(json.dumps(self.plan, indent=1) + "\n")
        np.savez(out / WEIGHTS_FILE, **self.weights)


class CudaProfile:
    """Per-kernel GPU times of a model's cuda partitions, from CUDA events around each launch,
    behind the interface `dlc run --profile` and `dlc compare --profile` read from a cpu build
    (`profile_sites`, `reset_profile`, `profile` in seconds; dlc/tools/profiling.py)."""

    def __init__(self, model, partitions: list[CudaExecutable]):
        self.model, self.partitions = model, partitions
        for partition in partitions:
            partition.profiling = True
        self.profile_sites = [launch["kernel"] for p in partitions for launch in p.plan["launches"]]
        self.nodes = {launch["kernel"]: launch["nodes"] for p in partitions for launch in p.plan["launches"]}
        self.manifest: dict = {}
        self.inputs, self.outputs = getattr(model, "inputs", []), getattr(model, "outputs", [])

    @classmethod
    def of(cls, executable) -> CudaProfile | None:
        """The profile of `executable` (a split model or one cuda partition), None without cuda."""
        if isinstance(executable, CudaExecutable):
            return cls(executable, [executable])
        partitions = [s.executable for s in getattr(executable, "steps", ())
                      if isinstance(s.executable, CudaExecutable)]
        return cls(executable, partitions) if partitions else None

    def run(self, feeds):
        return self.model.run(feeds)

    def reset_profile(self) -> None:
        for partition in self.partitions:
            partition.last_kernel_ms = None

    def profile(self) -> list[tuple[str, float]]:
        return [(name, ms * 1e-3) for p in self.partitions for name, ms in (p.last_kernel_ms or [])]

    def format(self, runs) -> str:
        """The per-kernel table of `profile_runs`' result (dlc/tools/profiling.py's ProfileRuns)."""
        rows = sorted(((name, float(np.median(t)), float(np.mean(t))) for name, t in runs.kernels.items()),
                      key=lambda row: -row[1])
        total = sum(row[1] for row in rows) or 1e-12
        lines = [f"per kernel over {len(runs.latencies)} run(s), GPU time from CUDA events around each launch "
                 "(median and mean)",
                 f"{'kernel':34s} {'share':>6s} {'median ms':>10s} {'mean ms':>9s}  ONNX nodes"]
        for name, median, mean in rows:
            lines.append(f"{name[:34]:34s} {100 * median / total:5.1f}% {median * 1e3:10.4f} {mean * 1e3:9.4f}  "
                         f"{', '.join(self.nodes.get(name, []))}")
        sums = runs.kernel_sums
        lines.append(f"{'all kernels (per-run sum)':34s} {100.0:5.1f}% {np.median(sums) * 1e3:10.4f} "
                     f"{np.mean(sums) * 1e3:9.4f}")
        lines.append(f"{'whole run (copies in/out, launches)':34s} {'':6s} {np.median(runs.latencies) * 1e3:10.4f} "
                     f"{np.mean(runs.latencies) * 1e3:9.4f}")
        held = sum(getattr(p, "last_hold_ms", 0.0) for p in self.partitions)
        if held:
            lines.append(f"(a profiled run holds the stream {held:.3f} ms while the host enqueues, so that no kernel "
                         "is timed with a launch gap: the whole run's latency is `dlc run` without --profile)")
        return "\n".join(lines)


def _dtype(entry: dict) -> np.dtype:
    """A buffer's element type (plans written before buffers had one hold float32)."""
    return np.dtype(entry.get("dtype", "float32"))


def load_cuda(directory) -> CudaExecutable:
    """A cuda partition saved by `CudaExecutable.save`."""
    path = Path(directory)
    try:
        plan = json.loads((path / PLAN_FILE).read_text())
        ptx = (path / PTX_FILE).read_text()
        with np.load(path / WEIGHTS_FILE) as data:
            weights = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise DlcError(f"{path}: not a saved cuda partition ({error})") from None
    missing = {b["name"] for b in plan["buffers"] if b["kind"] == "weight"} - set(weights)
    used = {i for launch in plan["launches"] for i in launch["args"]}
    if any(b["kind"] == "weight" and b["name"] in missing and i in used for i, b in enumerate(plan["buffers"])):
        raise DlcError(f"{path}: {WEIGHTS_FILE} lacks weights the kernels read: {sorted(missing)[:5]}")
    return CudaExecutable(ptx, plan, weights)
