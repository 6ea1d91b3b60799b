"""Every profile value and flag value is type-, range- and finiteness-checked before any worker
starts: one line on stderr and exit 2 (issue 27, item 6), never exit 4 or a run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from inferbench.cli import main
from inferbench.config import SweepConfig, load_profile, profile_from_dict, resolve_threads
from inferbench.errors import UserError

# A sweep of the numpy model on the fake engine: a value that slipped through would run quickly.
PROFILE: dict[str, dict[str, str]] = {
    "sweep": {
        "models": '["tests.fakes:numpy_model"]',
        "backends": '["tests.fakes:FakeBackend"]',
        "batch_sizes": "[1]",
        "threads": "[1]",
    },
    "measure": {
        "warmup_iterations": "1",
        "warmup_seconds": "0.0",
        "min_iterations": "3",
        "min_seconds": "0.0",
        "max_seconds": "1.0",
        "precision": "0.0",
        "tail_samples": "3",
        "timeout_seconds": "60.0",
    },
    "accuracy": {},
    "serve": {},
}
TOO_MANY_THREADS = str(resolve_threads(0) + 1)


def _profile(tmp_path: Path, section: str, key: str, value: str) -> Path:
    """PROFILE as TOML with `section.key = value` (a TOML literal) set."""
    data = {name: dict(table) for name, table in PROFILE.items()}
    data[section][key] = value
    lines = []
    for name, table in data.items():
        lines += [f"[{name}]", *(f"{k} = {v}" for k, v in table.items())]
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert (code, len(lines)) == (2, 1), err  # one line, no traceback: a usage error, not exit 4
    assert lines[0].startswith("inferbench: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        # The reproductions of issue 27: exit 4, or accepted and run.
        ("measure", "timeout_seconds", "inf", "measure.timeout_seconds must be finite; got inf"),
        ("measure", "repeats", "1.5", "measure.repeats must be an integer; got 1.5"),
        ("accuracy", "max_rel_l2", "5", "accuracy.max_rel_l2 must be a table"),
        ("measure", "max_seconds", "-1", "measure.max_seconds must be between 0 and 604800 seconds; got -1"),
        ("sweep", "threads", f"[{TOO_MANY_THREADS}]", f"threads {TOO_MANY_THREADS} is more than the"),
        ("sweep", "threads", "[100000]", "pass --oversubscribe"),
        ("sweep", "batch_sizes", "[1e9]", "batch size must be a positive integer; got 1000000000.0"),
        ("measure", "streams", "1e6", "measure.streams must be an integer; got 1000000.0"),
        ("accuracy", "calibration_samples", "true", "calibration_samples must be a positive integer"),
        # Their neighbours.
        ("measure", "timeout_seconds", "nan", "measure.timeout_seconds must be finite; got nan"),
        ("measure", "timeout_seconds", "1e300", "measure.timeout_seconds must be between 0 and 604800"),
        ("measure", "warmup_seconds", "-inf", "measure.warmup_seconds must be finite"),
        ("measure", "max_seconds", "0", "measure.max_seconds must be > 0; got 0"),
        ("measure", "min_seconds", "5.0", "max_seconds must be >= measure.min_seconds (5.0); got 1.0"),
        ("measure", "min_iterations", "true", "measure.min_iterations must be a number; got True"),
        ("measure", "min_iterations", "2.0", "measure.min_iterations must be an integer; got 2.0"),
        ("measure", "streams", "1000000", "measure.streams must be at most 1024"),
        ("measure", "seed", "-1", "measure.seed must be >= 0; got -1"),
        ("measure", "stable_tolerance", "nan", "measure.stable_tolerance must be finite"),
        ("measure", "precision", '"1%"', "measure.precision must be a number; got '1%'"),
        ("accuracy", "max_rel_l2", "{ fp32 = nan }", "accuracy.max_rel_l2.fp32 must be a number > 0"),
        ("accuracy", "max_rel_l2", "{ int8 = -inf }", "accuracy.max_rel_l2.int8 must be a number > 0"),
        ("accuracy", "max_rel_l2", '{ fp32 = "tight" }', "accuracy.max_rel_l2.fp32 must be a number > 0"),
        ("accuracy", "calibration_samples", "2.5", "calibration_samples must be a positive integer; got 2.5"),
        ("accuracy", "eval_samples", "false", "eval_samples must be a positive integer; got False"),
        ("accuracy", "min_lowp_share", "nan", "min_lowp_share must be between 0 and 1; got nan"),
        ("sweep", "threads", "[1.5]", "threads must be a non-negative integer (0 = all cores); got 1.5"),
        ("sweep", "threads", "[true]", "threads must be a non-negative integer"),
        ("sweep", "batch_sizes", "[true]", "batch size must be a positive integer; got True"),
        ("sweep", "models", "[1]", "models are names or paths; got 1"),
        ("sweep", "backends", '[""]', "backends are names or paths; got ''"),
        ("sweep", "oversubscribe", '"yes"', "oversubscribe must be true or false; got 'yes'"),
        # Serve mode (issue 29): SLO, rate, batching and arrivals.
        ("sweep", "modes", '["serve"]', "serve mode needs a latency target: --slo-ms MS"),
        ("serve", "slo_ms", "0", "serve.slo_ms must be a positive number of milliseconds; got 0"),
        ("serve", "slo_ms", "nan", "serve.slo_ms must be a positive number of milliseconds; got nan"),
        ("serve", "max_batch", "[0]", "serve.max_batch must be integers >= 1; got 0"),
        ("serve", "max_batch", "[]", "serve.max_batch must be a non-empty list"),
        ("serve", "max_wait_ms", "[-1.0]", "serve.max_wait_ms must be numbers >= 0; got -1.0"),
        (
            "serve",
            "arrival",
            '"weibull"',
            "serve.arrival must be one of poisson, constant, gamma; got 'weibull'",
        ),
        ("serve", "burstiness", "2.0", "serve.burstiness applies to gamma arrivals only"),
        ("serve", "percentile", "1.0", "serve.percentile must be between 0 and 1"),
        ("serve", "start_qps", "0", "serve.start_qps must be a positive number of requests per second"),
        ("serve", "queries", "1.5", "serve.queries must be an integer >= 0; got 1.5"),
        ("serve", "rate", "5", "unknown [serve] key(s) ['rate']"),
    ],
)
def test_bad_profile_values_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, section: str, key: str, value: str, expected: str
) -> None:
    profile = _profile(tmp_path, section, key, value)
    argv = ["run", "--profile", str(profile), "--results-dir", str(tmp_path / "results")]
    line = _error_line(capsys, [*argv, "--no-history", "--no-report"])
    assert expected in line
    assert not (tmp_path / "results").exists()  # refused before any run folder or worker


RUN = ["run", "-m", "tests.fakes:numpy_model", "-b", "tests.fakes:FakeBackend", "--no-history"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([*RUN, "--threads", TOO_MANY_THREADS], "pass --oversubscribe"),
        ([*RUN, "--threads", "1.5"], "threads must be integers; got 1.5"),
        ([*RUN, "--batch-size", "1e9"], "batch sizes must be integers; got 1e9"),
        ([*RUN, "--repeats", "1.5"], "argument --repeats: invalid int value: '1.5'"),
        ([*RUN, "--repeats", "0"], "--repeats must be >= 1; got 0"),
        ([*RUN, "--budget", "9" * 400], "budget must be a finite duration"),
        ([*RUN, "--budget=-5m"], "budget must look like 15m"),
        ([*RUN, "--budget", "0s"], "budget must be positive"),
        ([*RUN, "--mode", "serve"], "serve mode needs a latency target: --slo-ms MS"),
        ([*RUN, "--mode", "serve", "--slo-ms", "0"], "serve.slo_ms must be a positive number"),
        ([*RUN, "--mode", "serve", "--slo-ms=-5"], "serve.slo_ms must be a positive number"),
        ([*RUN, "--mode", "serve", "--slo-ms", "fast"], "--slo-ms must be a number; got 'fast'"),
        ([*RUN, "--mode", "serve", "--slo-ms", "inf"], "--slo-ms must be a finite number"),
        (
            [*RUN, "--mode", "serve", "--slo-ms", "50", "--max-batch", "1,0"],
            "serve.max_batch must be integers >= 1",
        ),
        ([*RUN, "--slo-ms", "50", "--max-batch", "4.5"], "--max-batch must be integers; got 4.5"),
        ([*RUN, "--slo-ms", "50", "--max-wait-ms=-2"], "serve.max_wait_ms must be numbers >= 0; got -2.0"),
        (
            [*RUN, "--slo-ms", "50", "--arrival", "bursty"],
            "serve.arrival must be one of poisson, constant, gamma",
        ),
        (
            [*RUN, "--slo-ms", "50", "--arrival", "gamma", "--burstiness", "0"],
            "serve.burstiness must be a positive",
        ),
        ([*RUN, "--slo-ms", "50", "--serve-queries", "1,2"], "--serve-queries takes one value; got 2"),
        (["ab", "--base", "HEAD", "--mode", "serve"], "serve mode needs a latency target"),
        (["ab", "--base", "HEAD", "--slo-ms", "0"], "serve.slo_ms must be a positive number"),
        (["ab", "--base", "HEAD", "--rounds", "1"], "--rounds must be >= 2"),
        (["ab", "--base", "HEAD", "--rounds", "2.5"], "argument --rounds/-k: invalid int value: '2.5'"),
        (["ab", "--base", "HEAD", "--alpha", "nan"], "argument --alpha: expected a finite number; got 'nan'"),
        (["ab", "--base", "HEAD", "--alpha", "1.5"], "alpha must be between 0 and 1; got 1.5"),
        (["ab", "--base", "HEAD", "--confidence", "1"], "confidence must be between 0 and 1; got 1.0"),
        (
            ["ab", "--base", "HEAD", "--confidence", "nan"],
            "argument --confidence: expected a finite number; got 'nan'",
        ),
        (["ab", "--base", "HEAD", "--max-regression", "inf"], "expected a finite percentage like 5%"),
        (["ab", "--base", "HEAD", "--threshold", "p99=nan%"], "expected a finite percentage like 5%"),
        (["ab", "--base", "HEAD", "--threads", TOO_MANY_THREADS], "pass --oversubscribe"),
        (["compare", "a", "b", "--alpha", "inf"], "argument --alpha: expected a finite number; got 'inf'"),
        (["compare", "a", "b", "--alpha", "0"], "alpha must be between 0 and 1; got 0.0"),
        (["compare", "a", "b", "--max-regression", "nan"], "expected a finite percentage like 5%"),
        (["compare", "a", "b", "--max-regression", "150%"], "threshold must be between 0% and 100%"),
        (["history", "--min-change", "nan"], "expected a finite percentage like 1% or 0.01; got 'nan'"),
        (["history", "--min-change", "inf%"], "expected a finite percentage like 1%"),
        (["history", "--penalty", "nan"], "argument --penalty: expected a finite number; got 'nan'"),
        (["history", "--penalty", "inf"], "argument --penalty: expected a finite number; got 'inf'"),
        (["peak", "--threads", TOO_MANY_THREADS], "threads must be between 0 (all cores) and the"),
        (["peak", "--threads", "-1"], "threads must be between 0 (all cores) and the"),
    ],
)
def test_bad_flag_values_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], expected: str
) -> None:
    where = {
        "run": ["--results-dir", str(tmp_path / "results"), "--no-report"],
        "history": ["--history", str(tmp_path / "h.sqlite"), "--no-html"],
        "peak": ["--cache-dir", str(tmp_path / "cache")],
    }
    assert expected in _error_line(capsys, [*argv, *where.get(argv[0], [])])
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_oversubscribe_allows_threads_beyond_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    many = resolve_threads(0) + 1
    with pytest.raises(UserError, match="more than the"):
        SweepConfig(models=("m",), backends=("b",), threads=(many,))
    assert SweepConfig(models=("m",), backends=("b",), threads=(many,), oversubscribe=True).threads == (many,)
    sweep = {"models": ["m"], "backends": ["b"], "threads": [many], "oversubscribe": True}
    assert profile_from_dict({"sweep": sweep}).oversubscribe
    # The flag: `run --oversubscribe` reaches the sweep's overrides.
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        "inferbench.commands.run.run_command", lambda request: seen.update(request=request) or 0
    )
    assert main(["run", "--threads", str(many), "--oversubscribe", "--no-history"]) == 0
    config = load_profile("smoke").with_overrides(seen["request"].selection)
    assert config.oversubscribe and config.threads == (many,)


def test_memory_sized_batches_are_warned_about_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    huge = 1_000_000_000  # 1e9 samples at even 1 KiB each: about 1 TB of inputs
    sweep = {"models": ["m"], "backends": ["b"], "batch_sizes": [1, huge]}
    with caplog.at_level(logging.WARNING, logger="inferbench.config"):
        config = profile_from_dict({"sweep": sweep})
    assert config.batch_sizes == (1, huge)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"batch size {huge} is memory-sized"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inferbench.config"):
        config.with_overrides(batch_sizes=[8])  # an ordinary batch: nothing to say
        assert not caplog.records
        config.with_overrides(batch_sizes=[huge])  # --batch-size goes through here
    assert len(caplog.records) == 1 and "memory-sized" in caplog.records[0].getMessage()
