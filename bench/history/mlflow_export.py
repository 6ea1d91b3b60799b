"""`inferbench export --format mlflow`: a run logged to an MLflow tracking store.

The sweep becomes one MLflow run (its report, summary, CSV and env.json as artifacts), and
each cell a child run under it: the cell's axes as params, its numbers as metrics, its record
(without the raw samples) as an artifact. The default store is a local file store, `./mlruns`.
MLflow 3 keeps the file store in maintenance mode and refuses it unless
MLFLOW_ALLOW_FILE_STORE is set: we set it for the duration of the export only, when the URI
is a file store; a team's server (`--tracking-uri http://...`) needs nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inferbench.config import CELL_AXES
from inferbench.errors import UserError
from inferbench.history.db import METRIC_COLUMNS
from inferbench.history.export import benchmark_name
from inferbench.history.fingerprint import machine_from_env
from inferbench.store.runfolder import load_config, load_run

PARAMS = (*CELL_AXES, "status", "cell_key", "run_id")
EXTRA_METRICS = (
    "prepare_s",
    "first_inference_ms",
    "peak_rss_mb",
    "achieved_gflops",
    "pct_of_peak",
    "max_abs_err",
    "rel_l2_err",
    "cosine",
    "iterations",
)
ARTIFACTS = ("summary.md", "results.csv", "env.json", "config.json")


def default_tracking_uri() -> str:
    return (Path.cwd() / "mlruns").as_uri()


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    is_file = uri.startswith("file:") or "://" not in uri
    previous = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    if is_file:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if is_file:
            if previous is None:
                os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
            else:
                os.environ["MLFLOW_ALLOW_FILE_STORE"] = previous


def _metrics(record: dict[str, Any]) -> dict[str, float]:
    found = {}
    for key in (*METRIC_COLUMNS, *EXTRA_METRICS):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            found[key] = float(value)
    return found


def export_mlflow(
    run_dir: Path, tracking_uri: str | None = None, experiment: str = "inferbench", report: Path | None = None
) -> tuple[str, str, int]:
    """Log the run; returns (tracking URI, parent MLflow run id, cells logged)."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError("--format mlflow needs MLflow: pip install 'inferbench[mlflow]'") from None
    _, records, env = load_run(run_dir)
    uri = tracking_uri or default_tracking_uri()
    machine = machine_from_env(env)
    now = int(time.time() * 1000)
    with _file_store_allowed(uri):
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        parent = client.create_run(
            experiment_id,
            run_name=run_dir.name,
            tags={"inferbench.run_id": run_dir.name, "inferbench.machine": machine.label},
        )
        parent_id = parent.info.run_id
        client.log_batch(
            parent_id,
            params=[
                Param("run_id", run_dir.name),
                Param("profile", str(load_config(run_dir).get("name") or "")),
                Param("machine", machine.fingerprint),
                Param("cells", str(len(records))),
            ],
        )
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                client.log_artifact(parent_id, str(run_dir / name))
        if report is not None and report.is_file():
            client.log_artifact(parent_id, str(report))
        with tempfile.TemporaryDirectory() as tmp:
            for record in records:
                child = client.create_run(
                    experiment_id,
                    run_name=benchmark_name(record),
                    tags={"mlflow.parentRunId": parent_id, "inferbench.run_id": run_dir.name},
                )
                params = [Param(k, str(record.get(k) if record.get(k) is not None else "")) for k in PARAMS]
                params.append(Param("machine", machine.fingerprint))
                if record.get("settings_hash"):
                    params.append(Param("settings_hash", str(record["settings_hash"])))
                client.log_batch(
                    child.info.run_id,
                    params=params,
                    metrics=[Metric(k, v, now, 0) for k, v in _metrics(record).items()],
                    tags=[RunTag("inferbench.status", str(record.get("status")))],
                )
                # The cell's record without its raw samples: those stay in the run folder.
                slim = {k: v for k, v in record.items() if not isinstance(v, list)}
                cell_file = Path(tmp) / f"{record['cell_key']}.json"
                cell_file.write_text(json.dumps(slim, indent=1, sort_keys=True, default=str))
                client.log_artifact(child.info.run_id, str(cell_file))
                client.set_terminated(child.info.run_id)
        client.set_terminated(parent_id)
    return uri, parent_id, len(records)
