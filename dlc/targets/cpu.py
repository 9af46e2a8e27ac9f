"""The `cpu` target: the host CPU through xDSL loops and llvmlite, one native call per run.

Pipeline after `kernels`: outline kernels to linalg on memrefs, plan one arena,
lower linalg to scf loops (xDSL's convert-linalg-to-loops), then emit LLVM IR
directly (DESIGN.md: 5x faster than xDSL's llvm dialect) and compile it for the
host CPU and its features.
"""

from __future__ import annotations

import numpy as np

from dlc.targets import CompileOptions, MemoryLevel, Target, TargetDescription, constant_inputs_of


def host_vector_bits(features: str) -> int:
    """The vector width, in bits, of a CPU with LLVM target features `features`: the one rule
    for it. The target writes it on the module (`dlc.vector_bits`), where the passes and the
    code generator read it; tools that probe the host call this."""
    if "+avx512f" in features:
        return 512
    if "+avx2" in features or "+avx" in features:
        return 256
    return 128


class CpuTarget(Target):
    name = "cpu"
    start_phase = "kernels"
    saves_artifact = True
    # `--cpu` and `--cpu-features` (dlc/codegen/cpus.py): vector width, micro-kernels and
    # code follow the CPU named, not the one compiling.
    cpu, cpu_features = "native", ""

    def configure(self, options: CompileOptions) -> None:
        self.cpu, self.cpu_features = options.cpu, options.cpu_features

    def description(self) -> TargetDescription:
        import os

        from dlc.codegen.cpus import resolve_cpu
        from dlc.runtime.host import host_caches

        cpu, features = resolve_cpu(self.cpu, self.cpu_features)
        l1_bytes, l2_bytes = host_caches()
        return TargetDescription(
            memory=(MemoryLevel("L1", l1_bytes, 0), MemoryLevel("L2", l2_bytes, 0)),
            vector_bits=host_vector_bits(features),
            dtypes=("float32", "float64", "int64", "int32", "bool"),
            cores=os.cpu_count() or 1,
            # The widest integer dot product (vpdpbusd) the CPU has: the int8 GEMM's (issue 20).
            extra={"cpu": cpu, "vnni_bits": 512 if "+avx512vnni" in features and "+avx512f" in features
                   else 256 if "+avxvnni" in features or "+avx512vnni" in features else 0},
        )

    def pipeline(self, options: CompileOptions):
        from passes import all_passes

        p = all_passes()
        kernels = [p["form-kernels"]()]
        if options.fusion != "none":
            kernels.append(p["fuse-kernels"](mode=options.fusion))
        return [
            ("kernels", kernels),
            ("linalg", [p["kernels-to-linalg"](),
                        *([p["apply-user-tiles"](tiles=options.tiles)] if options.tiles else []),
                        p["overwrite-dead-residuals"](),  # a residual that dies takes the output
                        p["pack-weights"](),   # packs constant B panels for the chosen nr
                        p["tile-contractions"](),
                        p["dce"](), p["plan-memory"]()]),
            ("loops", [p["fuse-parallel-siblings"](),  # one parallel loop over a shared axis
                       p["collapse-parallel-dims"](),  # one flat loop where operands allow
                       p["mark-parallel-loops"](), p["convert-linalg-to-loops"](),
                       p["sink-views-into-parallel-loops"](),  # a loop captures buffers, not views
                       p["approximate-math"]()]),  # polynomial exp/tanh/erf: vectorisable
        ]

    def translate(self, module, phase: str) -> str | None:
        if phase != "llvm":
            return None
        from dlc.codegen.llvm_emitter import emit_llvm

        return emit_llvm(module, weight_layout(module)[0])

    def build(self, module, options: CompileOptions):
        from dlc.codegen.cpus import cpuinfo_flags_needed, resolve_cpu, target_triple
        from dlc.codegen.native import compile_object, compile_objects
        from dlc.codegen.thread_pool_ir import pool_object
        from dlc.runtime import MANIFEST_VERSION, cpuinfo_flags
        from dlc.runtime.artifact import start_weights
        from dlc.runtime.contract import contract_llvm, contract_values, trusted_llvm, trusted_weights
        from dlc.runtime.executable import executable_for
        from dlc.version import __version__

        offsets, blob = weight_layout(module)
        start_weights(blob)  # `dlc compile` writes weights.bin while the code compiles (issue 16)
        from dlc import progress
        from dlc.codegen.llvm_emitter import emit_llvm, profile_sites

        main = _main(module)
        inputs, outputs = [t.to_json() for t in _specs(main, "inputs")], [t.to_json() for t in _specs(main, "outputs")]
        arena_size = main.attributes["dlc.arena_size"].value.data
        from passes.pipeline import fewer_collections

        with progress.step("LLVM IR emitted"), fewer_collections():
            llvm_ir = emit_llvm(module, offsets, profile=options.profile)
        cpu, features = resolve_cpu(options.cpu, options.cpu_features)
        triple = target_triple(options.cpu)  # None: this host's instruction set
        objects = compile_objects(llvm_ir, cpu, features, options.opt_level, triple=triple)
        # The sizes the code is built for, in the code (dlc/runtime/contract.py): its own object.
        # And the integer weights it trusts (indices checked at compile time), in the same object.
        from dialects.weights import weights_of

        objects.append(compile_object(contract_llvm(contract_values({
            "inputs": inputs, "outputs": outputs, "arena_size": arena_size, "weights_size": int(blob.size)}))
            + trusted_llvm(trusted_weights(weights_of(module), offsets, blob)), cpu, features, 0, triple))
        native = options.cpu == "native" and not options.cpu_features
        manifest = {
            "format": "dlc-artifact",
            "manifest_version": MANIFEST_VERSION,
            "dlc_version": __version__,
            "target": "cpu",
            "cpu": cpu,
            "cpu_features": features,
            # The loader's check without LLVM: a machine with all these flags runs the code
            # (native: the compiling machine's; a named CPU: exactly those its features need).
            "cpu_flags": sorted(cpuinfo_flags() or ()) if native else cpuinfo_flags_needed(features),
            "cpu_target": "native" if native else f"{options.cpu}{',' if options.cpu_features else ''}"
                                                  f"{options.cpu_features}",
            "entry": "dlc_main",
            "inputs": inputs,
            "outputs": outputs,
            "arena_size": arena_size,
            "weights_size": int(blob.size),
            "weights": {name: offset for name, offset in offsets.items()},
            "threads": options.threads,
            "profile_sites": profile_sites(module) if options.profile else [],
            "kernels": kernel_costs(module),
            # Run-time checks: the status word's arena offset and the message of each error
            # code it can hold (passes/lowering/utils/runtime_checks.py).
            **_error_sites(module, main),
            **({"constant_inputs": constant} if (constant := constant_inputs_of(module)) else {}),
        }
        code = _link(objects, pool_object(cpu, features, triple), manifest, features, triple,
                     blob if options.embed_weights else None)
        # Saving adds each file's size and SHA-256, and the manifest's own hash
        # (dlc/runtime/artifact.py write_artifact); loading checks them all.
        manifest.update(code["manifest"])
        # Built for another CPU (--cpu), it is saved, not loaded here.
        return executable_for(manifest, code["files"], blob, code["pool"])


def _link(objects: list[bytes], pool: bytes, manifest: dict, features: str, triple: str | None = None,
          embedded: np.ndarray | None = None) -> dict:
    """The code of the artifact: one `model.so` linked by the system linker with the C API
    (dlc/codegen/link.py, dlc/codegen/c_api.py), else, with a one-line note, the objects and
    the pool's object."""
    import logging

    from dlc import progress
    from dlc.codegen import c_api
    from dlc.codegen.cpus import cpuinfo_flags_needed
    from dlc.codegen.link import LINKER_VARIABLE, link_library
    from dlc.codegen.native import compile_object
    from dlc.runtime import ENTRY_SYMBOL, object_file_names
    from dlc.runtime.contract import CONTRACT_SYMBOL, TRUSTED_SYMBOL

    with progress.step("model.so linked"):
        table = compile_object(c_api.table_llvm(manifest, cpuinfo_flags_needed(features), embed=embedded is not None),
                               manifest["cpu"], features, 0, triple)
        linked = link_library(objects, pool, exports=(ENTRY_SYMBOL, CONTRACT_SYMBOL, TRUSTED_SYMBOL, *c_api.FUNCTIONS),
                              c_sources=c_api.c_sources(embed=embedded is not None),
                              c_objects={"model_table.o": table},
                              include_dirs=(c_api.INCLUDE_DIR, c_api.SOURCE_DIR), triple=triple,
                              data_files={"weights.bin": embedded.tobytes()} if embedded is not None else None)
    if linked is None:
        logging.getLogger("dlc").warning(
            "dlc: no linker (cc or ld) on PATH or %s=none: the artifact keeps object files, "
            "loaded by dlc itself (no model.so, no C API)", LINKER_VARIABLE)
        return {"manifest": {"objects": object_file_names(len(objects)), "pool": "pool.o"},
                "files": objects, "pool": pool}
    library, with_c_api = linked
    embedded_field = {"embedded_weights": True} if embedded is not None and with_c_api else {}
    return {"manifest": {"library": "model.so", "c_api": with_c_api, **embedded_field},
            "files": [library], "pool": None}


def _main(module):
    from xdsl.dialects import func

    return next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "main")


def _error_sites(module, main) -> dict:
    from passes.lowering.utils.runtime_checks import error_sites

    offset = main.attributes.get("dlc.status_offset")
    if offset is None:
        return {}
    return {"status_offset": offset.value.data, "error_sites": error_sites(module)}


def _specs(main, which: str):
    from dialects.types import numpy_dtype
    from dlc.runtime import TensorSpec

    names = [a.data for a in main.attributes[f"dlc.{'input' if which == 'inputs' else 'output'}_names"].data]
    num_inputs = int(main.attributes["dlc.num_inputs"].data)
    args = main.body.block.args
    types = args[:num_inputs] if which == "inputs" else args[num_inputs:num_inputs + len(names)]
    return [TensorSpec(n, tuple(t.type.get_shape()), str(numpy_dtype(t.type.element_type)))
            for n, t in zip(names, types)]


def weight_layout(module) -> tuple[dict[str, int], np.ndarray]:
    """Offsets (64-byte aligned) of the weights the code reads, and the packed blob."""
    from xdsl.dialects import memref

    from dialects.weights import weights_of

    store = weights_of(module)
    used = []
    for op in module.walk():
        if isinstance(op, memref.GetGlobalOp):
            name = op.name_.root_reference.data
            if name not in used:
                used.append(name)
    missing = [name for name in used if name not in store]
    if missing:
        from dlc.errors import CompileError

        raise CompileError(f"weights {missing[:5]} are referenced by the IR but missing from the weights "
                           "store", "an .mlir file's weights are read from NAME.weights.npz beside it")
    offsets, size = {}, 0
    for name in used:
        offsets[name] = size
        size += (store[name].nbytes + 63) // 64 * 64
    from dlc.runtime.artifact import huge_page_buffer

    blob = huge_page_buffer(max(size, 64))  # zeroed; on huge pages when large
    for name, offset in offsets.items():
        data = np.ascontiguousarray(store[name]).view(np.uint8).reshape(-1)
        blob[offset:offset + data.size] = data
    return offsets, blob


def kernel_costs(module) -> list[dict]:
    """Per kernel function: name, ONNX nodes, FLOPs and bytes moved (for profiles and rooflines)."""
    from xdsl.dialects import func

    costs = []
    for f in module.ops:
        if isinstance(f, func.FuncOp) and "dlc.flops" in f.attributes:
            nodes = f.attributes.get("dlc.nodes")
            costs.append({"name": f.sym_name.data,
                          "nodes": [n.data for n in nodes.data] if nodes is not None else [],
                          "flops": f.attributes["dlc.flops"].value.data,
                          "bytes": f.attributes["dlc.bytes"].value.data})
            if "dlc.algorithm" in f.attributes:  # a Winograd conv: FLOPs it executes, what it ran as
                costs[-1]["executed_flops"] = f.attributes["dlc.executed_flops"].value.data
                costs[-1]["algorithm"] = f.attributes["dlc.algorithm"].data
    return costs
