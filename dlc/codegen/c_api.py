"""The C API compiled into model.so (issue 19; docs/c-api.md): the shipped header
(dlc/include/dlc.h), its implementation (dlc/codegen/c_api/dlc_api.c) and the model's table
(dlc/codegen/c_api/dlc_table.h), written here as LLVM IR from the manifest's values.

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


# --embed-weights: weights.bin's bytes in a read-only, 64-byte aligned section of model.so
# (`%progbits`: the one spelling GNU as takes on x86-64 and AArch64, where `@` is a comment),
# assembled from embedded_weights.c by the linking `cc`, beside the weights.bin it includes.
EMBEDDED = """__asm__(".section .rodata.dlc_weights,\\"a\\",%progbits\\n.balign 64\\n"
        ".globl dlc_embedded_weights\\n.hidden dlc_embedded_weights\\ndlc_embedded_weights:\\n"
        ".incbin \\"weights.bin\\"\\n.previous\\n");
"""


def _llvm_string(text: str) -> str:
    """An LLVM `c"..."` literal of `text`'s UTF-8 bytes and a NUL: printable ASCII as is, the
    rest (and `"`, `\\`) as two-hex-digit escapes."""
    out = []
    for byte in [*text.encode(), 0]:
        char = chr(byte)
        out.append(char if 0x20 <= byte < 0x7F and char not in '"\\' else f"\\{byte:02X}")
    return 'c"' + "".join(out) + '"'


# struct dlc_table and dlc_tensor_info (dlc_table.h, dlc/include/dlc.h) as LLVM types: the
# enum dtype is an i32, padded to the next 8-byte field as C pads it (LP64: x86-64, AArch64).
TENSOR_INFO = "{ ptr, i32, i64, ptr, i64 }"
TABLE = "{ i64, i64, ptr, ptr, i64, i64, i64, i64, ptr, i64, ptr, i64, ptr, ptr }"


def table_llvm(manifest: dict, cpu_flags: list[str], embed: bool = False) -> str:
    """An LLVM module defining `dlc_model_table`, the table dlc_api.c reads (dlc_table.h),
    from the manifest's fields; `cpu_flags`: the /proc/cpuinfo flags the code needs
    (dlc_model_open refuses a CPU without them); `embed`: the table points at the weights that
    EMBEDDED puts into the library. Data only, so LLVM builds it (~2 ms) where `cc` took 15 ms
    of every compile."""
    lines: list[str] = []
    strings: dict[str, str] = {}

    def string(text: str) -> str:
        if text not in strings:
            strings[text] = f"@str{len(strings)}"
            lines.append(f"{strings[text]} = private unnamed_addr constant "
                         f"[{len(text.encode()) + 1} x i8] {_llvm_string(text)}")
        return strings[text]

    def array(name: str, element: str, items: list[str], empty: str) -> str:
        """`name`, a private constant array; C's tables hold one zero entry where they are empty."""
        items = items or [empty]
        lines.append(f"@{name} = private unnamed_addr constant [{len(items)} x {element}] "
                     f"[{', '.join(f'{element} {item}' for item in items)}], align 8")
        return f"@{name}"

    def tensors(kind: str, specs: list[dict]) -> str:
        rows = []
        for index, spec in enumerate(specs):
            shape = array(f"{kind}_shape{index}", "i64", [str(d) for d in spec["shape"]], "0")
            size = int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
            rows.append(f"{{ ptr {string(spec['name'])}, i32 {DTYPES.index(spec['dtype']) + 1}, "
                        f"i64 {len(spec['shape'])}, ptr {shape}, i64 {size} }}")
        return array(kind, TENSOR_INFO, rows, "zeroinitializer")

    inputs, outputs = tensors("inputs", manifest["inputs"]), tensors("outputs", manifest["outputs"])
    sites = manifest.get("error_sites", [])
    error_sites = array("error_sites", "ptr", [string(site) for site in sites], string(""))
    flags = array("cpu_flags", "ptr", [string(flag) for flag in cpu_flags], string(""))
    if embed:
        lines.append("@dlc_embedded_weights = external hidden constant [0 x i8]")
    fields = [f"i64 {len(manifest['inputs'])}", f"i64 {len(manifest['outputs'])}", f"ptr {inputs}",
              f"ptr {outputs}", f"i64 {manifest['arena_size']}", f"i64 {manifest['weights_size']}",
              f"i64 {manifest.get('status_offset', -1)}", f"i64 {len(sites)}", f"ptr {error_sites}",
              f"i64 {manifest.get('threads') or 0}", f"ptr {string(manifest['cpu'])}", f"i64 {len(cpu_flags)}",
              f"ptr {flags}", f"ptr {'@dlc_embedded_weights' if embed else 'null'}"]
    lines.append(f"@dlc_model_table = hidden constant {TABLE} {{ {', '.join(fields)} }}, align 8")
    return "\n".join(lines) + "\n"


def c_sources(embed: bool = False) -> dict[str, str]:
    """{file name: C text} to compile into model.so: the API, and with `embed` the weights."""
    return {"dlc_api.c": (SOURCE_DIR / "dlc_api.c").read_text(),
            **({"embedded_weights.c": EMBEDDED} if embed else {})}
