"""`--executor ray`: a sweep's cells as Ray tasks, at most one cell at a time on each node.

Every node of the cluster offers one unit of a custom resource (`ray start --resources
'{"inferbench_node": 1}'`) and every cell's task asks for that unit, so Ray never places two
cells on one machine: two benchmarks sharing a node spoil each other. Each task runs its cell
exactly as the local executor does (`inferbench.sweep.repeats.run_repeats`: fresh, isolated
worker processes), so a crash costs that cell only; a task is never retried, since a retry would
be another measurement under other conditions. Each row carries the fingerprint of the node that
measured it, and each node's environment is kept under `envs/` as in a merged run, so the
answer, the report and `compare` keep the nodes apart (inferbench.machine.hosts).

The run folder and the cache directory travel as paths: every node needs them at the same
place (a shared file system), since the workers write their logs and exported models there.
Ray is an optional install (`inferbench[ray]`): this module imports it only when used.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inferbench.config import Cell
from inferbench.errors import UserError
from inferbench.status import ERROR

log = logging.getLogger(__name__)

#: The custom resource each node has exactly one of: one cell per node at a time.
RESOURCE = "inferbench_node"
INSTALL_HINT = "install it with: pip install 'inferbench[ray]'"

Job = Callable[[Cell], dict[str, Any]]


@functools.cache
def _node_environment(threads: tuple[int, ...]) -> dict[str, Any]:
    """This node's environment, captured once per Ray worker process (it imports the engines)."""
    from inferbench.machine import env

    return env.capture(list(threads))


def run_on_node(job: Job, cell: Cell, threads: tuple[int, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body of a cell's task, on the node: the cell's record with the node's own host
    facts (they replace the driver's), and the node's environment."""
    import ray

    from inferbench.history.fingerprint import machine_from_env

    environment = _node_environment(threads)
    node_facts = {
        "host": machine_from_env(environment).fingerprint,
        "cpu_native_bf16": environment["cpu"]["native_bf16"],
        "cpu_native_int8": environment["cpu"]["native_int8_dot"],
        "ray_node": ray.get_runtime_context().get_node_id(),
    }
    return {**job(cell), **node_facts}, environment


class RayExecutor:
    """Connects to a Ray cluster (`address`), or starts a one-node instance when None."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def start(self, run_dir: Path, cells: list[Cell], job: Job, threads: list[int]) -> RayCells:
        """Submit every cell now; their records are collected in sweep order."""
        try:
            import ray
        except ImportError:
            raise UserError(f"--executor ray needs the ray package; {INSTALL_HINT}") from None
        started = not ray.is_initialized()
        if started:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:  # a local instance: this machine is the one node
                ray.init(resources={RESOURCE: 1}, logging_level=logging.WARNING)
        if not ray.cluster_resources().get(RESOURCE):
            if started:
                ray.shutdown()
            raise UserError(
                f"no node of the Ray cluster offers the resource {RESOURCE!r}; start each node "
                f"with: ray start ... --resources '{{\"{RESOURCE}\": 1}}'"
            )
        task = ray.remote(run_on_node).options(resources={RESOURCE: 1}, num_cpus=0, max_retries=0)
        refs = {cell.key: task.remote(job, cell, tuple(threads)) for cell in cells}
        log.info("submitted %d cell(s) to Ray (%g node(s))", len(refs), ray.cluster_resources()[RESOURCE])
        return RayCells(run_dir, refs, started)


class RayCells:
    """Cells running on Ray; `result` waits for one, `close` cancels what is left."""

    def __init__(self, run_dir: Path, refs: dict[str, Any], started: bool) -> None:
        self.run_dir = run_dir
        self.refs = refs
        self.started = started
        self.hosts: set[str] = set()

    def result(self, cell: Cell) -> dict[str, Any]:
        import ray

        from inferbench.store.runfolder import save_host_env

        ref = self.refs.pop(cell.key)
        try:
            record, environment = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the task or its node died: this cell only
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return {"status": ERROR, "reason": f"Ray task failed: {type(exc).__name__}: {first}"[:500]}
        if record["host"] not in self.hosts:
            self.hosts.add(record["host"])
            save_host_env(self.run_dir, record["host"], environment)
        return dict(record)

    def close(self) -> None:
        import ray

        for ref in self.refs.values():
            ray.cancel(ref, force=True)
        self.refs.clear()
        if self.started:
            ray.shutdown()
