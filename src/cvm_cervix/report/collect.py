"""Everything the template shows, gathered from the workflow's output files into one context."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import pandas as pd

from .._io import read_json
from ..intended_use import INTENDED_USE, LIMITATIONS, SYNTHETIC
from ..labels import abnormal_classes
from ..models import get_model_spec
from ..paths import file_name, path
from ..plan import Plan
from ..precisions import recommend
from ..runs import all_runs, dataset_spec, experiment_runs, experiment_seeds, experiment_splits, used_datasets
from ..status import is_complete, plan_status
from ._common import paper_metrics, paper_results, row_name
from .figures import confusion_figure, curves_figure, experiment_figure, learning_curve
from .screening import compression_figure, reliability_figure, screening_section
from .sections import (
    _missing_dataset,
    aggregate_runs,
    analysis_section,
    baseline_gaps,
    checklists,
    compression_rows,
    dataset_section,
    failures_table,
    mixed_precision_contrasts,
    paper_confusions,
    robustness_section,
    transfer_section,
)


def collect(config: dict, results: str | os.PathLike | None = None) -> dict:
    """Everything the template shows, read from the workflow's output files.

    Whatever the plan asks for and the results folder lacks (a failed job and what depends on it) is
    shown as missing, with the rule, its log and the error line, never left out of a table.
    """
    results = Path(results or config.get("results", "results"))
    status = plan_status(config, results)
    paper_for_dataset = {}
    for exp in config["experiments"].values():
        if exp.get("paper"):  # the first experiment of the dataset that reproduces a table of the paper
            paper_for_dataset.setdefault(exp["dataset"], exp["paper"])
    cached = set(Plan(config).cached_datasets())
    ds_sections = [
        _missing_dataset(name, dataset_spec(config, name), status["datasets"][name])
        if name in status["datasets"]
        else dataset_section(
            name,
            dataset_spec(config, name),
            Path(path("manifest", results, dataset=name)).parent,
            paper_for_dataset.get(name),
            cache=Path(path("cache", results, dataset=name, size=config["train"]["img_size"]))
            if name in cached
            else None,
        )
        for name in used_datasets(config)
    ]
    synthetic_sets = {d["name"] for d in ds_sections if d["synthetic"]}

    experiments, run_details, seen = [], [], set()
    compression, analyses, robustness = [], [], []
    for exp_name, exp in config["experiments"].items():
        runs = experiment_runs(config, exp_name)
        seeds = experiment_seeds(config, exp_name)
        first_seed = seeds[0]
        split_datasets = experiment_splits(config, exp_name)  # (split seed, prepared dataset), first split first
        splits, first_dataset = [s for s, _ in split_datasets], split_datasets[0][1]
        split_of = {d: s for s, d in split_datasets}
        stats_file = Path(path("stats", results, experiment=exp_name))
        stats_json = read_json(stats_file) if stats_file.is_file() else {"runs": [], "contrasts": []}
        stats = {(e["model"], e["recipe"], e["seed"], e.get("split_seed", 0)): e for e in stats_json["runs"]}

        def names(c):
            return {
                "a_name": get_model_spec(c["a"]["model"]).paper_name,
                "b_name": get_model_spec(c["b"]["model"]).paper_name,
            }

        comparisons = [{**c, **names(c)} for c in stats_json.get("contrasts", [])]
        split_comparisons = [{**c, **names(c)} for c in stats_json.get("split_contrasts", [])]
        spread = [
            {**e, "paper_name": get_model_spec(e["model"]).paper_name}
            for e in stats_json.get("spread", [])
            if e["splits"] > 1
        ]
        for run in runs:
            if run.seed != first_seed or run.dataset != first_dataset:
                continue
            label = f"{run.dataset} · {run.model} · recipe {run.recipe} · seed {run.seed}"
            if exp.get("compress"):
                gap = next(
                    (status["compress"][(run, p)] for p in exp["compress"] if (run, p) in status["compress"]), None
                )
                if gap:
                    compression.append({"experiment": exp_name, "label": label, "missing": gap.as_dict()})
                else:
                    rows = compression_rows(Path(path("run", results, run)), exp["compress"])
                    compression.append(
                        {
                            "experiment": exp_name,
                            "label": label,
                            "rows": rows,
                            "recommendation": recommend(rows),
                            "figure": compression_figure(rows, f"Compression: {label}"),
                        }
                    )
            if exp.get("robustness"):
                if run in status["robustness"]:
                    robustness.append(
                        {"label": label, "experiment": exp_name, "missing": status["robustness"][run].as_dict()}
                    )
                else:
                    robustness.append(robustness_section(read_json(path("robustness", results, run)), label, exp_name))
            if exp.get("analysis"):
                if run in status["analysis"]:
                    analyses.append(
                        {"label": label, "experiment": exp_name, "missing": status["analysis"][run].as_dict()}
                    )
                else:
                    metrics = read_json(path("metrics", results, run))
                    analyses.append(
                        analysis_section(Path(path("run", results, run)), label, metrics["classes"], exp_name)
                    )
        groups: dict[tuple, list] = {}
        for run in runs:
            groups.setdefault((run.model, run.recipe), []).append(run)
        rows = []
        for (model, recipe), group in groups.items():
            present = [r for r in group if r not in status["runs"]]
            absent = [r for r in group if r in status["runs"]]
            row = {
                "model": model,
                "paper_name": get_model_spec(model).paper_name,
                "recipe": recipe,
                "missing_seeds": [
                    str(r.seed) if len(splits) == 1 else f"{r.seed} (split {split_of[r.dataset]})" for r in absent
                ],
                "missing": status["runs"][absent[0]].as_dict() if absent else None,
            }
            for split in ("val", "test"):
                row[f"paper_{split}"] = paper_metrics(exp.get("paper"), model, recipe, split)
            if not present:  # every seed missing: the row stays, marked, with the paper's numbers
                rows.append({**row, "stats": None, "stats_seeds": [], "diff_val": None, "diff_test": None})
                continue
            dirs = [Path(path("run", results, r)) for r in present]
            agg = aggregate_runs(dirs)
            row.update(
                agg,
                stats=stats.get((model, recipe, first_seed, splits[0])),
                stats_seeds=[
                    stats[(model, recipe, s, p)] for p in splits for s in seeds if (model, recipe, s, p) in stats
                ],
            )
            for split in ("val", "test"):
                paper = row[f"paper_{split}"]
                row[f"diff_{split}"] = {k: agg[split][k]["mean"] - paper[k] for k in paper} if paper else None
            rows.append(row)
            first = dirs[0]
            key = str(first)
            metrics = read_json(first / file_name("metrics"))
            row["precision"] = metrics.get("precision")
            row["per_class"] = {
                "seed": metrics["seed"],
                **{split: metrics[split]["per_class"] for split in ("val", "test")},
            }
            if key not in seen:
                seen.add(key)
                label = f"{present[0].dataset} · {model} · recipe {recipe} · seed {metrics['seed']}"
                run_details.append(
                    {
                        "label": label,
                        "path": str(first.relative_to(results)),
                        "metrics": metrics,
                        "paper_confusions": paper_confusions(metrics) if exp.get("paper") == "combined" else [],
                        "confusion": confusion_figure(metrics, metrics["classes"], f"Confusion matrices: {label}"),
                        "curves": curves_figure(pd.read_csv(first / file_name("history")), f"Training curves: {label}"),
                        # calibration per run, from the statistics job (where that job has run)
                        "reliability": reliability_figure(
                            row["stats"]["diagnostics"]["calibration"], f"Reliability (test): {label}"
                        )
                        if row.get("stats") and row["stats"].get("diagnostics")
                        else None,
                    }
                )
        title = exp.get("title", exp_name)
        done = [r for r in rows if "test" in r]
        screening = screening_section(
            exp_name,
            rows,
            stats,
            config.get("analysis", {}).get("reference", "cvm_cervix"),
            seeds,
            exp.get("paper"),
            splits,
        )
        experiments.append(
            {
                "name": exp_name,
                "title": title,
                "dataset": exp["dataset"],
                "paper": exp.get("paper"),
                "synthetic": exp["dataset"] in synthetic_sets,
                "seeds": seeds,
                "first_seed": first_seed,
                "splits": splits,
                "rows": rows,
                "mixed_precision": mixed_precision_contrasts(rows, config.get("variants") or {}),
                # test metrics per source dataset (a combined set) and per configured subgroup column
                "subgroups": [
                    {
                        "label": row_name(r),
                        "column": column,
                        "rows": values,
                    }
                    for r in rows
                    if r.get("stats")
                    for column, values in (r["stats"].get("subgroups") or {}).items()
                ],
                "comparisons": comparisons,
                "split_comparisons": split_comparisons,
                "spread": spread,
                "screening": screening,
                "stats_missing": status["stats"][exp_name].as_dict() if exp_name in status["stats"] else None,
                "not_plotted": [row_name(r) for r in rows if "test" not in r],
                "figure": experiment_figure(
                    done,
                    f"Test accuracy: {title}",
                    bool(exp.get("paper")),
                    "seed" if len(splits) == 1 else "run (split × seed)",
                )
                if done
                else "",
                "curve": learning_curve(config, first_dataset, done, first_seed, f"Learning curve: {title}")
                if done
                else None,
            }
        )

    # an experiment on another split of the same cells (the grouped split), against its baseline's runs
    by_name = {e["name"]: e for e in experiments}
    for e in experiments:
        e["baseline"] = config["experiments"][e["name"]].get("baseline")
        base = by_name.get(e["baseline"])
        e["gaps"] = baseline_gaps(e["rows"], base["rows"]) if base else []

    import plotly.offline

    planned = all_runs(config)
    return {
        "title": config.get("report", {}).get("title", "CVM-Cervix reproduction report"),
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "incomplete": None
        if is_complete(status)
        else {
            "runs_missing": len(status["runs"]),
            "runs_total": len(planned),
            "failures": failures_table(config, status),
        },
        "synthetic": bool(synthetic_sets),
        "synthetic_sets": sorted(synthetic_sets),
        "datasets": ds_sections,
        "experiments": experiments,
        "runs": run_details,
        "compression": compression,
        "analyses": analyses,
        "robustness": robustness,
        "intended_use": {"text": INTENDED_USE, "limitations": LIMITATIONS, "synthetic": SYNTHETIC},
        "checklists": checklists(
            {
                "transfer": bool(config.get("transfer")),
                "compression": bool(compression),
                "robustness": bool(robustness),
                "analysis": bool(analyses),
            }
        ),
        "transfer": transfer_section(config, results),
        "transfer_missing": status["transfer"].as_dict() if status["transfer"] else None,
        "reference": get_model_spec(config.get("analysis", {}).get("reference", "cvm_cervix")).paper_name,
        "train": config["train"],
        "paper": paper_results(),
        "abnormal_classes": abnormal_classes(config.get("analysis") or {"abnormal_classes": []}),
        "abnormal_set": (config.get("analysis") or {}).get("abnormal_set", "clinical"),
        "plotly_js": plotly.offline.get_plotlyjs(),
    }
