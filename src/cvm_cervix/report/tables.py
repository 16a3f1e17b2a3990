"""Every table of the report as a frame, and the report's files: CSV, LaTeX, Markdown and standalone figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._io import spreadsheet_safe
from ..errors import disk_full
from ..report_state import REPORT_FILES_INDEX


def _span(interval) -> str | None:
    """An interval in percent as the tables write it; None where there is none (never a zero-width one)."""
    return None if not interval else " – ".join(f"{100 * v:.2f}" for v in interval)


def _missing_text(failure: dict, seeds: list[int] | None = None) -> str:
    which = f"seed(s) {', '.join(map(str, seeds))} " if seeds else ""
    return f"missing {which}(rule {failure['rule']}: {failure['error']}; log {failure['log']})"


def _standalone(figure_div: str, plotly_js: str) -> str:
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><script type="text/javascript">{plotly_js}</script>'
        f"</head><body>{figure_div}</body></html>"
    )


def _status_table(failure: dict) -> pd.DataFrame:
    return pd.DataFrame([{"status": _missing_text(failure)}])


def report_tables(context: dict) -> dict[str, pd.DataFrame]:
    """Every table of the report as a frame, by file stem (``<experiment>__<name>``): results per split,
    per class, statistics, screening, compression, transfer, data counts and provenance."""
    tables: dict[str, pd.DataFrame] = {}
    if context.get("incomplete"):
        tables["report__missing"] = pd.DataFrame(context["incomplete"]["failures"])
    for ds in context["datasets"]:
        if ds.get("missing"):
            tables[f"data__{ds['name']}"] = _status_table(ds["missing"])
            continue
        tables[f"data__{ds['name']}"] = pd.DataFrame(
            [
                {k: r[k] for k in ("class", "train", "val", "test", "total")}
                | (
                    {"paper train": r["paper"][0], "paper val": r["paper"][1], "paper test": r["paper"][2]}
                    if r["paper"]
                    else {}
                )
                for r in ds["rows"]
            ]
        )
    for exp in context["experiments"]:
        for split, suffix in (("test", "results"), ("val", "results_val")):
            table = []
            for r in exp["rows"]:
                row = {
                    "model": r["paper_name"],
                    "recipe": r["recipe"],
                    "seeds": len(r["test"]["accuracy"]["values"]) if "test" in r else 0,
                    "status": _missing_text(r["missing"], r["missing_seeds"] if "test" in r else None)
                    if r["missing"]
                    else "complete",
                }
                for name in ("accuracy", "f1", "precision", "recall"):
                    if split not in r:
                        row[f"{split} {name}"] = row[f"{split} {name} sd"] = None
                        continue
                    row[f"{split} {name}"] = round(r[split][name]["mean"], 2)
                    row[f"{split} {name} sd"] = None if r[split][name]["sd"] is None else round(r[split][name]["sd"], 2)
                if split == "test" and r.get("stats"):
                    row["accuracy 95% CI"] = _span(r["stats"]["intervals"]["accuracy"])
                for name in ("accuracy", "f1"):
                    row[f"paper {split} {name}"] = (r[f"paper_{split}"] or {}).get(name)
                table.append(row)
            tables[f"{exp['name']}__{suffix}"] = pd.DataFrame(table)
        per_class = [
            {
                "model": r["paper_name"],
                "recipe": r["recipe"],
                "seed": r["per_class"]["seed"],
                "split": split,
                "class": cls,
                **{k: round(100 * m[k], 2) for k in ("precision", "recall", "f1")},
                "support": m["support"],
            }
            for r in exp["rows"]
            if r.get("per_class")
            for split in ("val", "test")
            for cls, m in r["per_class"][split].items()
        ]
        if per_class:
            tables[f"{exp['name']}__per_class"] = pd.DataFrame(per_class)
        stats_rows = [
            {
                "model": r["paper_name"],
                "recipe": r["recipe"],
                "seed": exp["first_seed"],
                "correct": r["stats"]["intervals"]["correct"],
                "test images": r["stats"]["intervals"]["n"],
                "accuracy 95% CI (Wilson)": _span(r["stats"]["intervals"]["accuracy"]),
                "f1 95% CI (bootstrap)": _span(r["stats"]["intervals"]["f1_macro"]),
                "McNemar p": (r["stats"]["mcnemar"] or {}).get("p_value"),
                "sensitivity": round(100 * r["stats"]["clinical"]["sensitivity"], 2)
                if r["stats"]["clinical"]
                else None,
                "specificity": round(100 * r["stats"]["clinical"]["specificity"], 2)
                if r["stats"]["clinical"]
                else None,
            }
            for r in exp["rows"]
            if r.get("stats")
        ]
        if stats_rows:
            tables[f"{exp['name']}__statistics"] = pd.DataFrame(stats_rows)
        if exp.get("comparisons"):
            tables[f"{exp['name']}__comparisons"] = pd.DataFrame(
                [
                    {
                        "B": f"{c['b_name']} · {c['b']['recipe']}",
                        "A": f"{c['a_name']} · {c['a']['recipe']}",
                        "split seed": c["b"].get("split_seed", 0),
                        "seed": c["b"]["seed"],
                        "delta accuracy": round(100 * c["accuracy_diff"], 2),
                        "95% CI": " – ".join(f"{100 * v:+.2f}" for v in c["accuracy_diff_ci"] or []) or None,
                        "only A right": c["only_a"],
                        "only B right": c["only_b"],
                        "McNemar p": c["p_value"],
                        "Holm p": c["p_holm"],
                    }
                    for c in exp["comparisons"]
                ]
            )
        if exp.get("spread"):
            tables[f"{exp['name']}__spread"] = pd.DataFrame(
                [
                    {
                        "model": e["paper_name"],
                        "recipe": e["recipe"],
                        "splits": e["splits"],
                        "seeds per split": "/".join(map(str, e["seeds"])),
                        "runs": e["runs"],
                        **{
                            f"{label} {k}": None if e[name][k] is None else round(100 * e[name][k], 2)
                            for name, label in (("accuracy", "accuracy"), ("f1_macro", "f1"))
                            for k in ("mean", "sd_total", "sd_split", "sd_seed")
                        },
                        **{f"accuracy split {s}": round(100 * v, 2) for s, v in e["accuracy"]["split_means"].items()},
                    }
                    for e in exp["spread"]
                ]
            )
        if exp.get("split_comparisons"):
            tables[f"{exp['name']}__comparisons_over_splits"] = pd.DataFrame(
                [
                    {
                        "B": f"{c['b_name']} · {c['b']['recipe']}",
                        "A": f"{c['a_name']} · {c['a']['recipe']}",
                        "splits": c["splits"],
                        "delta accuracy": round(100 * c["accuracy_diff"], 2),
                        **{f"delta split {s}": round(100 * d, 2) for s, d in c["split_diffs"].items()},
                        "t": c["t"],
                        "df": c["df"],
                        "p": c["p_value"],
                        "Holm p": c["p_holm"],
                        "test": c["test"],
                    }
                    for c in exp["split_comparisons"]
                ]
            )
        if exp.get("screening"):
            rows = []
            for t in exp["screening"]["rows"]:
                a = t["roc_pr"]["abnormal"] or {}
                row = {
                    "model": t["paper_name"],
                    "recipe": t["recipe"],
                    "AUC abnormal": a.get("auc"),
                    "AUC 95% CI": a.get("auc_ci"),
                    "AP abnormal": a.get("average_precision"),
                    "AP 95% CI": a.get("average_precision_ci"),
                    "macro AUC": t["roc_pr"]["macro_auc"],
                    "ECE": t["calibration"]["ece"],
                    "ECE 95% CI": t["calibration"].get("ece_ci"),
                    "Brier": t["calibration"].get("brier"),
                    "NLL": t["calibration"].get("nll"),
                    "ECE temperature-scaled": (t.get("temperature") or {}).get("test_ece", {}).get("scaled"),
                    "temperature": (t.get("temperature") or {}).get("temperature"),
                    "temperature not estimable": (t.get("temperature") or {}).get("not_estimable"),
                }
                for p in t["operating_points"]:
                    where = f"at val {p['kind']} {p['target']:g}"
                    row[f"{where}: threshold"] = p["threshold"]
                    row[f"{where}: test sensitivity"] = p["test"]["sensitivity"] if p["threshold"] is not None else None
                    row[f"{where}: test specificity"] = p["test"]["specificity"] if p["threshold"] is not None else None
                rows.append(row)
            tables[f"{exp['name']}__screening"] = pd.DataFrame(rows)
    # a table of synthetic data says so in every row, in every format it is written in
    synthetic = {f"data__{d['name']}" for d in context["datasets"] if d.get("synthetic")}
    synthetic |= {
        name
        for e in context["experiments"]
        if e.get("synthetic")
        for name in tables
        if name.startswith(f"{e['name']}__")
    }
    for name in synthetic:
        tables[name].insert(0, "data", "synthetic")
    for c in context["compression"]:
        if c.get("missing"):
            tables[f"{c['experiment']}__compression"] = _status_table(c["missing"])
            continue
        keys = (
            "precision",
            "size_mib",
            "accuracy",
            "delta_accuracy",
            "f1_macro",
            "agreement_with_fp32",
            "ms_per_image",
            "device",
            "note",
        )
        tables[f"{c['experiment']}__compression"] = pd.DataFrame([{k: r.get(k) for k in keys} for r in c["rows"]])
        if any(e["name"] == c["experiment"] and e.get("synthetic") for e in context["experiments"]):
            tables[f"{c['experiment']}__compression"].insert(0, "data", "synthetic")
    if context.get("transfer"):
        keys = (
            "source",
            "source_dataset",
            "target",
            "in_domain",
            "n",
            "n_abnormal",
            "accuracy",
            "accuracy_ci",
            "sensitivity",
            "sensitivity_ci",
            "specificity",
            "specificity_ci",
        )
        sets = set(context.get("synthetic_sets") or [])
        tables["transfer__matrix"] = pd.DataFrame(
            [
                {
                    **({"data": "synthetic" if {c["source_dataset"], c["target"]} & sets else "real"} if sets else {}),
                    **{k: c.get(k) for k in keys},
                }
                for c in context["transfer"]["cells"]
            ]
        )
    prov = context["provenance"]
    tables["provenance__libraries"] = pd.DataFrame(
        [{"package": "python", "version": prov["python"]}]
        + [{"package": k, "version": v} for k, v in prov["libraries"].items()]
    )
    tables["provenance__rule_times"] = pd.DataFrame(prov["rule_times"])
    return tables


def _split_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """A column of [low, high] intervals becomes two numeric columns, ``<name> low`` and ``<name> high``."""
    out = frame.copy()
    for column in frame.columns:
        values = [v for v in frame[column] if v is not None and not (isinstance(v, float) and np.isnan(v))]
        if values and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in values):
            at = list(out.columns).index(column)
            pairs = [v if isinstance(v, (list, tuple)) else (None, None) for v in frame[column]]
            out = out.drop(columns=column)
            out.insert(at, f"{column} high", [p[1] for p in pairs])
            out.insert(at, f"{column} low", [p[0] for p in pairs])
    return out


def write_report_files(context: dict, folder: Path) -> list[Path]:
    """Each figure and table of the report as its own file (atomically, into a fresh ``folder``): every
    table as CSV (spreadsheet-safe), LaTeX (booktabs rules) and Markdown, ready to cite."""
    import shutil

    from .._io import partial_path

    files: dict[str, str] = {}
    for name, frame in report_tables(context).items():
        frame = _split_intervals(frame)
        files[f"{name}.csv"] = frame.pipe(spreadsheet_safe).to_csv(index=False)
        files[f"{name}.tex"] = frame.to_latex(index=False, escape=True, na_rep="–", float_format="%.4g")
        files[f"{name}.md"] = frame.to_markdown(index=False, floatfmt=".4g", missingval="–") + "\n"
    for exp in context["experiments"]:
        files[f"{exp['name']}__accuracy.html"] = _standalone(exp["figure"], context["plotly_js"])
        if exp.get("curve"):
            files[f"{exp['name']}__learning_curve.html"] = _standalone(exp["curve"], context["plotly_js"])
        if exp.get("screening") and exp["screening"]["roc"]:
            files[f"{exp['name']}__roc.html"] = _standalone(exp["screening"]["roc"], context["plotly_js"])
            files[f"{exp['name']}__pr.html"] = _standalone(exp["screening"]["pr"], context["plotly_js"])
            files[f"{exp['name']}__reliability.html"] = _standalone(
                exp["screening"]["reliability"], context["plotly_js"]
            )
    for c in context["compression"]:
        if not c.get("missing"):
            files[f"{c['experiment']}__compression.html"] = _standalone(c["figure"], context["plotly_js"])
    if context.get("transfer"):
        files["transfer__matrix.html"] = _standalone(context["transfer"]["figure"], context["plotly_js"])
    for i, a in enumerate(a for a in context["analyses"] if not a.get("missing")):
        files[f"{a['experiment']}__tsne{i or ''}.html"] = _standalone(a["tsne"], context["plotly_js"])
    files["provenance__config.yaml"] = context["provenance"]["config_yaml"]

    # the names written, so that a later run can tell a file someone put here (see :func:`foreign_report_files`)
    files[REPORT_FILES_INDEX] = "".join(f"{name}\n" for name in sorted(files))
    tmp = partial_path(folder)
    tmp.mkdir(parents=True)
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    except Exception as err:
        full = disk_full(err, folder / "x")
        if full is not None:
            raise full from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [folder / name for name in files if name != REPORT_FILES_INDEX]
