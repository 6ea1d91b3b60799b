"""`inferbench merge RUN_DIR... --out DIR`: one run folder from the shards of one sweep.

Shards must come from the same sweep: their `config.json` files must agree on everything but
the shard itself, else the merge is refused naming the first difference. Every shard's
environment is kept (`envs/<shard>.json`), each row keeps the host that measured it, and cells
the sweep expected but no shard holds are listed (`merge.json`, and on the terminal). A shard
that holds no cell (more shards than groups) is merged like any other.

Shards are untrusted files (shared volumes, downloaded CI artifacts): a cell's key is
recomputed from its axes, and a record whose `cell_key` disagrees is refused, naming its file,
rather than re-keyed (an edited key is a record nobody can vouch for). Every write stays under
`--out` (inferbench.util.path_under). Two records with one key, in two shards or in two files
of one shard, are an error naming both files, unless both records are identical.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from inferbench.config import Cell, cell_of, model_labels
from inferbench.errors import UserError
from inferbench.models.shapes import builtin_label
from inferbench.store.runfolder import SCHEMA_VERSION, cell_files, save_cell, write_csv
from inferbench.sweep.cellkeys import record_key
from inferbench.util import atomic_write_json, one_component, path_under

#: config.json keys that differ between shards of one sweep by design.
SHARD_KEYS = frozenset({"shard", "started_at"})
#: Record fields that differ between two measurements of one cell without making them differ.
VOLATILE = frozenset({"run_id", "shard"})


@dataclass(frozen=True)
class Merged:
    out_dir: Path
    cells: int
    shards: list[str]
    missing: list[str]


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json inside)")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    return data


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if path == "" and key in SHARD_KEYS:
                continue
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


_AXES = ("modes", "models", "backends", "precisions", "batch_sizes", "threads", "shapes")


def _missing(config: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Cells the sweep expected that no shard holds (threads = 0 matches any thread count,
    since "all cores" resolves per machine)."""
    found = {cell_of(r) for r in records}
    any_threads = {replace(cell, threads=0) for cell in found}
    labels = model_labels(config.get("models") or [])
    missing = []
    axes = [config.get(k) or [] for k in _AXES[:-1]] + [config.get("shapes") or [""]]
    for mode, m, b, p, bs, t, shape in itertools.product(*axes):
        expected = Cell(labels[m], b, p, bs, t, mode, builtin_label(m, shape))
        if expected not in (any_threads if t == 0 else found):
            missing.append(expected.title)
    return missing


def _label(run_dir: Path, config: dict[str, Any]) -> str:
    return str(config.get("shard") or run_dir.name)


def _check_one_sweep(run_dirs: list[Path], configs: list[dict[str, Any]]) -> list[str]:
    for run_dir, config in zip(run_dirs[1:], configs[1:], strict=True):
        difference = _first_difference(configs[0], config)
        if difference:
            raise UserError(f"{run_dirs[0]} and {run_dir} are not shards of one sweep ({difference})")
    labels = [_label(d, c) for d, c in zip(run_dirs, configs, strict=True)]
    if len(set(labels)) != len(labels):
        raise UserError(f"the same shard given twice: {', '.join(labels)}")
    for label in labels:
        _env_name(label)  # refused before anything is written
    return labels


def _without_volatile(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def _collect(run_dirs: list[Path], labels: list[str], run_id: str) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for run_dir, label in zip(run_dirs, labels, strict=True):
        for path, record in cell_files(run_dir):
            key = record_key(record, path)
            if key in merged:
                if _without_volatile(record) != _without_volatile(merged[key]):
                    raise UserError(f"cell {key} is in {origin[key]} and {path} with different results")
                continue
            merged[key] = {**record, "shard": label, "run_id": run_id}
            origin[key] = path
    return list(merged.values())


def _env_name(label: str) -> str:
    """`envs/<name>.json` for a shard: `2/4` -> `2-of-4`; the label comes from the shard's own
    config.json, so it must still be one file name under `envs/`."""
    return one_component(label.replace("/", "-of-"), "shard name") + ".json"


def merge_runs(run_dirs: list[Path], out_dir: Path) -> Merged:
    if not run_dirs:
        raise UserError("merge needs at least one run directory")
    if out_dir.exists() and any((out_dir / "cells").glob("*.json")):
        raise UserError(f"{out_dir} already holds results; choose another --out")
    configs = [_config(d) for d in run_dirs]
    labels = _check_one_sweep(run_dirs, configs)
    records = _collect(run_dirs, labels, out_dir.name)
    missing = _missing(configs[0], records)

    out_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        save_cell(out_dir, record)
    write_csv(out_dir, records)
    config = {k: v for k, v in configs[0].items() if k not in SHARD_KEYS}
    atomic_write_json(out_dir / "config.json", {**config, "schema_version": SCHEMA_VERSION, "shards": labels})
    envs = {}
    for run_dir, label in zip(run_dirs, labels, strict=True):
        if (run_dir / "env.json").is_file():
            envs[label] = json.loads((run_dir / "env.json").read_text())
            atomic_write_json(path_under(out_dir / "envs", _env_name(label), "shard name"), envs[label])
    if envs:
        atomic_write_json(out_dir / "env.json", next(iter(envs.values())))
    sources = [str(d) for d in run_dirs]
    atomic_write_json(out_dir / "merge.json", {"shards": labels, "sources": sources, "missing": missing})
    return Merged(out_dir, len(records), labels, missing)
