"""The screening view's rows: ROC/PR, calibration and operating points of an experiment's runs, drawn by ``figures``."""

from __future__ import annotations

from ..models import get_model_spec
from ._common import row_name
from .figures import pr_figure, reliability_figure, risk_coverage_figure, roc_figure


def screening_section(
    exp_name: str,
    rows: list[dict],
    stats: dict,
    reference: str,
    seeds: list[int],
    paper: str | None,
    splits: list[int] | None = None,
) -> dict | None:
    """ROC/PR, calibration and operating points of the experiment's runs (first seed and split; the
    reference model at every seed and split), and the paper's Sec. 4.4 claim where its abnormal
    classes are there. ``stats``: (model, recipe, seed, split seed) -> the run's statistics."""
    splits = splits or [0]
    where = (
        (lambda split, seed: f" · split {split} · seed {seed}")
        if len(splits) > 1
        else (lambda split, seed: f" · seed {seed}")
    )
    table = []
    for r in rows:
        diag = (r.get("stats") or {}).get("diagnostics")
        if diag:
            table.append({"paper_name": r["paper_name"], "recipe": r["recipe"], "model": r["model"], **diag})
    if not table:
        return None
    curves = [
        (
            row_name(t) + where(splits[0], seeds[0]),
            t["roc_pr"]["abnormal"],
        )
        for t in table
        if t["roc_pr"]["abnormal"]
    ]
    for (model, recipe, seed, split), entry in sorted(stats.items()):
        diag = entry.get("diagnostics")
        if model == reference and (seed, split) != (seeds[0], splits[0]) and diag and diag["roc_pr"]["abnormal"]:
            curves.append(
                (
                    f"{get_model_spec(model).paper_name}"
                    + ("" if recipe == "none" else f" · {recipe}")
                    + where(split, seed),
                    diag["roc_pr"]["abnormal"],
                )
            )
    ref = next((t for t in table if t["model"] == reference), table[0])
    referral = [{"label": row_name(t), **t["referral"]} for t in table if t.get("referral")]
    risk = [(row_name(t), t["risk_coverage"]) for t in table if t.get("risk_coverage")]
    claim = ref["paper_claim"] if paper == "combined" else None
    return {
        "rows": table,
        "points": table[0]["operating_points"],
        "roc": roc_figure(curves, f"ROC, abnormal against normal (test): {exp_name}") if curves else "",
        "pr": pr_figure(curves, f"Precision-recall, abnormal against normal (test): {exp_name}") if curves else "",
        "reliability": reliability_figure(ref["calibration"], f"Reliability (test): {ref['paper_name']}"),
        "reliability_of": ref["paper_name"],
        "referral": referral,
        "risk_coverage": risk_coverage_figure(risk, f"Risk against coverage (test): {exp_name}") if risk else "",
        "claim": claim,
    }
