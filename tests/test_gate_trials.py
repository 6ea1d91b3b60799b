"""The gate-trials tool (inferbench.tools.gate_trials): how each trial is scored, and that an
interrupted campaign keeps the trials it ran."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferbench.tools.gate_trials import (
    Hog,
    Journal,
    Trial,
    _outcome,
    _read_verdict,
    cells_table,
    main,
    noise_table,
    summary,
)


@pytest.mark.parametrize(
    ("exit_code", "flagged", "slow", "outcome"),
    [
        (0, [], None, "pass"),
        (1, ["lstm/torch/b1"], None, "FALSE ALARM"),
        (3, [], None, "undecided"),
        (1, ["lstm/onnxruntime/b1"], "onnxruntime", "caught"),
        (1, ["lstm/onnxruntime/b1", "lstm/torch/b1"], "onnxruntime", "FALSE ALARM (other backend)"),
        (0, [], "onnxruntime", "missed"),
        (3, [], "onnxruntime", "undecided"),
        (2, [], "onnxruntime", "error (exit 2)"),
    ],
)
def test_each_trial_is_scored_against_the_known_truth(
    exit_code: int, flagged: list[str], slow: str | None, outcome: str
) -> None:
    assert _outcome(Trial("t", exit_code, 1.0, flagged), slow) == outcome


def test_journal_keeps_every_trial_as_it_goes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = Journal(tmp_path, "abc123", rounds=6)
    first = Trial("A/A", 0, 2.5, outcome="pass")
    journal.add(first, 0)
    saved = json.loads((tmp_path / "trials.json").read_text())
    assert saved["rounds"] == 6 and [t["outcome"] for t in saved["trials"]] == ["pass"]
    journal.add(Trial("A/B +10%", 1, 2.4, ["lstm/onnxruntime/b1"], outcome="caught"), 0)
    saved = json.loads((tmp_path / "trials.json").read_text())
    assert [t["kind"] for t in saved["trials"]] == ["A/A", "A/B +10%"]
    assert "caught" in capsys.readouterr().out
    table = summary(journal.trials)
    assert "| A/A | 1 | 1 | 0 |" in table and "| A/B +10% | 1 | 0 | 0 | 1 |" in table


def test_the_hog_runs_one_busy_process_per_cpu_and_a_late_timer_starts_none() -> None:
    hog = Hog()
    hog.start()
    procs = list(hog.procs)
    try:
        assert len(procs) == len(os.sched_getaffinity(0))
        assert all(p.poll() is None for p in procs)
    finally:
        hog.close()
    assert all(p.poll() is not None for p in procs)
    hog.start()  # a start timer that fires after the run ended
    assert hog.procs == []


def test_the_cells_table_gives_each_runs_gating_verdicts(tmp_path: Path) -> None:
    """From each run's compare.csv: the gating rows only, one column per cell."""
    import pandas as pd

    row = {"model": "lstm", "batch_size": 1, "n_base": 8, "ci_low": 0.98, "ci_high": 1.02, "ratio": 1.0}
    (tmp_path / "aa-0").mkdir()
    pd.DataFrame(
        [
            {**row, "backend": "torch", "gating": True, "verdict": "no change"},
            {**row, "backend": "torch", "gating": False, "verdict": "regression", "metric": "p99"},
            {**row, "backend": "onnxruntime", "gating": True, "verdict": "inconclusive", "ci_high": 1.08},
        ]
    ).to_csv(tmp_path / "aa-0" / "compare.csv", index=False)
    trials = [Trial("A/A", 3, 9.8, run="aa-0"), Trial("A/A", 4, 0.1, run="aa-1")]  # aa-1 wrote nothing
    lines = cells_table(tmp_path, trials).splitlines()
    assert lines[0] == "| run | kind | exit | min | lstm torch b1 | lstm onnxruntime b1 |"
    assert lines[2] == (
        "| aa-0 | A/A | 3 | 9.8 | pass 1.000 [0.980, 1.020] n8 | open 1.000 [0.980, 1.080] n8 |"
    )
    assert lines[3] == "| aa-1 | A/A | 4 | 0.1 | - | - |"


def test_the_noise_table_pools_the_aa_runs_each_centred_and_leaves_interfered_rounds_out(
    tmp_path: Path,
) -> None:
    def rounds(ratios: list[float], interfered: int | None = None) -> dict[str, Any]:
        base = [{"status": "ok", "latency_min_ms": 1.0, "latency_p50_ms": 2.0} for _ in ratios]
        head = [
            {"status": "ok", "latency_min_ms": r, "latency_p50_ms": 2.0, "interfered": i == interfered}
            for i, r in enumerate(ratios)
        ]
        return {"rounds_per_cell": {"c": {"base": base, "head": head}}}

    for run, data in (("aa-0", rounds([1.0, 1.02, 0.98])), ("aa-1", rounds([1.1, 1.12, 1.08, 3.0], 3))):
        (tmp_path / run).mkdir()
        (tmp_path / run / "ab.json").write_text(json.dumps(data))
    (tmp_path / "ab-0").mkdir()  # an A/B run: not noise
    (tmp_path / "ab-0" / "ab.json").write_text(json.dumps(rounds([1.5, 1.0, 0.5])))
    trials = [
        Trial("A/A", 3, 9, run="aa-0"),
        Trial("A/A + hog", 3, 9, run="aa-1"),
        Trial("A/B +10%", 1, 9, run="ab-0"),
    ]
    line = noise_table(tmp_path, trials).splitlines()[2]
    deviations = [np.log(x) - np.log([1.0, 1.02, 0.98]).mean() for x in (1.0, 1.02, 0.98)]
    deviations += [np.log(x) - np.log([1.1, 1.12, 1.08]).mean() for x in (1.1, 1.12, 1.08)]
    spread = 100 * math.sqrt(sum(d**2 for d in deviations) / 4)  # 6 clean rounds in 2 runs
    assert line == f"| c | {spread:.1f} | 0.0 | 6 | 2 |"


def test_an_errored_run_reads_no_verdict_from_its_folder(tmp_path: Path) -> None:
    """A run that ended in an error (exit 2 or 4) may have left another run's compare.csv in
    its folder: it flags nothing and leaves nothing undecided."""
    import pandas as pd

    pd.DataFrame(
        [
            {
                "model": "lstm",
                "backend": "torch",
                "batch_size": 1,
                "mode": "latency",
                "regression": True,
                "inconclusive": True,
            }
        ]
    ).to_csv(tmp_path / "compare.csv", index=False)
    assert _read_verdict(tmp_path, 1) == (["lstm/torch/b1"], 1)
    assert _read_verdict(tmp_path, 2) == ([], 0)
    assert _read_verdict(tmp_path, 4) == ([], 0)


def test_a_campaign_refuses_a_folder_that_holds_one_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "aa-0").mkdir()
    with pytest.raises(SystemExit) as stopped:
        main(["--aa", "1", "--out", str(tmp_path)])
    assert stopped.value.code == 2
    assert f"{tmp_path} already holds a campaign; pass another --out" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aa-0"]
    with pytest.raises(SystemExit) as stopped:
        main(["--out", str(tmp_path / "new")])
    assert stopped.value.code == 2
    assert "nothing to do" in capsys.readouterr().err
