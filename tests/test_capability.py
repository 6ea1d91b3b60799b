"""The capability model on captured cpuinfo of each CPU class (tests/cpuinfo/), with and
without the cap variables, and the runner's use of it."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from inferbench.config import SweepConfig
from inferbench.machine import capability
from inferbench.machine.capability import EMULATED, NATIVE, UNAVAILABLE, parse_cpu, support
from inferbench.sweep.runner import run_sweep
from tests.conftest import fake_sweep

CPUINFO = Path(__file__).parent / "cpuinfo"
ROOT = Path(__file__).parent.parent


def cpu_of(name: str, **environ: str) -> capability.Cpu:
    return parse_cpu((CPUINFO / f"{name}.txt").read_text(), environ)


# (file, engine, precision) -> expected level, for every class the model must answer for.
EXPECTED = {
    "zen3-epyc-avx2": {
        ("torch", "bf16"): EMULATED,
        ("openvino", "bf16"): UNAVAILABLE,
        ("onnxruntime", "bf16"): UNAVAILABLE,
        ("torch", "int8"): NATIVE,
        ("openvino", "int8"): NATIVE,
        ("onnxruntime", "int8"): NATIVE,
    },
    "skylake-avx512": {
        ("torch", "bf16"): EMULATED,
        ("openvino", "bf16"): UNAVAILABLE,
        ("torch", "int8"): NATIVE,
        ("openvino", "int8"): NATIVE,
    },
    "zen5-epyc-avx512-bf16": {
        ("torch", "bf16"): NATIVE,
        ("openvino", "bf16"): NATIVE,
        ("onnxruntime", "bf16"): UNAVAILABLE,
        ("torch", "int8"): NATIVE,
    },
    "sapphire-rapids-amx": {
        ("torch", "bf16"): NATIVE,
        ("openvino", "bf16"): NATIVE,
        ("openvino", "int8"): NATIVE,
    },
    "neoverse-n1": {
        ("torch", "bf16"): EMULATED,
        ("openvino", "bf16"): UNAVAILABLE,
        ("torch", "int8"): NATIVE,
        ("onnxruntime", "int8"): NATIVE,
        ("openvino", "int8"): UNAVAILABLE,
    },
    "neoverse-v1": {("torch", "bf16"): NATIVE, ("torch", "int8"): NATIVE, ("openvino", "bf16"): UNAVAILABLE},
    "neoverse-n2": {("torch", "bf16"): NATIVE, ("onnxruntime", "int8"): NATIVE},
}


def test_every_captured_cpu_has_expectations() -> None:
    assert {p.stem for p in CPUINFO.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize(
    ("name", "engine", "precision", "level"),
    [(name, e, p, level) for name, table in EXPECTED.items() for (e, p), level in table.items()],
)
def test_support_per_cpu_class(name: str, engine: str, precision: str, level: str) -> None:
    found = support(cpu_of(name), engine, precision)
    assert found.level == level, found.why
    assert found.why  # every answer says what it rests on or what is missing


@pytest.mark.parametrize(
    ("name", "arch", "summary", "model"),
    [
        ("zen3-epyc-avx2", "x86_64", "AVX2 only", "AMD EPYC"),
        (
            "skylake-avx512",
            "x86_64",
            "AVX-512 (no VNNI, no BF16)",
            "Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz",
        ),
        ("zen5-epyc-avx512-bf16", "x86_64", "AVX-512 with VNNI, BF16", "AMD EPYC 9R45"),
        ("sapphire-rapids-amx", "x86_64", "AVX-512 with VNNI, BF16, AMX", "Intel(R) Xeon(R) Platinum 8488C"),
        ("neoverse-n1", "aarch64", "NEON with dot product", "Neoverse N1"),
        ("neoverse-v1", "aarch64", "SVE with BF16, I8MM, dot product", "Neoverse V1"),
        ("neoverse-n2", "aarch64", "SVE with BF16, I8MM, dot product", "Neoverse N2"),
    ],
)
def test_arch_model_and_summary_from_cpuinfo(name: str, arch: str, summary: str, model: str) -> None:
    cpu = cpu_of(name)
    assert (cpu.arch, cpu.isa_summary(), cpu.model) == (arch, summary, model)


def test_the_reason_names_the_missing_instructions() -> None:
    why = support(cpu_of("zen3-epyc-avx2"), "torch", "bf16").why
    assert "AVX2 only" in why and "AVX512_BF16" in why
    assert "Arm BF16" in support(cpu_of("neoverse-n1"), "torch", "bf16").why
    assert "VNNI" not in support(cpu_of("zen3-epyc-avx2"), "onnxruntime", "int8").why.split("(")[0]
    assert "AMX" in support(cpu_of("sapphire-rapids-amx"), "torch", "int8").why


def test_onednn_cap_narrows_torch_and_openvino_but_not_onnxruntime() -> None:
    """ONEDNN_MAX_CPU_ISA=AVX2 on an AMX machine: torch's bf16 becomes emulated and
    OpenVINO's unavailable, as on a Zen 3; ONNX Runtime's MLAS ignores the variable."""
    capped = cpu_of("sapphire-rapids-amx", ONEDNN_MAX_CPU_ISA="AVX2")
    assert support(capped, "torch", "bf16").level == EMULATED
    assert support(capped, "openvino", "bf16").level == UNAVAILABLE
    assert "no VNNI" in support(capped, "torch", "int8").why
    assert "AMX" in support(capped, "onnxruntime", "int8").why
    assert capped.isa_summary() == "AVX2 only"
    assert capability.describe(capped)["isa"]["avx512f"] is False  # what ran, for compare
    assert "avx512f" in capability.describe(capped)["features"]  # what the CPU has
    # Levels in between keep what they name: VNNI without BF16.
    vnni = cpu_of("sapphire-rapids-amx", DNNL_MAX_CPU_ISA="avx512_core_vnni")
    assert support(vnni, "torch", "bf16").level == EMULATED
    assert "VNNI" in support(vnni, "torch", "int8").why
    assert support(cpu_of("sapphire-rapids-amx", ONEDNN_MAX_CPU_ISA="ALL"), "torch", "bf16").level == NATIVE


def test_aten_cap_is_recorded_but_moves_no_precision() -> None:
    cpu = cpu_of("sapphire-rapids-amx", ATEN_CPU_CAPABILITY="avx2")
    assert cpu.caps == {"ATEN_CPU_CAPABILITY": "avx2"}
    assert support(cpu, "torch", "bf16").level == NATIVE  # the GEMM is oneDNN's, not ATen's


def test_unknown_cap_values_are_said_and_ignored() -> None:
    cpu = cpu_of("zen5-epyc-avx512-bf16", ONEDNN_MAX_CPU_ISA="AVX9000")
    assert cpu.caps == {} and "AVX9000" in cpu.problems[0]
    assert support(cpu, "torch", "bf16").level == NATIVE


def test_refusal_wording() -> None:
    emulated = capability.Support(EMULATED, "no native bf16 (AVX2 only)")
    assert capability.refusal(emulated, allow_emulated=True) is None
    text = capability.refusal(emulated, False, "torch's bf16 GEMM runs 103x slower than fp32 here")
    assert text is not None and "103x slower" in text and "--allow-emulated" in text
    assert "inferbench peak" in (capability.refusal(emulated, False) or "")
    unavailable = capability.Support(UNAVAILABLE, "would run f32")
    assert capability.refusal(unavailable, allow_emulated=True) == "would run f32"
    assert capability.refusal(None, False) is None
    assert capability.refusal(capability.Support(NATIVE, "AMX"), False) is None


def test_nothing_else_reads_cpu_flags() -> None:
    """The capability model is the one reader of /proc/cpuinfo in the package."""
    found = subprocess.run(
        ["grep", "-rl", "--include=*.py", "/proc/cpuinfo", "bench", "backends", "models"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert found == ["bench/machine/capability.py"]


def _emulating(monkeypatch: pytest.MonkeyPatch) -> None:
    """Act as an AVX2-only CPU for torch's compute (the cap reaches the workers too)."""
    if not capability.this_cpu({}).x86:
        pytest.skip("the AVX2 cap acts on x86 CPUs only; this one is " + capability.this_cpu({}).arch)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")


def _sweep(**kwargs: object) -> SweepConfig:
    return fake_sweep(
        ["tests.fakes:TorchLikeBackend"], precisions=("fp32", "bf16"), batch_sizes=(1,), **kwargs
    )


@pytest.mark.slow
def test_an_emulated_precision_is_unsupported_before_any_worker(
    monkeypatch: pytest.MonkeyPatch, run_dir: Path, cache_dir: Path
) -> None:
    _emulating(monkeypatch)
    rows = {r["precision"]: r for r in run_sweep(_sweep(), run_dir, cache_dir=cache_dir)}
    assert rows["bf16"]["status"] == "unsupported"
    assert "emulated: no native bf16 (AVX2 only" in rows["bf16"]["reason"]
    assert "--allow-emulated" in rows["bf16"]["reason"]
    assert rows["fp32"]["status"] == "ok" and rows["fp32"]["emulated"] is False
    logs = sorted(p.name for p in (run_dir / "logs").glob("*.log"))
    assert logs and not [name for name in logs if "__bf16__" in name]  # no worker for it


@pytest.mark.slow
def test_allow_emulated_measures_it_flagged_and_out_of_the_answer(
    monkeypatch: pytest.MonkeyPatch, run_dir: Path, cache_dir: Path
) -> None:
    from inferbench.report.answer import exclusion

    _emulating(monkeypatch)
    rows = {r["precision"]: r for r in run_sweep(_sweep(allow_emulated=True), run_dir, cache_dir=cache_dir)}
    assert rows["bf16"]["status"] == "ok" and rows["bf16"]["emulated"] is True
    assert exclusion(rows["bf16"]) == "emulated precision"
    assert exclusion(rows["fp32"]) != "emulated precision"
    assert "emulated" in (run_dir / "results.csv").read_text().splitlines()[0].split(",")


def test_allow_emulated_is_a_profile_key_and_checked(tmp_path: Path) -> None:
    from inferbench.config import load_profile
    from inferbench.errors import UserError

    profile = tmp_path / "p.toml"
    profile.write_text('[sweep]\nmodels = ["mlp"]\nbackends = ["torch"]\nallow_emulated = true\n')
    assert load_profile(str(profile)).allow_emulated is True
    profile.write_text('[sweep]\nmodels = ["mlp"]\nbackends = ["torch"]\nallow_emulated = "yes"\n')
    with pytest.raises(UserError, match="allow_emulated must be true or false"):
        load_profile(str(profile))


NARROW = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.mark.slow
@pytest.mark.engine
def test_engine_tests_pass_again_as_an_avx2_cpu() -> None:
    """On a wider x86 CPU, the low-precision engine tests run a second time acting as an
    AVX2-only one. What this simulates: torch's and OpenVINO's oneDNN kernels (they honour
    ONEDNN_MAX_CPU_ISA) and ATen's vectorised kernels; what it does not: ONNX Runtime's MLAS,
    which ignores both variables and keeps its VNNI/AMX int8 kernels, and torch's own choice
    of a bf16 GEMM path, which reads the CPU's flags (so torch bf16 is refused here by the
    capability model rather than run through the narrower kernels)."""
    import os
    import sys

    cpu = capability.this_cpu({})
    if not cpu.x86:
        pytest.skip(f"ONEDNN_MAX_CPU_ISA=AVX2 means nothing on {cpu.arch}")
    if not cpu.flags & {"avx512f", "avx_vnni", "amx_tile"}:
        pytest.skip(f"this CPU is already {cpu.isa_summary()}: the engine tests ran as an AVX2 CPU")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "engine and not slow",
            "-k",
            "low_precision or lowp or bf16 or int8",
            "tests/test_engines.py",
            "tests/test_engine_artifacts.py",
        ],
        cwd=ROOT,
        env={**os.environ, **NARROW},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_an_engine_report_narrows_but_never_widens() -> None:
    """OpenVINO's OPTIMIZATION_CAPABILITIES can take a precision away from the flags' answer
    (a plugin built without it), never add one: it reads the CPU, not the caps."""
    amx = cpu_of("sapphire-rapids-amx")
    without_bf16 = dataclasses.replace(amx, reported={"openvino": ("FP32", "INT8", "EXPORT_IMPORT")})
    assert support(without_bf16, "openvino", "bf16").level == UNAVAILABLE
    assert "reports no bf16" in support(without_bf16, "openvino", "bf16").why
    assert support(without_bf16, "openvino", "int8").level == NATIVE
    assert support(without_bf16, "torch", "bf16").level == NATIVE  # another engine's word
    capped = dataclasses.replace(
        cpu_of("sapphire-rapids-amx", ONEDNN_MAX_CPU_ISA="AVX2"), reported={"openvino": ("FP32", "BF16")}
    )
    assert support(capped, "openvino", "bf16").level == UNAVAILABLE


def test_this_machines_openvino_agrees_with_the_flags() -> None:
    pytest.importorskip("openvino")
    cpu = capability.with_engine_reports(capability.this_cpu({}), ("openvino",))
    assert "FP32" in cpu.reported["openvino"]
    for precision in ("bf16", "int8"):
        flags_say = support(capability.this_cpu({}), "openvino", precision).level
        assert support(cpu, "openvino", precision).level == flags_say, cpu.reported
