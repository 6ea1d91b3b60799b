"""`summary.md`: the answer first, then why cells were left out, then every cell per model.

A run merged from several machines lists its hosts, answers host by host and gives every
table a host column; a one-host run has none of that (and matches the golden file)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from inferbench.config import axes_shown
from inferbench.machine.env import noise_warnings
from inferbench.machine.hosts import HOST, host_title, hosts_in
from inferbench.markdown import markdown_table
from inferbench.report.answer import NOT_RUN_ANCHOR, Answer, answers, by_host, exclusion, with_speedup
from inferbench.report.answer_text import answer_columns, answer_rows, rule_text
from inferbench.report.serving import POLICY, TABLE_EXTRA, best_policy_text, is_serve
from inferbench.status import HARNESS_LIMITED, MEASURED
from inferbench.store.record import SUMMARY_COLUMNS

# Each model's table of cells (inferbench.store.record's summary columns: the model is its heading).
CELL_COLUMNS = list(SUMMARY_COLUMNS)


#: Statuses the summary lists with the measured cells: a harness-limited serve cell ran, but is
#: not a result (it is left out of the answer, with its reason).
SHOWN_MEASURED = MEASURED | {HARNESS_LIMITED}


def _cell_columns(group: pd.DataFrame, hosts: list[str]) -> list[str]:
    shape = ["shape"] if "shape" in axes_shown(group.get("shape", ())) else []
    columns = [*shape, *CELL_COLUMNS, *([HOST] if hosts else [])]
    if any(is_serve(r) for r in group.to_dict("records")):  # after the status: the peak and policy
        at = columns.index("status") + 1 if "status" in columns else len(columns)
        columns[at:at] = [c for c in TABLE_EXTRA if c not in columns]
    return columns


def with_policy(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the serve rows' best policy in words (`POLICY`), when it has serve rows."""
    records = frame.to_dict("records")
    if not any(is_serve(r) for r in records):
        return frame
    return frame.assign(**{POLICY: [best_policy_text(r) if is_serve(r) else "" for r in records]})


def _answer_tables(found: list[Answer], labels: dict[str, str]) -> list[str]:
    parts: list[str] = []
    for host, group in by_host(found):
        if host or len(found) != len(group):  # a heading per machine, when there are several
            parts += [f"### {host_title(host, labels)}", ""]
        columns = list(answer_columns(group))
        rows = pd.DataFrame(answer_rows(group), columns=columns)
        parts += [markdown_table(rows, columns), ""]
    return parts[:-1]


def summary_markdown(
    frame: pd.DataFrame, env: dict[str, Any], run_id: str, host_labels: dict[str, str] | None = None
) -> str:
    """The summary; `host_labels` (fingerprint -> readable machine) names the machines of a
    merged run."""
    frame = with_policy(with_speedup(frame))
    cpu = env.get("cpu", {})
    labels = host_labels or {}
    hosts = hosts_in(frame)
    hosts = hosts if len(hosts) > 1 else []
    parts = [f"# InferBench run `{run_id}`", ""]
    if hosts:
        parts.append("Merged from several machines; each is answered on its own, never ranked together:")
        parts += [*(f"- {host_title(h, labels)}" for h in hosts), ""]
    elif cpu:
        parts.append(
            f"CPU: {cpu.get('model')} ({cpu.get('logical_cpus')} logical CPUs); "
            f"native bf16: {cpu.get('native_bf16')}; int8 dot product: {cpu.get('native_int8_dot')}"
        )
        parts.append("")
    for warning in noise_warnings(env, frame.to_dict("records")):
        parts += [f"> **Noise warning:** {warning}", ""]
    counts = frame["status"].value_counts().to_dict()
    parts.append("Cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    found = answers(frame)
    parts += ["", "## Answer", "", answer_text(found), ""]
    parts += _answer_tables(found, labels)
    keys = axes_shown(frame.get("shape", ())) + ([HOST] if hosts else [])

    why = [exclusion(r) for r in frame.to_dict("records")]
    measured = frame.assign(excluded_because=why)
    left_out = measured[frame["status"].isin(SHOWN_MEASURED) & measured["excluded_because"].notna()]
    if len(left_out):
        parts += ["", "## Measured but left out of the answer", ""]
        parts.append(markdown_table(left_out, [*keys, "excluded_because", "reason"]))
    failed = frame[~frame["status"].isin(SHOWN_MEASURED)]
    if len(failed):
        # An explicit anchor: the answer's rule links here.
        parts += ["", f'<a id="{NOT_RUN_ANCHOR}"></a>', "", "## Cells that did not run", ""]
        parts.append(markdown_table(failed, [*keys, "status", "reason"]))
    parts += ["", "## All cells", "", "Also in `results.csv` (every column) and the HTML report."]
    for model, group in frame.groupby("model", sort=False):
        parts += [
            "",
            f"### {model}",
            "",
            markdown_table(group, _cell_columns(group, hosts)),
        ]
    return "\n".join(parts) + "\n"


def answer_text(found: list[Answer]) -> str:
    return f"{rule_text(found)} Why cells did not run: [Cells that did not run](#{NOT_RUN_ANCHOR})."
