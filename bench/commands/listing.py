"""`inferbench list`: the backends (each with whether it runs here, and why not), models and profiles."""

from __future__ import annotations

import argparse

from inferbench.commands.base import Command, Subparsers


class Listing(Command):
    @classmethod
    def setup_arguments(cls, subparsers: Subparsers) -> None:
        cls.add_parser(subparsers, "list", help="backends (with availability), models and profiles")

    @classmethod
    def run_from_args(cls, args: argparse.Namespace) -> int:
        return list_command()


def list_command() -> int:
    from rich.console import Console
    from rich.table import Table

    from inferbench.backends import backend_names, load_backend
    from inferbench.config import profile_names
    from inferbench.models import BUILTIN_MODELS

    out = Console()
    table = Table(title="backends on this machine")
    for col in ("backend", "available", "precisions", "reason"):
        table.add_column(col)
    for name in backend_names():
        cls = load_backend(name)
        avail = cls.availability()
        table.add_row(name, "yes" if avail.ok else "no", ", ".join(sorted(cls.precisions)), avail.reason)
    out.print(table)
    out.print("models: " + ", ".join(BUILTIN_MODELS) + " (or a .onnx path, or package.module:factory)")
    out.print("profiles: " + ", ".join(profile_names()))
    return 0
