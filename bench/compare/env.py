"""The two runs of a comparison as the compare page sees them, and their environments side by
side.

A row is highlighted in two strengths: `mismatch` when the environment check
(`inferbench.compare.envcheck`, the one `compare` refuses on) names that fact, `differs` when the values
differ but the check does not count them (host name, python, load), so a reader sees at once
which differences could explain a change and which are expected.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferbench.compare.envcheck import ENGINE_PACKAGES, Difference, find_differences, usable_cpus
from inferbench.config import cell_axes
from inferbench.store.runfolder import load_run, load_settings

Fact = Callable[["RunView"], Any]
# Facts that differ between any two runs: shown, never highlighted.
_ALWAYS_DIFFER = frozenset({"run", "started"})


@dataclass(frozen=True)
class RunView:
    """One side of a comparison: its name on the page, environment (`env.json`), sweep
    settings (`config.json`) and cell records (raw samples included, thinned on the page)."""

    name: str
    env: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a compared run needs a name")

    def record(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        """The record of one cell by its key (`inferbench.compare.core.KEY`'s columns)."""
        return self._by_key.get(tuple(key))

    @functools.cached_property
    def _by_key(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        # Keyed as `compare` matches records (axes added later take their defaults).
        return {cell_axes(r): r for r in self.records}


def load_view(run_dir: Path, name: str | None = None) -> RunView:
    """A run folder, read through `inferbench.store.runfolder`."""
    _, records, env = load_run(run_dir)
    return RunView(name or run_dir.name, env, load_settings(run_dir), records)


def _cpu(key: str) -> Fact:
    return lambda v: (v.env.get("cpu") or {}).get(key)


def _threads(key: str) -> Fact:
    return lambda v: (v.env.get("threads") or {}).get(key)


def _package(name: str) -> Fact:
    return lambda v: (v.env.get("packages") or {}).get(name)


def _thread_var(name: str) -> Fact:
    return lambda v: ((v.env.get("threads") or {}).get("env") or {}).get(name)


def _measure(key: str) -> Fact:
    return lambda v: (v.settings.get("measure") or {}).get(key)


def _isa(view: RunView) -> list[str]:
    isa = (view.env.get("cpu") or {}).get("isa") or {}
    return sorted(flag for flag, present in isa.items() if present)


def _hashes(view: RunView) -> str:
    found = sorted({str(r["settings_hash"]) for r in view.records if r.get("settings_hash")})
    return ", ".join(found[:4]) + (f" (+{len(found) - 4} more)" if len(found) > 4 else "")


def _facts(base: RunView, new: RunView) -> Iterator[tuple[str, Fact]]:
    """(label, getter) per row; labels of checked facts are the environment check's own."""
    yield "run", lambda v: v.name
    yield "profile", lambda v: v.settings.get("profile", v.settings.get("name"))
    yield "started", lambda v: v.settings.get("started_at") or v.env.get("captured_at")
    yield "host", lambda v: v.env.get("hostname")
    yield "CPU model", _cpu("model")
    yield "logical CPUs", _cpu("logical_cpus")
    yield "CPUs", lambda v: usable_cpus(v.env.get("cpu") or {})
    yield "memory (GB)", lambda v: v.env.get("memory_gb")
    yield "ISA flags", _isa
    yield "native bf16", _cpu("native_bf16")
    yield "native int8 dot product", _cpu("native_int8_dot")
    yield "GPU", lambda v: (v.env.get("gpu") or {}).get("name")
    yield "python", lambda v: v.env.get("python")
    for name in ENGINE_PACKAGES:
        yield name, _package(name)
    yield "oneDNN (torch)", lambda v: (v.env.get("torch_build") or {}).get("onednn")
    yield "threads swept", _threads("swept")
    yield "inter-op threads", _threads("inter_op")
    names = {k for v in (base, new) for k in ((v.env.get("threads") or {}).get("env") or {})}
    for var in sorted(names):
        yield var, _thread_var(var)
    yield "pin", lambda v: v.settings.get("pin")
    keys = {k for v in (base, new) for k in (v.settings.get("measure") or {})}
    for key in sorted(keys):
        yield f"measure.{key}", _measure(key)
    yield "settings hashes", _hashes


def _shown(value: Any) -> str:
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _isa_cell(view: RunView, other: RunView) -> str:
    """The flags, with those the other side lacks marked."""
    mine, theirs = _isa(view), set(_isa(other))
    return " ".join(f"<mark>{html.escape(f)}</mark>" if f not in theirs else html.escape(f) for f in mine)


def environment_rows(base: RunView, new: RunView) -> list[tuple[str, str, str, str]]:
    """(label, base, new, row class) for every fact either side records."""
    checked = find_differences(base.env, new.env, base.settings, new.settings)
    flagged = {d.label for d in checked} | ({"ISA flags"} if _isa_differs(checked) else set())
    rows = []
    for label, fact in _facts(base, new):
        b, n = _shown(fact(base)), _shown(fact(new))
        if not b and not n:
            continue  # an older env.json, or a fact neither machine exposes
        differs = b != n and label not in _ALWAYS_DIFFER
        klass = "mismatch" if label in flagged else "differs" if differs else ""
        rows.append((label, b, n, klass))
    return rows


def _isa_differs(checked: list[Difference]) -> bool:
    return any(d.label.startswith("ISA ") for d in checked)


def environment_html(base: RunView, new: RunView) -> str:
    """Both environments in one table, differences highlighted."""
    body = []
    for label, b, n, klass in environment_rows(base, new):
        if label == "ISA flags":
            cells = f'<td class="s">{_isa_cell(base, new)}</td><td class="s">{_isa_cell(new, base)}</td>'
        else:
            cells = f'<td class="s">{html.escape(b)}</td><td class="s">{html.escape(n)}</td>'
        attr = f' class="{klass}"' if klass else ""
        body.append(f'<tr{attr}><th class="s">{html.escape(label)}</th>{cells}</tr>')
    head = (
        f'<tr><th class="s">fact</th><th class="s">base: {html.escape(base.name)}</th>'
        f'<th class="s">new: {html.escape(new.name)}</th></tr>'
    )
    return (
        '<p class="note"><span class="key mismatch">red</span>: a difference the comparison check '
        "counts (<code>compare</code> refuses it without <code>--allow-mismatch</code>); "
        '<span class="key differs">yellow</span>: differs, not checked; <mark>marked</mark> ISA '
        "flags are on one side only.</p>"
        f'<table id="environment-table"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
    )
