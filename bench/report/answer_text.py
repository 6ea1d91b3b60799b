"""The answer in words: the plain-text lines `run` prints and summary.md and the report show, and
the answer table's rows (inferbench.report.answer picks the cells; this module only writes them
out, so the three places say the same)."""

from __future__ import annotations

from inferbench.compare.core import WITHIN_PROCESS
from inferbench.markdown import fmt
from inferbench.report.answer import REFERENCE, RULE, SEARCH, Answer, Pick
from inferbench.report.serving import SERVE, SERVE_RULE, qps_text
from inferbench.status import HARNESS_LIMITED


def value_text(answer: Answer, pick: Pick) -> str:
    """'12.3 ms [12.1, 12.6]' or '812 samples/s [790, 830]'; serve mode: '830 QPS at p99 ≤ 50 ms
    (not met at 870)'."""
    if answer.mode == SERVE:
        text = f"{qps_text(pick.value)} QPS at {pick.slo}"
        return text + (f" (not met at {qps_text(pick.ci_high)})" if pick.ci_high is not None else "")
    unit = "samples/s" if answer.mode == "throughput" else "ms"
    text = f"{fmt(pick.value)} {unit}"
    if pick.ci_low is not None and pick.ci_high is not None:
        text += f" [{fmt(pick.ci_low)}, {fmt(pick.ci_high)}]"
    return text


def speedup_text(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def accuracy_text(pick: Pick) -> str:
    labels = {"rel_l2_err": "rel L2", "cosine": "cosine", "top1_agreement": "top-1"}
    return ", ".join(f"{labels[k]} {fmt(v)}" for k, v in pick.accuracy.items())


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counts.items())


def excluded_text(answer: Answer) -> str:
    """The counts of cells left out, harness-limited ones by name: '2 harness-limited (openvino
    fp32, openvino int8)' (the load generator fell behind, not those engines)."""
    parts = []
    for why, n in answer.excluded.items():
        named = (
            f" ({', '.join(answer.harness_limited)})"
            if why == HARNESS_LIMITED and answer.harness_limited
            else ""
        )
        parts.append(f"{n} {why}{named}")
    return ", ".join(parts)


def serve_sentence(answer: Answer) -> str:
    """The serve answer in one phrase: 'onnxruntime int8, max_batch 4 / wait 2 ms: 830 QPS at
    p99 ≤ 50 ms (1.90x torch fp32)'; '' without a winner."""
    w = answer.winner
    if w is None or answer.mode != SERVE:
        return ""
    text = f"{w.name}: {qps_text(w.value)} QPS at {w.slo}"
    if w.speedup_vs_eager_fp32 is not None and (w.backend, w.precision) != REFERENCE:
        text += f" ({speedup_text(w.speedup_vs_eager_fp32)} {' '.join(REFERENCE)})"
    return text


def group_text(answer: Answer, show_threads: bool, show_shape: bool = False) -> str:
    threads = f" t{answer.threads}" if show_threads else ""
    shape = f"{answer.shape or 'default shape'} " if show_shape else ""
    return f"{shape}b{answer.batch_size}{threads} {answer.mode}"


def fastest_text(answer: Answer) -> str:
    """The winner's name; without one, nothing passed, or the fastest capped cell, whose
    interval is wider than asked (the order is not decided)."""
    if answer.winner is not None:
        return answer.winner.name
    if answer.provisional is None:
        return "nothing passed"
    return f"not decided (capped): fastest {answer.provisional.name}"


def noise_text(answer: Answer) -> str:
    """'within noise' or 'apart', and what that judgement covers (compare.csv's `interval`
    words): a within-process judgement says it is only that; a serve answer's, that the two
    search brackets overlap or not."""
    verdict = "within noise" if answer.within_noise else "apart"
    if answer.noise == SEARCH:
        return f"{verdict}, {SEARCH} only"
    if answer.noise == WITHIN_PROCESS:
        return f"{verdict}, {WITHIN_PROCESS} only"
    return f"{verdict}, {answer.noise}"


def runner_up_text(answer: Answer) -> str:
    if answer.runner_up is None:
        return ""
    return f"{answer.runner_up.name}: {value_text(answer, answer.runner_up)} ({noise_text(answer)})"


def answer_columns(found: list[Answer]) -> tuple[str, ...]:
    """The answer table's columns: ANSWER_COLUMNS, the value's header naming serve mode's
    figure too when some answer is a serve one."""
    if not any(a.mode == SERVE for a in found):
        return ANSWER_COLUMNS
    return tuple(SERVE_VALUE_HEADER if c == VALUE_HEADER else c for c in ANSWER_COLUMNS)


def rule_text(found: list[Answer]) -> str:
    """What the answer rests on: RULE, and serve mode's rule when some answer is a serve one."""
    return f"{RULE} {SERVE_RULE}" if any(a.mode == SERVE for a in found) else RULE


def answer_rows(found: list[Answer]) -> list[dict[str, str]]:
    """The answer as a list of text rows (one per model/batch/mode), shared by the Markdown
    summary, the HTML report and the terminal; keyed by `answer_columns(found)`."""
    show_threads = len({a.threads for a in found}) > 1
    show_shape = any(a.shape for a in found)
    value_header = answer_columns(found)[ANSWER_COLUMNS.index(VALUE_HEADER)]
    rows = []
    for a in found:
        w = a.winner or a.provisional  # a provisional leader is described like a winner
        rows.append(
            {
                "model": a.model,
                "case": group_text(a, show_threads, show_shape),
                "fastest": fastest_text(a),
                value_header: value_text(a, w) if w else "",
                "vs eager FP32": speedup_text(w.speedup_vs_eager_fp32) if w else "",
                "vs best FP32": (
                    f"{speedup_text(w.speedup_vs_best_fp32)} ({w.best_fp32})"
                    if w and w.speedup_vs_best_fp32 is not None
                    else ""
                ),
                "accuracy": accuracy_text(w) if w else "",
                "what ran": w.ran if w else "",
                "runner-up": runner_up_text(a),
                "excluded": excluded_text(a),
                "did not run": counts_text(a.not_run),
            }
        )
    return rows


VALUE_HEADER = "p50 / throughput [95% CI]"
SERVE_VALUE_HEADER = "p50 / throughput [95% CI] / QPS at SLO"
ANSWER_COLUMNS = (
    "model",
    "case",
    "fastest",
    VALUE_HEADER,
    "vs eager FP32",
    "vs best FP32",
    "accuracy",
    "what ran",
    "runner-up",
    "excluded",
    "did not run",
)


def answer_lines(found: list[Answer]) -> list[str]:
    """The answer as plain lines, a model heading then one line per batch size and mode: what
    a terminal of any width shows at the end of `run`."""
    lines: list[str] = []
    model = None
    show_threads = len({a.threads for a in found}) > 1
    show_shape = any(a.shape for a in found)
    for a in found:
        if (a.model, a.host) != model:
            model = (a.model, a.host)
            lines.append(f"{a.model} on host {a.host}" if a.host else a.model)
        w = a.winner or a.provisional  # a provisional leader is described like a winner
        sentence = serve_sentence(a)  # serve mode's answer says its speed-up over eager FP32
        parts = [sentence or (fastest_text(a) + (f": {value_text(a, w)}" if w else ""))]
        if w and w.speedup_vs_eager_fp32 is not None and not sentence:
            parts.append(f"{speedup_text(w.speedup_vs_eager_fp32)} vs eager FP32")
        if w and w.speedup_vs_best_fp32 is not None:
            parts.append(f"{speedup_text(w.speedup_vs_best_fp32)} vs best FP32 ({w.best_fp32})")
        if w:
            parts += [accuracy_text(w), f"ran {w.ran}"] if w.accuracy else [f"ran {w.ran}"]
        if a.runner_up:
            parts.append(f"runner-up {runner_up_text(a)}")
        if a.excluded:
            parts.append(f"left out: {excluded_text(a)}")
        if a.not_run:
            parts.append(f"did not run: {counts_text(a.not_run)}")
        lines.append(f"  {group_text(a, show_threads, show_shape)}: " + "; ".join(parts))
    return lines
