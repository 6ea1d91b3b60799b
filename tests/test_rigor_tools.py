"""The ceilings (`inferbench peak`), environment capture and the crosscheck tool's parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferbench.machine import capability, env, peak
from inferbench.tools import crosscheck

GOLDEN = Path(__file__).parent / "golden"


def test_peak_probes_return_positive_plausible_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every precision some library computes natively here gets a ceiling; one that is only
    emulated gets none, and its rate is recorded apart (this CPU's answers come from the
    capability model, whatever CPU runs the test)."""
    # Small shapes and short probes: the code path of the real measurement, in a second.
    monkeypatch.setattr(peak, "GEMM_SHAPES", ((128, 256, 256),))
    monkeypatch.setattr(peak, "PROBE_SECONDS", 0.05)
    monkeypatch.setattr(peak, "EMULATED_SECONDS", 0.05)
    monkeypatch.setattr(peak, "EMULATED_SHAPE", (64, 64, 64))
    monkeypatch.setattr(peak, "MEMORY_BYTES", 16 * 2**20)
    cpu = capability.this_cpu()
    found = peak.measure_peaks(threads=1, cpu=cpu)
    for precision, key in peak.PEAK_KEYS.items():
        levels = {capability.support(cpu, library, precision).level for library in peak.PROBES}
        if capability.NATIVE in levels:
            # Anything from an old laptop core to a large server; zero or absurd means a broken probe.
            assert 0.5 < found[key] < 100_000, key
            assert found[f"{key}_method"].split()[0] in peak.PROBES
        else:
            assert found[key] is None, key
        if capability.EMULATED in levels and capability.NATIVE not in levels:
            assert found["emulated"][precision]["gflops"] > 0
            assert found["emulated"][precision]["slowdown_vs_fp32"] > 0
    assert 0.1 < found["memory_gbps"] < 10_000
    assert any(name.startswith("torch fp32") for name in found["probes"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parent / "cpuinfo").glob("*.txt")))
def test_emulated_precisions_are_never_a_ceiling(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On every CPU class, with fake probes: a precision the capability model calls emulated
    for a library is timed once on the small shape and kept out of the ceilings; one it calls
    unavailable is not probed at all."""
    cpu = capability.parse_cpu((Path(__file__).parent / "cpuinfo" / f"{name}.txt").read_text(), {})
    calls: list[tuple[str, str, tuple[int, int, int]]] = []

    def fake(library: str) -> object:
        def probe(
            precision: str, threads: int, shape: tuple[int, int, int], *args: object, **kw: object
        ) -> float:
            calls.append((library, precision, shape))
            return 100.0

        return probe

    monkeypatch.setattr(peak, "PROBES", {name: fake(name) for name in peak.PROBES})
    monkeypatch.setattr(peak, "_torch_gemm", fake("torch"))
    monkeypatch.setattr(peak, "_memory_bandwidth", lambda threads: (10.0, "fake"))
    found = peak.measure_peaks(threads=1, cpu=cpu)
    for precision, key in peak.PEAK_KEYS.items():
        levels = {lib: capability.support(cpu, lib, precision).level for lib in peak.PROBES}
        native = [lib for lib, level in levels.items() if level == capability.NATIVE]
        assert (found[key] is not None) == bool(native), (precision, levels)
        for library, level in levels.items():
            probed = [shape for lib, p, shape in calls if (lib, p) == (library, precision)]
            if level == capability.UNAVAILABLE:
                assert not probed and f"{library} {precision}" in found["not_probed"]
            elif level == capability.EMULATED and library == "torch":
                assert probed == [peak.EMULATED_SHAPE]
                assert found["emulated"][precision]["slowdown_vs_fp32"] == 1.0
    row = {"precision": "bf16", "flops_per_sample": 1e9, "throughput_sps": 10.0}
    assert ("pct_of_peak" in peak.percent_of_peak(row, found)) == bool(found["bf16_gflops"])


def test_peaks_are_cached_per_machine_and_thread_count(tmp_path: Path) -> None:
    path = peak.peak_cache_path(tmp_path, 2)
    assert path != peak.peak_cache_path(tmp_path, 1)
    assert peak.load_peaks(tmp_path, 2) is None
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fp32_gflops": 200.0}))
    found = peak.get_peaks(tmp_path, 2)  # cached: no measurement process is started
    assert found == {"fp32_gflops": 200.0, "cached": True}


def test_percent_of_peak_uses_the_rows_precision() -> None:
    peaks = {"fp32_gflops": 100.0, "bf16_gflops": 400.0, "int8_gops": 800.0}
    row = {"precision": "bf16", "flops_per_sample": 2e9, "throughput_sps": 50.0}
    assert peak.percent_of_peak(row, peaks) == {
        "achieved_gflops": 100.0,
        "peak_gflops": 400.0,
        "pct_of_peak": 25.0,
    }
    assert "pct_of_peak" not in peak.percent_of_peak({**row, "precision": "fp16"}, peaks)
    assert peak.percent_of_peak({**row, "flops_per_sample": None}, peaks) == {}


def test_environment_capture_has_pyperf_metadata_and_thread_settings() -> None:
    captured = env.capture([1])
    assert {"cpu", "system", "packages", "threads", "load_average", "torch_build"} <= set(captured)
    assert captured["system"]["perf_version"]  # collected by pyperf itself
    assert {"platform", "cpu_count"} <= set(captured["system"])
    assert "OMP_NUM_THREADS" in captured["threads"]["env"]
    assert "ONEDNN_MAX_CPU_ISA" in captured["threads"]["env"]
    assert captured["packages"]["pyperf"] != "not installed"
    assert "gpu" not in captured  # asked for only by GPU sweeps


def test_noise_warnings() -> None:
    quiet = {"load_average": [0.1, 0.1, 0.1], "cpu": {"affinity": [0, 1]}, "system": {}}
    steady = {
        "cell_key": "a",
        "latency_p50_ms": 10.0,
        "latency_p50_ci_low_ms": 9.9,
        "latency_p50_ci_high_ms": 10.1,
    }
    assert env.noise_warnings(quiet, [steady]) == []
    busy = {**quiet, "load_average": [3.0, 1.0, 1.0]}
    assert "load average 3.00" in env.noise_warnings(busy, [])[0]
    wide = {**steady, "cell_key": "b", "latency_p50_ci_high_ms": 12.0}
    (warning,) = env.noise_warnings(quiet, [steady, wide])
    assert "1 cell(s)" in warning and "b" in warning
    spread = {**steady, "process_p50_spread_pct": 30.0}
    assert "between fresh processes" in env.noise_warnings(quiet, [spread])[0]
    governor = {**quiet, "system": {"cpu_config": "0-1=driver:acpi-cpufreq, governor:powersave"}}
    assert "governor" in env.noise_warnings(governor, [])[0]


def test_benchmark_app_output_is_parsed_with_units() -> None:
    parsed = crosscheck.parse_benchmark_app((GOLDEN / "benchmark_app_sync.txt").read_text())
    assert parsed["iterations"] == 225912
    assert parsed["duration_ms"] == pytest.approx(3000.01)
    assert parsed["median_ms"] == pytest.approx(0.00682)  # printed as 6.82 us
    assert parsed["max_ms"] == pytest.approx(0.17831)
    assert parsed["throughput_fps"] == pytest.approx(75303.86)
    assert parsed["first_inference_ms"] == pytest.approx(1.14)
    with pytest.raises(ValueError, match="no statistics"):
        crosscheck.parse_benchmark_app("[ ERROR ] Wrong input mapping!")


def test_benchmark_app_is_given_our_shapes_inputs_and_properties(tmp_path: Path) -> None:
    files = {"input_ids": [tmp_path / "a0.npy", tmp_path / "a1.npy"], "mask": [tmp_path / "m0.npy"]}
    shapes = {"input_ids": (8, 128), "mask": (8, 128)}
    dtypes = {"input_ids": "int64", "mask": "float32"}
    command = crosscheck.benchmark_app_command(
        tmp_path / "m.xml", shapes, dtypes, files, tmp_path / "c.json", "latency", 10
    )
    assert command[0].endswith("benchmark_app")
    joined = " ".join(command)
    assert "-hint latency -api sync -t 10" in joined
    assert "-shape input_ids[8,128],mask[8,128]" in joined
    assert "-iop input_ids:i64,mask:f32" in joined  # else 4-D inputs are taken for u8 images
    assert f"input_ids:{tmp_path / 'a0.npy'},{tmp_path / 'a1.npy'}" in command
    latency = crosscheck.openvino_properties("bf16", 2, "latency")["CPU"]
    assert latency["INFERENCE_PRECISION_HINT"] == "bf16" and latency["NUM_STREAMS"] == "1"
    assert latency["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0"
    throughput = crosscheck.openvino_properties("int8", 2, "throughput")["CPU"]
    assert throughput["PERFORMANCE_HINT"] == "THROUGHPUT" and "NUM_STREAMS" not in throughput
    assert throughput["INFERENCE_PRECISION_HINT"] == "f32"  # int8 comes from the IR itself
