"""The CPU a model is compiled for (`--cpu`, `--cpu-features`; issue 19): LLVM's CPU name and
an exact feature set, the vector width that follows, and the Linux flags the code needs.

`native` is this machine (LLVM's host name and features). The x86-64 micro-architecture
levels are those of the x86-64 psABI (x86-64-v2: SSE4.2, POPCNT; v3: AVX2, FMA, BMI;
v4: AVX-512 F/BW/CD/DQ/VL). An LLVM CPU name (`haswell`, `znver3`, `skylake-avx512`) tunes
the schedule; its features are taken from the table below (the level it implements plus
its additions), and every other feature LLVM knows is switched off, so the code uses exactly
the features the manifest records and the loader checks. `--cpu-features +f,-g` edits that set.
"""

from __future__ import annotations

from dlc.errors import CompileError

LEVELS = {
    "x86-64": ("64bit", "cmov", "cx8", "fxsr", "mmx", "sse", "sse2"),
}
LEVELS["x86-64-v2"] = LEVELS["x86-64"] + ("cx16", "sahf", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3")
LEVELS["x86-64-v3"] = LEVELS["x86-64-v2"] + ("avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe",
                                             "xsave")
LEVELS["x86-64-v4"] = LEVELS["x86-64-v3"] + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
# LLVM CPU names: (level, additions). Additions are those the code generator may use for
# arithmetic (vector neural-network and bf16 instructions, AES/SHA are never emitted by dlc).
NAMED = {
    "haswell": ("x86-64-v3", ()),
    "broadwell": ("x86-64-v3", ("adx",)),
    "skylake": ("x86-64-v3", ("adx",)),
    "skylake-avx512": ("x86-64-v4", ("adx",)),
    "cascadelake": ("x86-64-v4", ("adx", "avx512vnni")),
    "icelake-server": ("x86-64-v4", ("adx", "avx512vnni", "avx512vbmi", "avx512ifma")),
    "sapphirerapids": ("x86-64-v4", ("adx", "avx512vnni", "avx512vbmi", "avx512ifma", "avx512bf16",
                                     "avx512fp16")),
    "znver1": ("x86-64-v3", ("adx", "sse4a")),
    "znver2": ("x86-64-v3", ("adx", "sse4a")),
    "znver3": ("x86-64-v3", ("adx", "sse4a")),
    "znver4": ("x86-64-v4", ("adx", "sse4a", "avx512vnni", "avx512vbmi", "avx512ifma", "avx512bf16")),
}
# LLVM feature -> the flag /proc/cpuinfo lists for it, where the names differ or the feature
# has one; features without a flag (instruction-set fine print) are not checked at load.
CPUINFO_FLAGS = {
    "sse3": "pni", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "sahf": "lahf_lm", "bmi": "bmi1", "lzcnt": "abm",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "avxvnni": "avx_vnni", "crc32": "sse4_2",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512bitalg": "avx512_bitalg", "avx512vbmi2": "avx512_vbmi2",
}
# Checked: the features whose instructions generated code may contain. Not checked: those it
# never emits (XSAVE*, AES, SHA, RDRAND...; a hypervisor may hide XSAVES from /proc/cpuinfo
# while LLVM's host probe lists it).
CPUINFO_SAME = {
    "cmov", "cx8", "fxsr", "mmx", "sse", "sse2", "cx16", "popcnt", "ssse3", "avx", "avx2", "bmi2", "f16c",
    "fma", "movbe", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512vbmi",
    "avx512ifma", "adx", "sse4a", "fma4", "gfni", "vpclmulqdq",
}


# AArch64 (64-bit ARM, Linux): LLVM CPU name and features; NEON (Advanced SIMD, 128-bit) is
# part of every AArch64 Linux CPU. Code for it is cross-compiled and cross-linked
# (aarch64-linux-gnu-gcc), and runs there or under qemu-aarch64.
AARCH64 = {
    "aarch64": ("generic", "+neon,+fp-armv8"),
    "cortex-a72": ("cortex-a72", "+neon,+fp-armv8,+crc"),
    "neoverse-n1": ("neoverse-n1", "+neon,+fp-armv8,+crc,+fullfp16,+dotprod"),
}
AARCH64_TRIPLE = "aarch64-unknown-linux-gnu"
AARCH64_FLAGS = {"neon": "asimd", "fp-armv8": "fp"}  # /proc/cpuinfo's "Features" names


def known_cpus() -> list[str]:
    return ["native", *LEVELS, *NAMED, *AARCH64]


def target_triple(cpu: str) -> str | None:
    """The LLVM triple `--cpu` compiles for: None for this host's instruction set."""
    return AARCH64_TRIPLE if cpu in AARCH64 else None


def features_of(text: str) -> dict[str, bool]:
    """A feature string "+avx2,-avx512f" as {name: on}; an item without +/- is refused."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item[0] not in "+-" or len(item) < 2:
            raise CompileError(f"--cpu-features: '{item}' is not +NAME or -NAME",
                               "write LLVM feature names with a sign, e.g. --cpu-features=+avx512vnni,-fma")
        out[item[1:]] = item[0] == "+"
    return out


def resolve_cpu(cpu: str = "native", extra: str = "") -> tuple[str, str]:
    """(LLVM CPU name, complete LLVM feature string) for `--cpu` and `--cpu-features`."""
    from dlc.runtime.mcjit import host_cpu

    if cpu in AARCH64:
        name, base = AARCH64[cpu]
        chosen = {feature for feature, on in {**features_of(base), **features_of(extra)}.items() if on}
        return name, ",".join(f"+{feature}" for feature in sorted(chosen))
    host_name, host_features = host_cpu()
    universe = features_of(host_features)  # every feature LLVM's x86 backend knows, on or off
    if cpu == "native":
        chosen = {name for name, on in universe.items() if on}
        name = host_name
    elif cpu in LEVELS or cpu in NAMED:
        level, additions = (cpu, ()) if cpu in LEVELS else NAMED[cpu]
        chosen, name = {*LEVELS[level], *additions}, cpu
        if not set(LEVELS["x86-64"]) <= set(universe):
            raise CompileError(f"--cpu {cpu}: an x86-64 CPU, but this dlc's LLVM compiles for "
                               f"'{host_name}' only", "give --cpu native")
    else:
        raise CompileError(f"--cpu {cpu!r}: not a CPU dlc knows", f"give one of: {', '.join(known_cpus())}")
    for feature, on in features_of(extra).items():
        if feature not in universe:
            raise CompileError(f"--cpu-features: LLVM knows no feature '{feature}' for this target",
                               f"features it knows include: {', '.join(sorted(universe)[:30])}, ...")
        (chosen.add if on else chosen.discard)(feature)
    text = ",".join(f"{'+' if f in chosen else '-'}{f}" for f in sorted(set(universe) | chosen))
    return name, text


def cpuinfo_flags_needed(features: str) -> list[str]:
    """The /proc/cpuinfo flags of the features switched on in `features` (those that have one)."""
    needed = set()
    for feature, on in features_of(features).items():
        if on and feature in AARCH64_FLAGS:
            needed.add(AARCH64_FLAGS[feature])
        elif on and (feature in CPUINFO_FLAGS or feature in CPUINFO_SAME):
            needed.add(CPUINFO_FLAGS.get(feature, feature))
    return sorted(needed)
