"""What this CPU can compute, and how, for each engine and precision: the one place that reads
CPU flags.

Every answer is one of three:

- `native`: the CPU has instructions for the precision's arithmetic and the engine uses them
  (int8 counts as native on AVX2 without VNNI: u8 x s8 multiply-adds, `vpmaddubsw`, are real
  8-bit arithmetic, about fp32's speed; VNNI and AMX make it faster);
- `emulated`: the engine computes it anyway, converting to fp32 in software or running a
  reference kernel (torch's bf16 GEMM on AVX2 ran 540x slower than fp32 on a Zen 3): numbers
  that say nothing about the precision, so the runner refuses them unless asked;
- `unavailable`: the engine does not compute it here (it would run fp32 under the label).

The flags come from `/proc/cpuinfo` (x86 `flags`, aarch64 `Features`), narrowed by the
variables that cap what really runs: oneDNN's `ONEDNN_MAX_CPU_ISA` (also `DNNL_MAX_CPU_ISA`),
which torch's bundled oneDNN and OpenVINO's CPU plugin read, and torch's
`ATEN_CPU_CAPABILITY`, which caps ATen's own vectorised kernels. ONNX Runtime's MLAS reads
neither: on a wider CPU it keeps its wider kernels (see `CAPS_HONOURED_BY`).

Everything here is a pure function of the cpuinfo text, the environment and the machine name,
so captured cpuinfo files of other machines test it (tests/cpuinfo/).
"""

from __future__ import annotations

import logging
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NATIVE, EMULATED, UNAVAILABLE = "native", "emulated", "unavailable"

#: The engine families the model knows; a backend names its own with `Backend.cpu_engine`.
ENGINES = ("torch", "onnxruntime", "openvino")

#: The x86 flags env.json's `isa` has always listed: compare and the history's machine
#: fingerprint key on them, so the list only grows under another key (`features`).
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "avx512_fp16",
)
#: Flags worth recording (env.json's `features`) per architecture.
X86_FLAGS = (
    "sse4_1",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "avx_ne_convert",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
ARM_FLAGS = ("asimd", "asimddp", "asimdhp", "fphp", "bf16", "i8mm", "sve", "sve2", "svebf16", "svei8mm")

# oneDNN's ISA names, narrowest first, with the x86 flags each level adds. A cap keeps the
# flags of its level and those below; anything else is treated as absent.
_ONEDNN_LEVELS: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = (
    (("SSE41",), frozenset({"sse", "sse2", "ssse3", "sse4_1", "sse4_2"})),
    (("AVX",), frozenset({"avx"})),
    (("AVX2",), frozenset({"avx2", "fma", "f16c"})),
    (("AVX2_VNNI",), frozenset({"avx_vnni"})),
    (("AVX2_VNNI_2",), frozenset({"avx_ne_convert", "avx_vnni_int8"})),
    (("AVX512_CORE",), frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"})),
    (("AVX512_CORE_VNNI",), frozenset({"avx512_vnni"})),
    (("AVX512_CORE_BF16",), frozenset({"avx512_bf16"})),
    (("AVX512_CORE_FP16", "AVX10_1_512"), frozenset({"avx512_fp16"})),
    (("AVX512_CORE_AMX", "AVX10_1_512_AMX"), frozenset({"amx_tile", "amx_bf16", "amx_int8"})),
    (("AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16"), frozenset({"amx_fp16"})),
)
ONEDNN_ISA_NAMES = (*(name for names, _ in _ONEDNN_LEVELS for name in names), "ALL", "DEFAULT")
# Every x86 flag a cap governs; flags outside the levels (sse, aes, ...) are left alone.
_GOVERNED = frozenset().union(*(flags for _, flags in _ONEDNN_LEVELS))
# ATEN_CPU_CAPABILITY's values on x86 and the widest oneDNN-style level each allows ATen.
_ATEN_LEVELS = {"default": "SSE41", "avx2": "AVX2", "avx512": "AVX512_CORE_AMX_FP16"}

#: Whose GEMM and convolution kernels follow which cap variable (docs/cpu-capabilities.md):
#: torch's bundled oneDNN and OpenVINO's CPU plugin read ONEDNN_MAX_CPU_ISA (OpenVINO's
#: convolution went from brgconv_avx2_f32 to jit_sse42_f32 under SSE41 on a Zen 3); ONNX
#: Runtime's MLAS reads neither. ATEN_CPU_CAPABILITY caps only ATen's own vectorised kernels
#: (elementwise, reductions): torch's matmuls still reach oneDNN, so it moves no precision.
CAPS_HONOURED_BY: dict[str, tuple[str, ...]] = {
    "ONEDNN_MAX_CPU_ISA": ("torch", "openvino"),
    "ATEN_CPU_CAPABILITY": (),
}


@dataclass(frozen=True)
class Support:
    """How one engine computes one precision here."""

    level: str  # NATIVE, EMULATED or UNAVAILABLE
    why: str  # the instructions it rests on, or what is missing

    @property
    def runs(self) -> bool:
        return self.level == NATIVE


@dataclass(frozen=True)
class Cpu:
    """The CPU as the engines see it: its flags, less whatever a cap variable hides."""

    arch: str  # "x86_64", "aarch64", or what platform.machine() said
    model: str
    flags: frozenset[str]  # as reported by the CPU
    caps: dict[str, str] = field(default_factory=dict)  # cap variable -> value, those set
    problems: tuple[str, ...] = ()  # cap values not understood (ignored, said so)
    #: What an engine itself says it can do here, where it says (`with_engine_reports`):
    #: engine -> its own words, e.g. OpenVINO's OPTIMIZATION_CAPABILITIES.
    reported: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "i386")

    @property
    def arm(self) -> bool:
        return self.arch in ("aarch64", "arm64")

    def effective(self, engine: str) -> frozenset[str]:
        """The flags `engine`'s kernels may use under the caps it honours."""
        flags = self.flags
        if not self.x86:
            return flags
        for variable, value in self.caps.items():
            if engine in CAPS_HONOURED_BY.get(_canonical_var(variable), ()):
                flags = _cap_flags(flags, _level_of(variable, value))
        return flags

    def has(self, engine: str, *any_of: str) -> bool:
        return bool(self.effective(engine) & set(any_of))

    def isa_summary(self, engine: str = "torch") -> str:
        """The widest vector level as words: 'AVX2 only', 'AVX-512 with VNNI and BF16', ..."""
        return isa_summary(self, engine)


def _canonical_var(variable: str) -> str:
    return "ONEDNN_MAX_CPU_ISA" if variable == "DNNL_MAX_CPU_ISA" else variable


def _level_of(variable: str, value: str) -> str | None:
    value = value.strip()
    if _canonical_var(variable) == "ATEN_CPU_CAPABILITY":
        return _ATEN_LEVELS.get(value.lower())
    return None if value.upper() in ("ALL", "DEFAULT") else value.upper()


def _cap_flags(flags: frozenset[str], level: str | None) -> frozenset[str]:
    if level is None:
        return flags
    allowed: set[str] = set()
    for names, level_flags in _ONEDNN_LEVELS:
        allowed |= level_flags
        if level in names:
            break
    return frozenset(f for f in flags if f not in _GOVERNED or f in allowed)


def parse_cpu(cpuinfo: str, environ: Mapping[str, str] | None = None, machine: str | None = None) -> Cpu:
    """The CPU of a `/proc/cpuinfo` text under the cap variables of `environ`."""
    environ = os.environ if environ is None else environ
    flags_line = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", cpuinfo, re.M)
    flags = frozenset(flags_line.group(1).split()) if flags_line else frozenset()
    arch = (machine or _arch_of(cpuinfo, flags)).lower()
    caps, problems = {}, []
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        value = environ.get(variable)
        if not value:
            continue
        known = (
            value.strip().lower() in _ATEN_LEVELS or value.strip().lower() in ("zvector", "vsx", "sve256")
            if variable == "ATEN_CPU_CAPABILITY"
            else value.strip().upper() in ONEDNN_ISA_NAMES
        )
        if known:
            caps[variable] = value.strip()
        else:
            problems.append(f"{variable}={value!r} is not a value the engines know; ignored")
    return Cpu(arch, _model_of(cpuinfo, flags, arch), flags, caps, tuple(problems))


def _arch_of(cpuinfo: str, flags: frozenset[str]) -> str:
    if re.search(r"^Features\s*:", cpuinfo, re.M) or "asimd" in flags:
        return "aarch64"
    if re.search(r"^flags\s*:", cpuinfo, re.M):
        return "x86_64"
    return platform.machine() or "unknown"


_ARM_PARTS = {  # CPU part numbers of the Arm designs in clouds and CI runners
    "0xd0c": "Neoverse N1",
    "0xd40": "Neoverse V1",
    "0xd49": "Neoverse N2",
    "0xd4f": "Neoverse V2",
    "0xd8e": "Neoverse N3",
    "0xd84": "Neoverse V3",
}


def _model_of(cpuinfo: str, flags: frozenset[str], arch: str) -> str:
    name = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    if name:
        return name.group(1).strip()
    part = re.search(r"^CPU part\s*:\s*(\S+)$", cpuinfo, re.M)
    if part:
        return _ARM_PARTS.get(part.group(1).lower(), f"Arm CPU part {part.group(1)}")
    return platform.processor() or arch


def this_cpu(environ: Mapping[str, str] | None = None) -> Cpu:
    """This machine's CPU under this process's caps."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return parse_cpu(text, environ, platform.machine() or None)


def isa_summary(cpu: Cpu, engine: str = "torch") -> str:
    flags = cpu.effective(engine)

    def named(*pairs: tuple[str, str]) -> list[str]:
        return [name for flag, name in pairs if flag in flags]

    if cpu.arm:
        extras = named(("bf16", "BF16"), ("i8mm", "I8MM"), ("asimddp", "dot product"))
        base = "SVE" if "sve" in flags else "NEON"
        return f"{base} with {', '.join(extras)}" if extras else f"{base} only (no BF16, no I8MM)"
    if not cpu.x86:
        return f"{cpu.arch} (not modelled)"
    if "avx512f" in flags:
        extras = named(("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16"), ("amx_tile", "AMX"))
        return "AVX-512 with " + ", ".join(extras) if extras else "AVX-512 (no VNNI, no BF16)"
    if "avx2" in flags:
        extras = named(("avx_vnni", "AVX-VNNI"), ("avx_ne_convert", "AVX-NE-CONVERT"))
        return "AVX2 with " + ", ".join(extras) if extras else "AVX2 only"
    return "no AVX2"


def support(cpu: Cpu, engine: str, precision: str) -> Support:
    """How `engine` computes `precision` on `cpu`."""
    if precision == "fp32":
        return Support(NATIVE, "fp32 arithmetic")
    rule = _RULES.get((engine, precision))
    if rule is None:
        return Support(UNAVAILABLE, f"{engine} has no {precision} on a CPU")
    if not (cpu.x86 or cpu.arm):
        return Support(UNAVAILABLE, f"{cpu.arch} CPUs are not modelled")
    found = rule(cpu)
    said = cpu.reported.get(engine)
    # The flags can only be narrowed by the engine's word: OpenVINO reads the CPU's flags for
    # OPTIMIZATION_CAPABILITIES, not the cap variables, so its word never widens them.
    if found.level == NATIVE and said is not None and _REPORT_NAMES.get(precision, "") not in said:
        return Support(UNAVAILABLE, f"{engine} reports no {precision} here ({', '.join(said)})")
    return found


#: The words an engine's own report uses for a precision.
_REPORT_NAMES = {"bf16": "BF16", "int8": "INT8", "fp16": "FP16"}


def with_engine_reports(cpu: Cpu, engines: tuple[str, ...] = ENGINES) -> Cpu:
    """`cpu` with what the engines among `engines` report of themselves here (imports them):
    today OpenVINO's CPU `OPTIMIZATION_CAPABILITIES`. An engine that is missing or fails to
    answer reports nothing."""
    import importlib.util

    reported = dict(cpu.reported)
    if "openvino" in engines and importlib.util.find_spec("openvino") is not None:
        try:
            import openvino as ov

            said = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            reported["openvino"] = tuple(str(word) for word in said)
        except Exception:  # the flags still answer; the report only ever narrows them
            log.debug("OpenVINO did not report its CPU capabilities", exc_info=True)
    return replace(cpu, reported=reported)


def _torch_bf16(cpu: Cpu) -> Support:
    if cpu.x86 and cpu.has("torch", "amx_bf16", "avx512_bf16"):
        found = "AMX-BF16" if cpu.has("torch", "amx_bf16") else "AVX512_BF16"
        return Support(NATIVE, f"{found} dot products (oneDNN)")
    if cpu.arm and cpu.has("torch", "bf16"):
        return Support(NATIVE, "Arm BF16 (BFMMLA) through oneDNN/ACL")
    missing = _missing_bf16(cpu, "torch")
    return Support(EMULATED, f"no native bf16 ({missing}): torch converts to fp32 in software")


def _openvino_bf16(cpu: Cpu) -> Support:
    if cpu.x86 and cpu.has("openvino", "amx_bf16", "avx512_bf16"):
        found = "AMX-BF16" if cpu.has("openvino", "amx_bf16") else "AVX512_BF16"
        return Support(NATIVE, f"{found} (OpenVINO's CPU plugin)")
    missing = _missing_bf16(cpu, "openvino")
    why = f"no native bf16 ({missing}): OpenVINO's CPU plugin would run f32 under a bf16 hint"
    return Support(UNAVAILABLE, why)


def _missing_bf16(cpu: Cpu, engine: str) -> str:
    if cpu.arm:
        return f"{cpu.isa_summary(engine)}: no Arm BF16 extension"
    return f"{cpu.isa_summary(engine)}: no AVX512_BF16 or AMX-BF16"


def _int8(engine: str) -> Any:
    def rule(cpu: Cpu) -> Support:
        if cpu.x86:
            if cpu.has(engine, "amx_int8"):
                return Support(NATIVE, "AMX-INT8 tiles")
            if cpu.has(engine, "avx512_vnni", "avx_vnni"):
                return Support(NATIVE, "VNNI int8 dot products")
            if cpu.has(engine, "avx2", "avx512bw"):
                return Support(NATIVE, "AVX2 u8 x s8 multiply-adds (no VNNI dot product)")
            return Support(EMULATED, f"{cpu.isa_summary(engine)}: the int8 kernels need AVX2")
        if cpu.has(engine, "i8mm"):
            return Support(NATIVE, "Arm I8MM int8 matrix multiply")
        if cpu.has(engine, "asimddp"):
            return Support(NATIVE, "Arm int8 dot product (SDOT)")
        return Support(NATIVE, "NEON int8 multiply-adds (no dot product)")

    return rule


def _openvino_int8(cpu: Cpu) -> Support:
    if cpu.arm:  # the Arm plugin's low-precision path runs most layers in f32
        return Support(UNAVAILABLE, "OpenVINO's Arm CPU plugin keeps quantized models' compute in f32")
    return _int8("openvino")(cpu)


def _onnxruntime_bf16(cpu: Cpu) -> Support:
    return Support(UNAVAILABLE, "ONNX Runtime's CPU provider has no bf16 kernels for compute operators")


_RULES = {
    ("torch", "bf16"): _torch_bf16,
    ("torch", "int8"): _int8("torch"),
    ("onnxruntime", "bf16"): _onnxruntime_bf16,
    ("onnxruntime", "int8"): _int8("onnxruntime"),
    ("openvino", "bf16"): _openvino_bf16,
    ("openvino", "int8"): _openvino_int8,
}


def refusal(found: Support | None, allow_emulated: bool, cost: str = "") -> str | None:
    """Why a cell of this support is not measured, or None when it is: unavailable always,
    emulated unless allowed. `cost` is the probe's measured slowdown, when known."""
    if found is None or found.level == NATIVE or (found.level == EMULATED and allow_emulated):
        return None
    if found.level == UNAVAILABLE:
        return found.why
    cost = cost or "its cost on this CPU is measured by `inferbench peak`"
    return f"emulated: {found.why}; {cost}; --allow-emulated measures it anyway"


def table(cpu: Cpu, precisions: tuple[str, ...] = ("fp32", "bf16", "int8")) -> dict[str, dict[str, Any]]:
    """Every engine x precision, for env.json and doctor."""
    return {
        engine: {p: {"level": s.level, "why": s.why} for p in precisions for s in [support(cpu, engine, p)]}
        for engine in ENGINES
    }


def describe(cpu: Cpu) -> dict[str, Any]:
    """The facts env.json records: what the CPU has, what the caps leave, what each engine does.
    `isa` holds the flags torch may use under the caps (a capped run is another machine to
    compare and history); `features` what the CPU itself reports."""
    usable = cpu.effective("torch")
    return {
        "model": cpu.model,
        "arch": cpu.arch,
        "isa": {flag: flag in usable for flag in (ISA_FLAGS if cpu.x86 else ARM_FLAGS)},
        "features": sorted(f for f in (X86_FLAGS if cpu.x86 else ARM_FLAGS) if f in cpu.flags),
        "isa_summary": cpu.isa_summary(),
        "caps": dict(cpu.caps),
        "reported": {engine: list(words) for engine, words in cpu.reported.items()},
        "native_bf16": support(cpu, "torch", "bf16").runs,
        "native_int8_dot": bool(usable & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}),
        "support": table(cpu),
    }
