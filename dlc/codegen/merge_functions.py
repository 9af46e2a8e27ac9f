"""Merge internal LLVM functions whose text is identical, before LLVM sees them.

What LLVM's MergeFunctions pass does, on the IR text and before parsing, so that LLVM
optimises and emits each body once: a ResNet-50 has 49 fused-conv kernels of 13 distinct
bodies and 48 parallel-loop bodies of 9, and its GEMM drivers repeat by shape (112 of 295
functions go, 19% of the IR). Two functions merge when their text is equal but for their
own names; references to the dropped one are renamed, and the comparison repeats until
nothing merges (callers become equal once their callees have merged). Only `internal`
functions are dropped: exported symbols (`dlc_main`) stay. Equal text gives equal code,
so the numerics cannot change.
"""

from __future__ import annotations

import re

__all__ = ["merge_identical_functions"]

_DEFINE = re.compile(r'define internal [^@\n]*@("[^"]+"|[\w.$-]+)\(')
_REFERENCE = re.compile(r'@("[^"]+"|[\w.$-]+)')


def merge_identical_functions(llvm_ir: str) -> str:
    """`llvm_ir` without duplicate internal functions (callers call the first of each kind)."""
    head, *chunks = re.split(r"\n(?=define )", llvm_ir)
    bodies, tails, names = [], [], []
    for chunk in chunks:
        end = chunk.find("\n}\n")
        end = len(chunk) if end < 0 else end + 3
        bodies.append(chunk[:end])
        tails.append(chunk[end:])
        match = _DEFINE.match(chunk)
        names.append(match.group(1) if match else None)  # None: not internal, never dropped
    alias: dict[str, str] = {}
    while True:
        first: dict[str, str] = {}
        merged = {}
        for index, body in enumerate(bodies):
            name = names[index]
            if name is None or name in alias:
                continue
            key = _REFERENCE.sub(lambda m, own=name: "@SELF" if m.group(1) == own else m.group(0), body)
            if key in first:
                merged[name] = first[key]
            else:
                first[key] = name
        if not merged:
            break
        alias.update(merged)
        for target in alias:  # a chain a -> b -> c ends at c
            while alias[target] in alias:
                alias[target] = alias[alias[target]]
        rename = lambda m: "@" + alias.get(m.group(1), m.group(1))  # noqa: E731
        bodies = [_REFERENCE.sub(rename, body) for body in bodies]
    if not alias:
        return llvm_ir
    rename = lambda m: "@" + alias.get(m.group(1), m.group(1))  # noqa: E731
    kept = [_REFERENCE.sub(rename, head)]
    for body, tail, name in zip(bodies, tails, names):
        kept.append(_REFERENCE.sub(rename, tail if name in alias else body + tail))
    return "\n".join(part for part in kept if part)
