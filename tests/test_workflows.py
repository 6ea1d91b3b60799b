"""The GitHub workflows: zizmor's security analysis and GitHub's schema find nothing, and the
performance gate keeps the change under test away from its own verdict (the base's harness
measures the head's folder; the comment job runs no pull-request code; the exit code is checked
as a number before any shell or script uses it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inferbench.layout import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def _tool(name: str) -> str:
    """A dev-extra tool: beside this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (pip install -e '.[dev]')")
    return found


def _load(path: Path) -> dict[str, Any]:
    # YAML 1.2 (ruamel, which check-jsonschema brings): PyYAML's 1.1 reads the key `on` as True.
    yaml = pytest.importorskip("ruamel.yaml", reason="ruamel.yaml not installed (the dev extra)")
    data: dict[str, Any] = yaml.YAML(typ="safe", pure=True).load(path.read_text())
    return data


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _step(job: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in job["steps"] if step.get("name", "").startswith(name))


def test_there_are_workflows() -> None:
    assert {p.name for p in FILES} >= {"perf.yml", "tests.yml", "nightly.yml", "sharded-sweep.yml"}


def test_zizmor_finds_nothing() -> None:
    """GitHub Actions security analysis (template injection, unpinned actions, credentials left
    in checkouts, broad permissions, dangerous triggers), offline: no finding, none suppressed
    in the files."""
    done = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any("zizmor: ignore" in p.read_text() for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_workflow_matches_githubs_schema(path: Path) -> None:
    done = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_actions_pinned_to_a_commit_with_its_version(path: Path) -> None:
    """A tag can be moved to other code; a commit cannot. The comment says which release it is."""
    uses = [line.strip() for line in path.read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert uses
    for line in uses:
        assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+(\.\d+)*", line), line


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_no_expression_is_pasted_into_code(path: Path) -> None:
    """Values reach shell and scripts through `env`, never as `${{ }}` text inside the code."""
    workflow = _load(path)
    for step in _steps(workflow):
        assert "${{" not in step.get("run", ""), step
        assert "${{" not in step.get("with", {}).get("script", ""), step
        if "actions/checkout" in step.get("uses", ""):
            assert step["with"]["persist-credentials"] is False, step


def test_the_gate_runs_the_bases_harness_on_the_heads_folder() -> None:
    workflow = _load(WORKFLOWS / "perf.yml")
    assert workflow["permissions"] == {}
    gate = workflow["jobs"]["gate"]
    assert gate["permissions"] == {"contents": "read"}
    checkouts = {
        s["with"]["path"]: s["with"] for s in gate["steps"] if "actions/checkout" in s.get("uses", "")
    }
    assert set(checkouts) == {"base", "head"}
    assert checkouts["base"]["ref"] == "${{ steps.base.outputs.sha }}"
    run = _step(gate, "Gate")
    assert run["working-directory"] == "base"
    assert 'make gate HW=cpu BASE="$BASE_SHA" HEAD_SRC="$GITHUB_WORKSPACE/head"' in run["run"]
    # Nothing from the head's tree is run or read as a setting: only its packages are installed
    # (into their own environment) when its dependency list differs.
    for step in gate["steps"]:
        assert not step.get("working-directory", "").startswith("head"), step
        code = step.get("run", "")
        assert not re.search(r"make\s+-C\s+\S*head|head/(Makefile|results|bench)", code), step


def test_the_comment_job_runs_no_pull_request_code() -> None:
    workflow = _load(WORKFLOWS / "perf.yml")
    comment = workflow["jobs"]["comment"]
    assert comment["needs"] == "gate"
    assert comment["permissions"] == {"pull-requests": "write"}
    uses = [s.get("uses", "").split("@")[0] for s in comment["steps"]]
    assert uses == ["actions/download-artifact", "actions/github-script"]
    assert not any("run" in s for s in comment["steps"])
    script = comment["steps"][1]["with"]["script"]
    assert "/^[0-9]+$/.test(raw)" in script  # the artifact's exit code, checked before use
    assert "c.user.login === bot" in script and "c.body.startsWith(marker)" in script
    # No other job can write.
    others = [j for name, j in workflow["jobs"].items() if name != "comment"]
    assert all("write" not in str(j.get("permissions", {})) for j in others)


def _bash(script: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    environ = {"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(tmp_path / "output"), **env}
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=environ, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("code", "undecided_fails", "job_exit"),
    [
        ("0", "false", 0),
        ("1", "false", 1),
        ("3", "false", 0),
        ("3", "true", 3),
        ("4", "false", 4),
        ("", "false", 4),
        ("0; touch pwned", "false", 4),
        ("$(touch pwned)", "false", 4),
    ],
)
def test_the_verdict_step_takes_only_a_number(
    tmp_path: Path, code: str, undecided_fails: str, job_exit: int
) -> None:
    gate = _load(WORKFLOWS / "perf.yml")["jobs"]["gate"]
    done = _bash(
        _step(gate, "Verdict")["run"], tmp_path, {"CODE": code, "FAIL_ON_UNDECIDED": undecided_fails}
    )
    assert done.returncode == job_exit, done.stdout + done.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("written", "output"), [("1", "code=1"), ("0; touch pwned", "code=4"), (None, "code=2")]
)
def test_the_gate_step_checks_the_code_the_gate_wrote(
    tmp_path: Path, written: str | None, output: str
) -> None:
    """The code file is read back as data and checked; without one, make's own status."""
    gate = _load(WORKFLOWS / "perf.yml")["jobs"]["gate"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"  # a stand-in: writes the code file (or none) and fails as make does
    write = f"mkdir -p results/gate-cpu && printf '%s\\n' '{written}' > results/gate-cpu/exit-code\n"
    make.write_text("#!/bin/sh\n" + (write if written is not None else "") + "exit 2\n")
    make.chmod(0o755)
    done = _bash(
        _step(gate, "Gate")["run"],
        tmp_path,
        {"PATH": f"{bin_dir}:{os.environ['PATH']}", "BASE_SHA": "0" * 40, "GITHUB_WORKSPACE": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "output").read_text().splitlines() == [output]
    assert not (tmp_path / "pwned").exists()
