"""Who measured: the machine's fingerprints and the project's git commit.

Two hashes of a run's `env.json`, each kept beside its readable parts:
- `fingerprint`, the machine class: what decides speed (CPU model, ISA flags, logical CPUs,
  memory, GPU). A row's `host` column holds it, so the identical nodes of a sharded sweep are
  one host whose cells rank and compare together (inferbench.machine.hosts).
- `history_fingerprint`, the machine: the same facts and the host's name. A history series
  only means something on one machine, and identical nodes (a Slurm partition, a Kubernetes
  pool) are still several: their series must not merge, nor their appends collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferbench.layout import PROJECT_ROOT

# Names the machine when the host name does not: a container's host name is the pod or
# container, new on every run (Kubernetes: the node name, through the downward API).
NODE_VAR = "INFERBENCH_NODE"


def node_name() -> str:
    """The name of the machine a run measures on, as env.json records it (`node`)."""
    return os.environ.get(NODE_VAR) or platform.node()


@dataclass(frozen=True)
class Machine:
    """The facts that make two runs comparable, and their hash."""

    cpu_model: str
    isa: tuple[str, ...]
    logical_cpus: int | None
    memory_gb: float | None
    gpu: str
    host: str = ""  # "" when env.json does not say (runs captured before it did)

    @property
    def fingerprint(self) -> str:
        """The machine class: a hash of the hardware facts (the host left out)."""
        return _hash([self.cpu_model, list(self.isa), self.logical_cpus, self.memory_gb, self.gpu])

    @property
    def history_fingerprint(self) -> str:
        """The machine a history series keys on: the hardware facts and the host."""
        # How old fingerprints relate: histories recorded before the host was part of this
        # hold `fingerprint` (the hardware alone), and a run folder whose env.json names no
        # host still gets exactly that, so old records stay readable and keep their series.
        # A machine's first run that names its host starts a new series beside its old one
        # (the old points stay listed under the old fingerprint): the points of identical
        # nodes, mixed under one old fingerprint, cannot be told apart afterwards.
        if not self.host:
            return self.fingerprint
        return _hash([self.cpu_model, list(self.isa), self.logical_cpus, self.memory_gb, self.gpu, self.host])

    @property
    def label(self) -> str:
        """A readable name: 'AMD EPYC, 2 CPUs, 23.4 GiB, avx2+fma' (+ the GPU)."""
        parts = [self.cpu_model or "unknown CPU"]
        if self.logical_cpus:
            parts.append(f"{self.logical_cpus} CPUs")
        if self.memory_gb:
            parts.append(f"{self.memory_gb:g} GiB")
        parts.append("+".join(self.isa) or "no listed ISA extensions")
        if self.gpu:
            parts.append(self.gpu)
        return ", ".join(parts)

    @property
    def history_label(self) -> str:
        """The label and the host: '..., avx2+fma, on node-3' (`history --machine node-3`)."""
        return f"{self.label}, on {self.host}" if self.host else self.label


def _hash(facts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:12]


def machine_from_env(env: dict[str, Any]) -> Machine:
    """The machine of a run, from its `env.json` (missing facts stay empty, not guessed)."""
    cpu = env.get("cpu") or {}
    isa = tuple(sorted(flag for flag, present in (cpu.get("isa") or {}).items() if present))
    gpu = env.get("gpu") or {}
    memory = env.get("memory_gb")
    # Memory is rounded to whole GiB: the kernel's total moves by a few MiB between boots.
    return Machine(
        cpu_model=str(cpu.get("model") or ""),
        isa=isa,
        logical_cpus=cpu.get("logical_cpus"),
        memory_gb=float(round(memory)) if isinstance(memory, int | float) else None,
        gpu=str(gpu.get("name") or "") if isinstance(gpu, dict) else "",
        host=str(env.get("node") or env.get("hostname") or ""),
    )


@dataclass(frozen=True)
class Commit:
    """The project checkout's commit; both None when it is not a git checkout."""

    sha: str | None
    dirty: bool | None


def project_commit(root: Path = PROJECT_ROOT) -> Commit:
    """HEAD of the checkout and whether tracked files differ from it (untracked ones don't
    change what runs). An installed copy or a missing git gives Commit(None, None)."""
    try:
        sha = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return Commit(None, None)
    return Commit(sha.strip() or None, bool(status.strip()))


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    ).stdout
