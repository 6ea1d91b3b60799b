"""Our numbers beside the engines' own tools, on the same files, inputs, precision and threads.

- OpenVINO: `benchmark_app` (ships in the openvino wheel) on the IR our backend compiled, with
  our inputs (`-i name:file.npy,...`), static shapes and the same CPU properties
  (`-load_config`). Latency mode: its sync loop's median (the plugin's own per-request
  latency) and throughput beside ours; throughput mode: its async run with the THROUGHPUT hint.
- ONNX Runtime: a bare `run_with_iobinding` loop on the ONNX file our backend loaded, with the
  same session options, timed per call: ORT's own fastest way to call the engine from Python.
- Harness overhead: on `mlp` (microseconds per call), our timed loop through each backend
  against the bare engine call in a tight loop, and our loop around a no-op.

`make crosscheck ARGS="--models resnet50 --batch-sizes 1"` or
`python -m inferbench.tools.crosscheck --help`. Writes crosscheck.csv and crosscheck.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferbench.config import CELL_AXES, MeasureConfig, SweepConfig, cell_axes, resolve_threads
from inferbench.errors import UserError
from inferbench.measure import backend_iteration, measure
from inferbench.procs import python_command, worker_env
from inferbench.runner import default_cache_dir, run_sweep
from inferbench.tools.ort_loop import bare_loop
from inferbench.util import atomic_write_text

OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_UNITS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
_VALUE = r"([\d.]+)\s*(ns|us|ms|s)\b"


def parse_benchmark_app(text: str) -> dict[str, float]:
    """The statistics block benchmark_app prints at its end (step 11), latencies in ms."""

    def latency(label: str) -> float:
        found = re.search(rf"^\[ INFO \]\s+{label}:\s+{_VALUE}", text, re.M)
        if not found:
            raise ValueError(f"benchmark_app output has no {label} latency")
        return float(found.group(1)) * _UNITS[found.group(2)]

    count = re.search(r"Count:\s+(\d+) iterations", text)
    throughput = re.search(r"Throughput:\s+([\d.]+) FPS", text)
    duration = re.search(rf"Duration:\s+{_VALUE}", text)
    first = re.search(rf"First inference took {_VALUE}", text)
    if not (count and throughput and duration):
        raise ValueError("benchmark_app output has no statistics report (did it fail?)")
    return {
        "iterations": int(count.group(1)),
        "duration_ms": float(duration.group(1)) * _UNITS[duration.group(2)],
        "median_ms": latency("Median"),
        "average_ms": latency("Average"),
        "min_ms": latency("Min"),
        "max_ms": latency("Max"),
        "throughput_fps": float(throughput.group(1)),
        "first_inference_ms": float(first.group(1)) * _UNITS[first.group(2)] if first else float("nan"),
    }


# numpy dtype -> benchmark_app's element type names (-iop).
OV_TYPES = {"float32": "f32", "int64": "i64", "int32": "i32", "uint8": "u8", "bool": "boolean"}


def benchmark_app_command(
    xml: Path,
    shapes: dict[str, tuple[int, ...]],
    dtypes: dict[str, str],
    inputs: dict[str, list[Path]],
    config_file: Path,
    mode: str,
    seconds: float,
) -> list[str]:
    shape = ",".join(f"{name}[{','.join(map(str, dims))}]" for name, dims in shapes.items())
    # Explicit input types: benchmark_app otherwise takes 4-D inputs for u8 images.
    types = ",".join(f"{name}:{OV_TYPES[dtype]}" for name, dtype in dtypes.items())
    files = [f"{name}:{','.join(map(str, paths))}" for name, paths in inputs.items()]
    hint, api = ("latency", "sync") if mode == "latency" else ("throughput", "async")
    tool = Path(sys.executable).with_name("benchmark_app")
    return [
        str(tool),
        *("-m", str(xml), "-d", "CPU", "-hint", hint, "-api", api, "-t", f"{seconds:g}"),
        *("-shape", shape, "-iop", types, "-load_config", str(config_file), "-i", *files),
    ]


def openvino_properties(precision: str, threads: int, mode: str) -> dict[str, dict[str, str]]:
    """The CPU properties our OpenVINO backend compiles with, in benchmark_app's config format."""
    cpu = {
        "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
        "INFERENCE_NUM_THREADS": str(threads),
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
    }
    if mode == "latency":
        cpu.update({"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"})
    else:
        cpu["PERFORMANCE_HINT"] = "THROUGHPUT"
    return {"CPU": cpu}


def save_inputs(model: Any, batch_size: int, sets: int, seed: int, folder: Path) -> dict[str, list[Path]]:
    """The timed input sets of a cell as .npy files, per input name (the worker's seeds)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {name: [] for name in model.input_names}
    for k in range(sets):
        for name, array in model.make_inputs(batch_size, seed + k).items():
            path = folder / f"{name}-{k}.npy"
            np.save(path, array)
            files[name].append(path)
    return files


def _pct(ours: float, theirs: float) -> float:
    return 100 * (ours - theirs) / theirs


def crosscheck_openvino(record: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from inferbench.models import build_model, resolve_model

    model = build_model(resolve_model(record["model"]), seed=0)
    xml = Path(record["artifact_path"]).with_suffix(".xml")
    batch, mode = record["batch_size"], record["mode"]
    cell_dir = work / record["cell_key"]
    inputs = save_inputs(model, batch, args.input_sets, 0, cell_dir / "inputs")
    config_file = cell_dir / "ov-config.json"
    properties = openvino_properties(record["precision"], record["threads"], mode)
    atomic_write_text(config_file, json.dumps(properties))
    shapes = {spec.name: (batch, *spec.shape) for spec in model.inputs}
    dtypes = {name: str(array.dtype) for name, array in model.make_inputs(batch, 0).items()}
    command = benchmark_app_command(xml, shapes, dtypes, inputs, config_file, mode, args.seconds)
    runs = []
    for k in range(args.rounds):  # as many fresh processes as our side had
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=worker_env(record["threads"]),
            timeout=args.seconds * 10 + 300,
        )
        (cell_dir / f"benchmark_app-{k}.log").write_text(done.stdout + done.stderr)
        runs.append(parse_benchmark_app(done.stdout))
    theirs = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
    row = {
        "tool": "benchmark_app",
        "ours_p50_ms": record["latency_p50_ms"],
        "tool_p50_ms": theirs["median_ms"],
        "ours_sps": record["throughput_sps"],
        # Its FPS counts a batch as one frame unless the input layout names N (2-D token inputs
        # do not): samples/s from its own iteration count and duration instead.
        "tool_sps": theirs["iterations"] * batch / (theirs["duration_ms"] / 1e3),
        "tool_fps_printed": theirs["throughput_fps"],
    }
    if mode == "throughput":  # async request latency depends on queueing; compare the rate only
        row["ours_p50_ms"] = row["tool_p50_ms"] = float("nan")
    return row


def crosscheck_onnxruntime(record: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A bare IO-binding loop on the file our backend ran, same session options and inputs, in
    fresh processes with the same thread environment (`inferbench.tools.ort_loop`)."""
    command = python_command(
        "inferbench.tools.ort_loop",
        *(record["model"], record["artifact_path"], str(record["batch_size"])),
        *(str(record["threads"]), f"{args.seconds:g}", str(args.input_sets)),
    )
    runs = []
    for _ in range(args.rounds):
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=worker_env(record["threads"]),
            timeout=args.seconds * 10 + 300,
        )
        if done.returncode != 0:
            raise ValueError(f"ORT loop failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        "tool": "ort io-binding loop",
        "ours_p50_ms": record["latency_p50_ms"],
        "tool_p50_ms": float(np.median([r["p50_ms"] for r in runs])),
        "ours_sps": record["throughput_sps"],
        "tool_sps": float(np.median([r["sps"] for r in runs])),
    }


def harness_overhead(seconds: float) -> list[dict[str, Any]]:
    """Per-call cost our loop and backend wrappers add on `mlp` (batch 1, one thread)."""
    from inferbench.backends import load_backend
    from inferbench.models import build_model, resolve_model

    config = MeasureConfig(min_seconds=seconds, max_seconds=seconds * 2, tail_samples=1000)
    model = build_model(resolve_model("mlp"), seed=0)
    noop = measure(lambda i: None, config)
    rows: list[dict[str, Any]] = [
        {"backend": "(no-op)", "harness_p50_us": float(np.median(noop.latencies_ns)) / 1e3}
    ]
    for name in ("torch", "onnxruntime", "openvino"):
        if load_backend(name).availability().ok:
            rows.append(_overhead(name, model, config, seconds))
    return rows


def _overhead(name: str, model: Any, config: MeasureConfig, seconds: float) -> dict[str, Any]:
    import torch

    from inferbench.backends import load_backend

    backend = load_backend(name)(1, default_cache_dir())
    backend.prepare(model, "fp32", 1)
    natives = [backend.to_native(model.make_inputs(1, k)) for k in range(4)]

    # The sweep's own iteration and engine-time reading, so the overhead is the sweep's.
    ours = measure(
        backend_iteration(backend, natives), config, engine_time=backend.engine_time_ns
    ).latencies_ns
    with torch.inference_mode():
        bare = bare_loop(_bare_engine_call(name, backend, model), seconds)
    backend.close()
    ours_us, bare_us = float(np.median(ours)) / 1e3, float(np.median(bare)) / 1e3
    return {
        "backend": name,
        "harness_p50_us": ours_us,
        "bare_p50_us": bare_us,
        "overhead_us": ours_us - bare_us,
    }


def _bare_engine_call(name: str, backend: Any, model: Any) -> Callable[[int], Any]:
    """The engine called directly, inputs prepared once: what a hand-written loop would do."""
    inputs = [model.make_inputs(1, k) for k in range(4)]
    if name == "torch":
        import torch

        tensors = [tuple(torch.from_numpy(x[n]) for n in model.input_names) for x in inputs]
        return lambda i: backend.module(*tensors[i % 4])  # inference mode entered once, outside
    if name == "onnxruntime":
        return lambda i: backend.session.run(None, inputs[i % 4])
    request = backend.request  # openvino: tensors set once, as benchmark_app's inference-only loop
    request.set_input_tensor(0, backend.to_native(inputs[0])[0])
    return lambda i: request.infer()


def _sweep(args: argparse.Namespace) -> SweepConfig:
    return SweepConfig(
        models=tuple(args.models),
        backends=tuple(args.backends),
        precisions=tuple(args.precisions),
        batch_sizes=tuple(args.batch_sizes),
        threads=(args.threads,),
        modes=tuple(args.modes),
        measure=MeasureConfig(
            min_seconds=args.seconds,
            max_seconds=args.seconds * 2,
            input_sets=args.input_sets,
            timeout_seconds=1800,
            repeats=args.rounds,
        ),
        name="crosscheck",
    )


def crosscheck(args: argparse.Namespace) -> pd.DataFrame:
    """Each cell measured by us, then at once by the engine's own tool (minutes apart at most,
    so a drifting machine moves both); rows as they finish, in crosscheck.csv."""
    out = args.out
    if (out / "ours" / "cells").is_dir() and not args.reuse:
        raise UserError(f"{out} already holds a crosscheck; pass --reuse to keep its cells")
    sweep = _sweep(args)
    rows: list[dict[str, Any]] = []
    for cell in sweep.cells():
        single = replace(
            sweep,
            models=(cell.model,),
            backends=(cell.backend,),
            precisions=(cell.precision,),
            batch_sizes=(cell.batch_size,),
            modes=(cell.mode,),
        )
        records = run_sweep(single, out / "ours", resume=True)
        record = next(r for r in records if r["cell_key"] == cell.key)
        rows.append(_compare_cell(record, args, out))
        frame = pd.DataFrame(rows)
        frame.to_csv(out / "crosscheck.csv", index=False, float_format="%.6g")
    return pd.DataFrame(rows)


def _compare_cell(record: dict[str, Any], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    key = dict(zip(CELL_AXES, cell_axes(record), strict=True))
    if record["status"] not in ("ok", "accuracy-fail"):
        return {**key, "tool": "-", "note": f"{record['status']}: {record.get('reason', '')}"}
    try:
        if record["backend"] == "openvino":
            found = crosscheck_openvino(record, args, out / "work")
        elif record["backend"] == "onnxruntime" and record["mode"] == "latency":
            found = crosscheck_onnxruntime(record, args)
        else:
            return {**key, "tool": "-", "note": "no reference tool for this backend and mode"}
    except (ValueError, OSError) as exc:  # one tool failing costs that row, not the run
        return {**key, "tool": "failed", "note": str(exc)}
    found["p50_diff_pct"] = _pct(found["ours_p50_ms"], found["tool_p50_ms"])
    found["sps_diff_pct"] = _pct(found["ours_sps"], found["tool_sps"])
    return {**key, **found, "engine_p50_ms": record.get("engine_p50_ms")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inferbench.tools.crosscheck", description=__doc__)
    parser.add_argument("--models", nargs="+", default=["resnet50", "bert-base"])
    parser.add_argument("--backends", nargs="+", default=["openvino", "onnxruntime"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["latency"], choices=["latency", "throughput"])
    parser.add_argument("--threads", type=int, default=0, help="0 = every usable core")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per cell and tool")
    parser.add_argument("--input-sets", type=int, default=4)
    parser.add_argument("--overhead", action="store_true", help="only the harness overhead on mlp")
    parser.add_argument("--reuse", action="store_true", help="keep our cells already in --out")
    parser.add_argument(
        "--rounds", type=int, default=1, help="fresh processes per cell on each side (medians compared)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default results/crosscheck-<time>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.threads = resolve_threads(args.threads)
    args.out = args.out or Path("results") / f"crosscheck-{dt.datetime.now():%Y%m%d-%H%M%S}"
    try:
        if args.overhead:
            frame = pd.DataFrame(harness_overhead(args.seconds))
            args.out.mkdir(parents=True, exist_ok=True)
            frame.to_csv(args.out / "overhead.csv", index=False, float_format="%.6g")
        else:
            frame = crosscheck(args)
    except (UserError, ValueError) as exc:
        print(f"crosscheck: error: {exc}", file=sys.stderr)
        return 2
    text = frame.to_markdown(index=False, floatfmt=".4g") if _has_tabulate() else frame.to_string()
    atomic_write_text(args.out / ("overhead.md" if args.overhead else "crosscheck.md"), text + "\n")
    print(text)
    print(f"written to {args.out}")
    return 0


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


if __name__ == "__main__":
    raise SystemExit(main())
