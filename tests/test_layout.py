"""One import name: the distribution installs `inferbench` only, and a user's own `models/` and
`backends/` packages resolve as theirs, in the parent and in every worker."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

USER_FACTORY = """
import torch


class MyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))

    def forward(self, x):
        return self.body(x)


def build(seed: int = 0):
    torch.manual_seed(seed)
    return MyNet(), {"x": ((16,), "float32")}
"""


def _top_level_names(dist: importlib.metadata.Distribution) -> set[str]:
    listed = dist.read_text("top_level.txt")
    if listed:
        return {line.strip() for line in listed.splitlines() if line.strip()}
    # Wheels without top_level.txt: the first part of every installed file, less the metadata.
    names = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first.endswith((".dist-info", ".pth")) or first.startswith("__editable__") or first == "..":
            continue
        names.add(first.removesuffix(".py"))
    return names - {"__pycache__"}


def test_distribution_installs_one_top_level_package() -> None:
    dist = importlib.metadata.distribution("inferbench")
    assert _top_level_names(dist) == {"inferbench"}
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"inferbench": "inferbench.cli:main"}


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """An ordinary ML project: its own `models` and `backends` packages, and a factory."""
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "__init__.py").write_text("MY_MODELS = ['mynet']\n")
    (project / "models" / "mynet.py").write_text(textwrap.dedent(USER_FACTORY))
    (project / "backends").mkdir()
    (project / "backends" / "__init__.py").write_text("raise ImportError('the user backends package')\n")
    return project


def _inferbench(project: Path, *args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("inferbench")
    command = [sys.executable, "-m", "inferbench", *args] if module else [str(script), *args]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("module", [False, True], ids=["console-script", "python-m"])
def test_list_from_a_project_with_its_own_packages(user_project: Path, module: bool) -> None:
    done = _inferbench(user_project, "list", module=module)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "onnxruntime" in done.stdout and "resnet50" in done.stdout


@pytest.mark.slow
def test_sweep_of_a_user_factory_from_its_project(user_project: Path) -> None:
    pytest.importorskip("onnxruntime")
    done = _inferbench(
        user_project,
        *("run", "--profile", "smoke", "--model", "models.mynet:build", "--backend", "torch,onnxruntime"),
        *("--batch-size", "1", "--mode", "latency", "--run-id", "mine", "--no-progress", "--no-report"),
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    rows = pd.read_csv(user_project / "results" / "mine" / "results.csv")
    assert list(rows["backend"]) == ["torch", "onnxruntime"]
    assert list(rows["status"]) == ["ok", "ok"], rows["reason"].tolist()
    assert (rows["model"] == "models.mynet:build").all()
