"""`inferbench doctor`: what this machine can run, CPU features first, then every backend x
precision with the reason for each gap."""

from __future__ import annotations

import argparse
import os
from typing import Any

from inferbench.commands.base import Command, Subparsers
from inferbench.commands.peak import slowdown_text


class Doctor(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        cls.add_parser(
            subparsers, "doctor", help="this CPU's capabilities and the backend x precision matrix"
        )

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        return doctor_command()


def doctor_command() -> int:
    """The CPU's answers come from the capability model (inferbench.machine.capability), with
    an emulated precision's slowdown when this machine's ceilings are cached (`inferbench
    peak`); model-specific limits are in the table's notes."""
    from rich.console import Console

    from inferbench.config import resolve_threads
    from inferbench.machine import capability
    from inferbench.machine.peak import load_peaks
    from inferbench.sweep.runner import default_cache_dir

    out = Console()
    cpu = capability.with_engine_reports(capability.this_cpu())
    described = capability.describe(cpu)
    _print_cpu(out, cpu, described)
    peaks = load_peaks(default_cache_dir(), resolve_threads(0))
    notes: dict[str, int] = {}  # footnote text -> number; keeps the table narrow
    out.print(_precision_table(cpu, peaks, notes))
    for text, number in notes.items():
        out.print(f"({number}) {text}", soft_wrap=True, markup=False, highlight=False)
    if any(level == capability.EMULATED for e in described["support"].values() for level in _levels(e)):
        out.print("emulated precisions are `unsupported` in a sweep unless --allow-emulated", markup=False)
    return 0


def _print_cpu(out: Any, cpu: Any, described: dict[str, Any]) -> None:
    """The CPU, its instruction sets and caps, its native low-precision support, and the GPU."""
    from rich.markup import escape

    from inferbench.machine import capability

    flags = ", ".join(described["features"]) or "none listed"
    summary = f"{cpu.model} ({cpu.arch}), {os.cpu_count()} logical CPUs; {cpu.isa_summary()}"
    out.print(f"CPU: {summary}", markup=False)
    out.print(f"ISA: {flags}", markup=False)
    for variable, value in cpu.caps.items():
        honoured = capability.CAPS_HONOURED_BY.get(
            variable, capability.CAPS_HONOURED_BY["ONEDNN_MAX_CPU_ISA"]
        )
        # ATEN_CPU_CAPABILITY caps ATen's elementwise kernels and moves no engine's precision.
        where = f"honoured by {', '.join(honoured)}" if honoured else "torch's own ATen kernels only"
        out.print(f"capped by {variable}={value} ({where})", markup=False)
    for problem in cpu.problems:
        out.print(problem, markup=False)
    natives = (
        f"native bf16: {described['native_bf16']}   native int8 dot product: {described['native_int8_dot']}"
    )
    out.print(natives)
    out.print(f"GPU: {escape(_gpu_line())}")


def _precision_table(cpu: Any, peaks: dict[str, Any] | None, notes: dict[str, int]) -> Any:
    """Backend x precision: yes, emulated (with its cost) or no, each gap's reason a numbered
    footnote collected in `notes`."""
    from rich.markup import escape
    from rich.table import Table

    from inferbench.backends import backend_names, load_backend
    from inferbench.config import PRECISIONS
    from inferbench.machine import capability
    from inferbench.models import ModelRef

    table = Table(title="backend x precision on this machine")
    table.add_column("backend")
    for precision in PRECISIONS:
        table.add_column(precision)
    probe = ModelRef("resnet50", "builtin")

    def footnote(text: str) -> str:
        return f"({notes.setdefault(text, len(notes) + 1)})" if text else ""

    for name in backend_names():
        cls = load_backend(name)
        avail = cls.availability()
        cells = []
        for precision in PRECISIONS:
            reason = avail.reason if not avail.ok else cls.unsupported_reason(probe, precision)
            found = None if reason else cls.cpu_support(cpu, precision)
            if found and found.level == capability.UNAVAILABLE:
                reason = found.why
            if reason:
                cells.append(f"[red]no[/] {footnote(reason)}")
            elif found and found.level == capability.EMULATED:
                cells.append(f"[yellow]emulated[/] ({slowdown_text(peaks, precision)}) {footnote(found.why)}")
            else:
                cells.append(f"[green]yes[/] {footnote(cls.precision_notes.get(precision, ''))}".strip())
        table.add_row(escape(name), *cells)
    return table


def _levels(support: dict[str, dict[str, str]]) -> list[str]:
    return [entry["level"] for entry in support.values()]


def _gpu_line() -> str:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "unknown (torch not installed)"
    from inferbench.backends.cuda import gpu_info

    gpu = gpu_info()
    if not gpu:
        return "none usable (no CUDA device, or a CPU-only torch build)"
    facts = (f"compute capability {gpu.get('compute_capability')}", f"driver {gpu.get('driver')}")
    return f"{gpu.get('name')}, " + ", ".join(facts)
