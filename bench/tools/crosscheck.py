"""Our numbers beside the engines' own tools, on the same files, inputs, precision and threads.

- OpenVINO: `benchmark_app` (ships in the openvino wheel) on the IR our backend compiled, with
  our inputs (`-i name:file.npy,...`), static shapes and the same CPU properties
  (`-load_config`). Latency mode: its sync loop's median (the plugin's own per-request
  latency) and throughput beside ours; throughput mode: its async run with the THROUGHPUT hint.
- ONNX Runtime: a bare `run_with_iobinding` loop on the ONNX file our backend loaded, with the
  same session options, timed per call: ORT's own fastest way to call the engine from Python.
- Harness overhead: on `mlp` (microseconds per call), our timed loop through each backend
  against the bare engine call in a tight loop, and our loop around a no-op.

Each cell runs `--rounds` rounds, ours and the tool's in alternating order as `ab`'s rounds
(ours first in even rounds, theirs first in odd ones), each side a fresh process per round.
Each round gives one ratio ours/theirs (p50 and samples/s); the cell's row has their geometric
mean and a 95% Student-t interval over rounds (`inferbench.tools.paired_rounds`), and
`target_met`: that interval lies inside 1 ± `--target-pct` (2%).

`make crosscheck ARGS="--models resnet50 --batch-sizes 1"` or
`python -m inferbench.tools.crosscheck --help`. Writes crosscheck.csv and crosscheck.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferbench.config import CELL_AXES, Cell, MeasureConfig, SweepConfig, cell_axes, resolve_threads
from inferbench.errors import UserError
from inferbench.status import MEASURED
from inferbench.sweep.procs import python_command, worker_env
from inferbench.sweep.runner import run_sweep
from inferbench.tools.harness_overhead import harness_overhead
from inferbench.tools.paired_rounds import METHOD, OURS, THEIRS, Measurement, interleave, paired_ratio
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


def benchmark_app_round(
    record: dict[str, Any], args: argparse.Namespace, work: Path
) -> Callable[[int], Measurement]:
    """One fresh benchmark_app process per call, on the IR our round-0 process compiled."""
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

    def one_round(k: int) -> Measurement:
        done = _run_tool(command, record["threads"], args.seconds)
        (cell_dir / f"benchmark_app-{k}.log").write_text(done.stdout + done.stderr)
        found = parse_benchmark_app(done.stdout)
        return {
            # Async request latency depends on queueing: throughput mode compares the rate only.
            "p50_ms": found["median_ms"] if mode == "latency" else math.nan,
            # Its FPS counts a batch as one frame unless the input layout names N (2-D token
            # inputs do not): samples/s from its own iteration count and duration instead.
            "sps": found["iterations"] * batch / (found["duration_ms"] / 1e3),
            "fps_printed": found["throughput_fps"],
        }

    return one_round


def ort_loop_round(record: dict[str, Any], args: argparse.Namespace) -> Callable[[int], Measurement]:
    """One fresh bare IO-binding loop process per call (`inferbench.tools.ort_loop`), on the
    file our backend ran, same session options, inputs and thread environment."""
    command = python_command(
        "inferbench.tools.ort_loop",
        *(record["model"], record["artifact_path"], str(record["batch_size"])),
        *(str(record["threads"]), f"{args.seconds:g}", str(args.input_sets)),
    )

    def one_round(k: int) -> Measurement:
        done = _run_tool(command, record["threads"], args.seconds)
        if done.returncode != 0:
            raise ValueError(f"ORT loop failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        found = json.loads(done.stdout.strip().splitlines()[-1])
        return {"p50_ms": float(found["p50_ms"]), "sps": float(found["sps"])}

    return one_round


def _run_tool(command: list[str], threads: int, seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=worker_env(threads),
        timeout=seconds * 10 + 300,
    )


def tool_for(cell: Cell) -> str | None:
    """The engine's own tool for this cell, or None where there is none to compare with."""
    if cell.backend == "openvino":
        return "benchmark_app"
    if cell.backend == "onnxruntime" and cell.mode == "latency":
        return "ort io-binding loop"
    return None


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
            repeats=1,  # one process per round: the rounds are the repeats
        ),
        name="crosscheck",
    )


class SideFailed(Exception):
    """Our side of a round produced no number (its status says why)."""


def crosscheck(args: argparse.Namespace) -> pd.DataFrame:
    """Per cell, `--rounds` rounds of ours and the engine's tool in alternating order, each a
    fresh process; rows as cells finish, in crosscheck.csv."""
    out = args.out
    if any((out / "ours").glob("round-*/cells")) and not args.reuse:
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
        rows.append(_crosscheck_cell(cell, single, args))
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(out / "crosscheck.csv", index=False, float_format="%.6g")
    return pd.DataFrame(rows)


def _crosscheck_cell(cell: Cell, single: SweepConfig, args: argparse.Namespace) -> dict[str, Any]:
    key = dict(zip(CELL_AXES, cell_axes(asdict(cell)), strict=True))
    tool = tool_for(cell)
    if tool is None:
        return {**key, "tool": "-", "note": "no reference tool for this backend and mode"}
    records: list[dict[str, Any]] = []
    theirs: list[Callable[[int], Measurement]] = []

    def ours_round(k: int) -> Measurement:
        found = run_sweep(single, args.out / "ours" / f"round-{k}", resume=True)
        record = next(r for r in found if r["cell_key"] == cell.key)
        if record["status"] not in MEASURED:
            raise SideFailed(f"{record['status']}: {record.get('reason', '')}")
        records.append(record)
        return {"p50_ms": record["latency_p50_ms"], "sps": record["throughput_sps"]}

    def theirs_round(k: int) -> Measurement:
        if not theirs:  # round 0 runs ours first, so the files our engine ran exist by now
            theirs.append(
                benchmark_app_round(records[0], args, args.out / "work")
                if cell.backend == "openvino"
                else ort_loop_round(records[0], args)
            )
        return theirs[0](k)

    try:
        rounds = interleave(args.rounds, {OURS: ours_round, THEIRS: theirs_round})
    except SideFailed as exc:
        return {**key, "tool": "-", "note": str(exc)}
    except (ValueError, OSError, subprocess.TimeoutExpired) as exc:  # a tool failing costs its row
        return {**key, "tool": "failed", "note": str(exc)}
    return {**key, "tool": tool, **paired_row(rounds, cell.mode, args.target_pct)}


def paired_row(rounds: dict[str, list[Measurement]], mode: str, target_pct: float) -> dict[str, Any]:
    """A cell's columns from its rounds: each side's median, the paired ratio ours/theirs of p50
    and of samples/s with its interval, and whether the interval of the cell's own metric (p50
    in latency mode, samples/s in throughput mode) lies inside 1 ± target_pct."""
    row: dict[str, Any] = {"rounds": len(rounds[OURS]), "interval": METHOD}
    for metric, column in (("p50", "p50_ms"), ("sps", "sps")):
        ours = [m[column] for m in rounds[OURS]]
        tool = [m[column] for m in rounds[THEIRS]]
        paired = paired_ratio(ours, tool)
        row[f"ours_{column}"] = _median(ours)
        row[f"tool_{column}"] = _median(tool)
        row[f"{metric}_ratio"] = paired.ratio
        row[f"{metric}_ratio_low"] = paired.low
        row[f"{metric}_ratio_high"] = paired.high
        row[f"{metric}_half_width_pct"] = paired.half_width_pct
        row[f"{metric}_diff_pct"] = 100 * (paired.ratio - 1)
        if metric == ("p50" if mode == "latency" else "sps"):
            row["target_pct"] = target_pct
            row["target_met"] = paired.inside(target_pct)
    if any("fps_printed" in m for m in rounds[THEIRS]):
        row["tool_fps_printed"] = _median([m["fps_printed"] for m in rounds[THEIRS]])
    return row


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


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
        "--rounds",
        type=int,
        default=6,
        help="rounds per cell: one fresh process of ours and one of the tool's, in alternating order",
    )
    parser.add_argument(
        "--target-pct",
        type=float,
        default=2.0,
        help="a cell meets the target when its ratio's interval lies inside 1 ± this (%%)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default results/crosscheck-<time>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.threads = resolve_threads(args.threads)
    if args.rounds < 1 or not args.target_pct > 0:
        print(
            f"crosscheck: error: --rounds must be >= 1 and --target-pct > 0; got {args.rounds}, "
            f"{args.target_pct:g}",
            file=sys.stderr,
        )
        return 2
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
    if not args.overhead:
        text += "\n\n" + target_line(frame, args.target_pct)
    atomic_write_text(args.out / ("overhead.md" if args.overhead else "crosscheck.md"), text + "\n")
    print(text)
    print(f"written to {args.out}")
    return 0


def target_line(frame: pd.DataFrame, target_pct: float) -> str:
    """The closing line of crosscheck.md: how the intervals were made and which cells met the
    target (p50 in latency mode, samples/s in throughput mode)."""
    judged = frame[frame["target_met"].notna()] if "target_met" in frame else frame.iloc[:0]
    met = int(judged["target_met"].astype(bool).sum())
    return (
        f"Ratios are ours/theirs, paired round by round (sides alternating); intervals: 95% {METHOD}. "
        f"Target: the interval inside 1 ± {target_pct:g}%; met on {met} of {len(judged)} compared cell(s)."
    )


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


if __name__ == "__main__":
    raise SystemExit(main())
