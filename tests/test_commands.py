"""The command objects: one per subcommand, the parser built from them, and the selection
flags read once into the same `Selection` by `run` and `ab`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inferbench.cli import build_parser, main
from inferbench.commands import COMMANDS, Command
from inferbench.commands.run import RunRequest
from inferbench.config import Selection


def _subcommands() -> dict[str, Any]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


def test_the_parser_lists_every_command_object_in_order() -> None:
    names = list(_subcommands())
    assert names == ["run", "report", "compare", "merge", "ab", "list", "peak", "doctor", "history", "export"]
    assert len(COMMANDS) == len(names) and all(issubclass(c, Command) for c in COMMANDS)
    for name, parser in _subcommands().items():
        func = parser.get_default("func")
        assert func is not None and func.__self__ in COMMANDS, name


def test_run_and_ab_read_the_same_selection_from_the_same_flags() -> None:
    flags = ["-m", "mlp,tiny-cnn", "-b", "torch", "--batch-size", "1", "--batch-size", "8", "--threads", "1"]
    flags += ["--mode", "latency", "--pin", "--backend-option", "torch.bf16_mode=full"]
    from inferbench.commands.selection import selection_from_args

    run = selection_from_args(build_parser().parse_args(["run", *flags]))
    ab = selection_from_args(build_parser().parse_args(["ab", *flags]))
    assert (
        run
        == ab
        == Selection(
            models=("mlp", "tiny-cnn"),
            backends=("torch",),
            batch_sizes=(1, 8),
            threads=(1,),
            modes=("latency",),
            pin=True,
            backend_options={"torch": {"bf16_mode": "full"}},
        )
    )
    # Flags not given stay out of the overrides an ab side's agent receives.
    assert set(ab.overrides()) == {
        "models",
        "backends",
        "batch_sizes",
        "threads",
        "modes",
        "pin",
        "backend_options",
    }


def test_run_hands_one_request_to_its_plain_function(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INFERBENCH_HISTORY", raising=False)
    seen: list[RunRequest] = []
    monkeypatch.setattr("inferbench.commands.run.run_command", lambda request: seen.append(request) or 0)
    argv = ["run", "--profile", "smoke", "--seq-len", "32,64", "--shape", "x=?x3", "--run-id", "r"]
    assert main([*argv, "--results-dir", str(tmp_path), "--no-report", "--repeats", "2"]) == 0
    (request,) = seen
    assert request.profile == "smoke" and request.run_id == "r" and request.repeats == 2
    assert request.results_dir == tmp_path and request.reports_dir is None and request.peak == "cached"
    assert request.history == str(tmp_path / "history.sqlite")
    assert request.selection.shapes == ("seq_len=32", "seq_len=64")
    assert request.selection.input_shapes == {"x": "?x3"}
    assert request.selection.models is None  # the profile's own
