"""The C API compiled into model.so (issue 19; docs/c-api.md): the shipped header
(dlc/include/dlc.h), its implementation (dlc/codegen/c_api/dlc_api.c) and the model's table,
written here as C from the manifest's values (dlc/codegen/c_api/dlc_table.h).

Why C compiled by `cc` and not LLVM IR from llvmlite: the API reads a file, allocates,
formats messages and keeps thread-local state, which is a screen of plain C against several
of IR builder calls, and it reads as the reference implementation of docs/c-api.md. `cc` is
the linker driver wherever dlc links a model.so; a bare `ld` links the model without the API.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PACKAGE = Path(__file__).resolve().parents[1]
INCLUDE_DIR = PACKAGE / "include"
SOURCE_DIR = Path(__file__).resolve().parent / "c_api"
# Exported by model.so besides dlc_main and the pool (the version script lists exactly these).
FUNCTIONS = ("dlc_api_version", "dlc_model_open", "dlc_model_close", "dlc_model_num_inputs",
             "dlc_model_num_outputs", "dlc_model_input", "dlc_model_output", "dlc_model_set_num_threads",
             "dlc_model_num_threads", "dlc_model_run", "dlc_last_error", "dlc_dtype_name")
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool")  # dlc_dtype's values, from 1


def c_string(text: str) -> str:
    """A C string literal of `text`'s UTF-8 bytes: printable ASCII as is, the rest (and `"`,
    `\\`, `?` against trigraphs) as three-digit octal escapes, which no next character extends."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        out.append(char if 0x20 <= byte < 0x7F and char not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensors(name: str, specs: list[dict]) -> list[str]:
    lines = []
    for index, spec in enumerate(specs):
        dims = ", ".join(str(d) for d in spec["shape"]) or "0"
        lines.append(f"static const int64_t {name}_shape{index}[] = {{{dims}}};")
    rows = []
    for index, spec in enumerate(specs):
        size = int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
        rows.append(f"    {{{c_string(spec['name'])}, (dlc_dtype){DTYPES.index(spec['dtype']) + 1}, "
                    f"{len(spec['shape'])}, {name}_shape{index}, {size}u}},")
    lines.append(f"static const dlc_tensor_info {name}[] = {{\n" + ("\n".join(rows) or "    {0}") + "\n};")
    return lines


# --embed-weights: weights.bin's bytes in a read-only, 64-byte aligned section of model.so
# (`%progbits`: the one spelling GNU as takes on x86-64 and AArch64, where `@` is a comment).
EMBEDDED = """__asm__(".section .rodata.dlc_weights,\\"a\\",%progbits\\n.balign 64\\n"
        ".globl dlc_embedded_weights\\n.hidden dlc_embedded_weights\\ndlc_embedded_weights:\\n"
        ".incbin \\"weights.bin\\"\\n.previous\\n");
extern const unsigned char dlc_embedded_weights[];
"""


def table_source(manifest: dict, cpu_flags: list[str], embed: bool = False) -> str:
    """model_table.c: the table dlc_api.c reads, from the manifest's fields; `cpu_flags`: the
    /proc/cpuinfo flags the code needs (dlc_model_open refuses a CPU without them); `embed`:
    weights.bin goes into the library (the link writes it beside this file)."""
    sites = manifest.get("error_sites", [])
    lines = ["/* Written by dlc/codegen/c_api.py for one model. */", '#include "dlc_table.h"', "",
             *([EMBEDDED] if embed else []),
             *_tensors("inputs", manifest["inputs"]), *_tensors("outputs", manifest["outputs"]),
             "static const char *const error_sites[] = {" + ", ".join(map(c_string, sites or [""])) + "};",
             "static const char *const cpu_flags[] = {" + ", ".join(map(c_string, cpu_flags or [""])) + "};",
             "",
             "const struct dlc_table dlc_model_table = {",
             f"    {len(manifest['inputs'])}, {len(manifest['outputs'])}, inputs, outputs,",
             f"    {manifest['arena_size']}u, {manifest['weights_size']}u, {manifest.get('status_offset', -1)},",
             f"    {len(sites)}, error_sites, {manifest.get('threads') or 0}, {c_string(manifest['cpu'])},",
             f"    {len(cpu_flags)}, cpu_flags, {'dlc_embedded_weights' if embed else 'NULL'},",
             "};", ""]
    return "\n".join(lines)


def c_sources(manifest: dict, cpu_flags: list[str], embed: bool = False) -> dict[str, str]:
    """{file name: C text} to compile into model.so."""
    return {"dlc_api.c": (SOURCE_DIR / "dlc_api.c").read_text(),
            "model_table.c": table_source(manifest, cpu_flags, embed)}
