"""How long each training job of a results folder waited for its first step, against its epochs.

    python benchmarks/first_steps.py [RESULTS]        # default: results

Reads every run's ``train.json`` (``startup_seconds``: the process's start to the start of training,
that is the interpreter, imports and a GPU slot; ``first_step_seconds``: from there to the end of the
first step, that is data, model, cuDNN autotuning and capture) and ``history.csv`` (each epoch's
seconds), and prints a Markdown table and the goal's count: a job's first step within 10 s of its
start. Needs nothing beyond the standard library, so it runs wherever the results are.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

GOAL_S = 10.0


def first_steps(results: Path) -> list[dict]:
    """One row per training run under ``results/runs``, in path order."""
    rows = []
    for info_path in sorted(Path(results, "runs").glob("*/*/*/seed*/train.json")):
        info = json.loads(info_path.read_text())
        history = info_path.with_name("history.csv")
        epochs = [float(r["seconds"]) for r in csv.DictReader(history.open())] if history.exists() else []
        startup, first = info.get("startup_seconds"), info.get("first_step_seconds")
        rows.append(
            {
                "run": "/".join(info_path.parent.relative_to(Path(results, "runs")).parts),
                "device": info.get("device", "?"),
                "step": info.get("step", "eager"),
                "startup_s": startup,
                "first_step_s": first,
                "to_first_step_s": None if first is None else first + (startup or 0.0),
                "first_epoch_s": epochs[0] if epochs else None,
                "later_epoch_s": sum(epochs[1:]) / len(epochs[1:]) if len(epochs) > 1 else None,
            }
        )
    return rows


def _s(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def main(argv: list[str]) -> int:
    results = Path(argv[0] if argv else "results")
    rows = first_steps(results)
    if not rows:
        print(f"no training run under {results / 'runs'}")
        return 1
    print(
        "| run | device | step | process start to training (s) | training start to first step (s) | "
        "job start to first step (s) | first epoch (s) | later epochs, mean (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['device']} | {r['step']} | {_s(r['startup_s'])} | {_s(r['first_step_s'])} | "
            f"{_s(r['to_first_step_s'])} | {_s(r['first_epoch_s'])} | {_s(r['later_epoch_s'])} |"
        )
    known = [r["to_first_step_s"] for r in rows if r["to_first_step_s"] is not None]
    within = sum(t <= GOAL_S for t in known)
    print(
        f"\n{within} of {len(known)} jobs reached their first step within {GOAL_S:.0f} s of their start "
        f"(slowest {max(known):.1f} s)"
        if known
        else "\nno run recorded its first step (all resumed?)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
