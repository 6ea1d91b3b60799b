"""The deploy recipes never have every node append to one SQLite file on the shared volume:
with a PostgreSQL URL each task appends (the URL staying off the command line), otherwise the
tasks record no history. Each recipe's shell runs here with a stand-in `inferbench`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SECRET_URL = "postgresql://bench:s3cret@db.example/history"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the recipes are bash")


def _stand_in(folder: Path) -> Path:
    """`.venv/bin/inferbench` that writes its arguments, one a line, to argv.txt."""
    tool = folder / ".venv" / "bin" / "inferbench"
    tool.parent.mkdir(parents=True)
    tool.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$(dirname "$0")/../../argv.txt"\n')
    tool.chmod(0o755)
    return folder / "argv.txt"


def _environ(history: str | None, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "INFERBENCH_HISTORY"}
    return {**environ, **extra, **({"INFERBENCH_HISTORY": history} if history is not None else {})}


def _container() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the Kubernetes Job")
    job = yaml.safe_load((REPO / "deploy" / "kubernetes" / "indexed-job.yaml").read_text())
    return dict(job["spec"]["template"]["spec"]["containers"][0])


def _run_pod(tmp_path: Path, history: str | None) -> list[str]:
    container = _container()
    argv = _stand_in(tmp_path)
    command = [*container["command"], *container["args"]]
    environ = _environ(history, JOB_COMPLETION_INDEX="1", INFERBENCH_SHARD_COUNT="4")
    subprocess.run(command, cwd=tmp_path, env=environ, check=True, timeout=60)
    return argv.read_text().splitlines()


def _run_slurm_task(tmp_path: Path, history: str | None) -> list[str]:
    argv = _stand_in(tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "make").write_text("#!/usr/bin/env bash\nexit 0\n")  # `make setup` is not under test
    (fake_bin / "make").chmod(0o755)
    environ = _environ(
        history,
        SLURM_SUBMIT_DIR=str(tmp_path),
        SLURM_ARRAY_TASK_ID="2",
        PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
    )
    script = REPO / "deploy" / "slurm" / "sweep.sbatch"
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=environ, check=True, timeout=60)
    return argv.read_text().splitlines()


RECIPES = {"kubernetes": _run_pod, "slurm": _run_slurm_task}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("history", [None, "/results/history.sqlite", "sqlite:////results/h.sqlite"])
def test_without_postgresql_no_task_appends(recipe: str, history: str | None, tmp_path: Path) -> None:
    argv = RECIPES[recipe](tmp_path, history)
    assert argv[0] == "run" and "--shard" in argv
    assert "--no-history" in argv and "--history" not in argv


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_with_postgresql_each_task_appends_and_the_url_stays_off_argv(recipe: str, tmp_path: Path) -> None:
    argv = RECIPES[recipe](tmp_path, SECRET_URL)
    assert argv[0] == "run" and "--no-history" not in argv and "--history" not in argv
    assert not any("s3cret" in arg for arg in argv)  # `run` reads $INFERBENCH_HISTORY itself


def test_pods_name_their_node_and_read_the_url_from_a_secret() -> None:
    env = {item["name"]: item for item in _container()["env"]}
    assert env["INFERBENCH_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    secret = env["INFERBENCH_HISTORY"]["valueFrom"]["secretKeyRef"]
    assert secret["optional"] is True and "value" not in env["INFERBENCH_HISTORY"]
