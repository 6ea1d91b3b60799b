"""Secrets never reach a log, a run folder or an echoed command line (issue 27, item 7)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from inferbench.redact import RedactingFilter, redact

PASSWORD = "s3cret-Pw"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"--history postgresql://bench:{PASSWORD}@db:5432/h", "--history postgresql://bench:***@db:5432/h"),
        (f"postgresql+psycopg://bench:{PASSWORD}@db/h", "postgresql+psycopg://bench:***@db/h"),
        (f"postgresql://bench:p@{PASSWORD}@db/h", "postgresql://bench:***@db/h"),  # an unescaped @
        (f"https://{PASSWORD}@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
        (f"run --token {PASSWORD} -m mlp", "run --token *** -m mlp"),
        (f"run --api-key={PASSWORD}", "run --api-key=***"),
        (f"HF_TOKEN={PASSWORD} GITHUB_TOKEN={PASSWORD}", "HF_TOKEN=*** GITHUB_TOKEN=***"),
        (f"host=db password={PASSWORD} dbname=h", "host=db password=*** dbname=h"),
        (f"https://h/api?access_token={PASSWORD}&page=2", "https://h/api?access_token=***&page=2"),
        (f"{{'user': 'bench', 'password': '{PASSWORD}'}}", "{'user': 'bench', 'password': '***'}"),
        (f"Authorization: Bearer {PASSWORD}", "Authorization: Bearer ***"),
        ("clone with ghp_" + "a1" * 18, "clone with ***"),
    ],
)
def test_redact_masks_secrets_and_keeps_the_rest(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////home/me/results/history.sqlite",
        "postgresql://bench@db/h",  # no password given: only a (harmless-looking) user
        "max_tokens=5 tokenizer=bert threads=2 seq_len=128 https://example.com/a@b",
        'FATAL: password authentication failed for user "bench"',
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    if "bench@db" in text:
        assert redact(text) == "postgresql://***@db/h"  # a lone user may be a token: masked
    else:
        assert redact(text) == text


def test_log_records_are_redacted_message_arguments_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.redact")
    redacting = RedactingFilter()
    caplog.handler.addFilter(redacting)
    url = f"postgresql://bench:{PASSWORD}@db/h"
    try:
        with caplog.at_level(logging.WARNING, logger="tests.redact"):
            logger.warning("history not recorded in %s", url)
            try:
                raise ConnectionError(f"cannot reach {url}")
            except ConnectionError:
                logger.exception("append failed")
    finally:  # the filter rewrites records: it must not outlive this test on a shared handler
        caplog.handler.removeFilter(redacting)
    assert PASSWORD not in caplog.text
    assert "postgresql://bench:***@db/h" in caplog.text and "ConnectionError: cannot reach" in caplog.text


# One cell of the numpy model on the fake engine, timed briefly.
FAST_PROFILE = """
[sweep]
models = ["tests.fakes:numpy_model"]
backends = ["tests.fakes:FakeBackend"]
threads = [1]
[measure]
warmup_iterations = 1
warmup_seconds = 0.0
min_iterations = 3
min_seconds = 0.0
max_seconds = 1.0
precision = 0.0
tail_samples = 3
"""


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "inferbench", "run", *argv]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_password_url_reaches_no_file_and_no_output(tmp_path: Path) -> None:
    """Two runs with `--history` holding a password: one whose history append fails (a warning
    naming the database), one that crashes (exit 4, runner.log with the command line and the
    traceback). No file under the results and reports folders, and neither run's output, holds
    the password."""
    root = Path(__file__).resolve().parents[1]
    profile = tmp_path / "fast.toml"
    profile.write_text(FAST_PROFILE)
    url = f"postgresql://bench:{PASSWORD}@127.0.0.1:9/history"  # port 9: refused at once
    argv = ["--profile", str(profile), "--history", url, "--reports-dir", str(tmp_path / "reports")]
    argv += ["--results-dir", str(tmp_path / "results")]
    appended = _run([*argv, "--run-id", "appended"], root)
    assert appended.returncode == 0, appended.stderr
    assert "history not recorded in postgresql+psycopg://bench:***@127.0.0.1:9/history" in appended.stderr
    # results.csv as a folder: writing the table fails, an internal error with the traceback logged.
    (tmp_path / "results" / "crashed" / "results.csv").mkdir(parents=True)
    crashed = _run([*argv, "--run-id", "crashed"], root)
    assert crashed.returncode == 4, crashed.stderr
    log = tmp_path / "results" / "crashed" / "logs" / "runner.log"
    assert "--history postgresql://bench:***@127.0.0.1:9/history" in log.read_text()  # echoed, masked
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 5  # cells, configs, environments, logs, reports
    leaked = [str(p) for p in written if PASSWORD.encode() in p.read_bytes()]
    assert not leaked
    for run in (appended, crashed):
        assert PASSWORD not in run.stdout + run.stderr
