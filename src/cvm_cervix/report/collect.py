"""Everything the template shows, gathered from the report rule's inputs into one context.

:func:`collect` takes the rule's files as :class:`~cvm_cervix.report_inputs.ReportInputs` (typed, by run,
dataset and experiment) and the plan's status of the results folder (what is missing, and why); it
names no results file itself. Each part of the report is one function here: the datasets, an
experiment's table of runs, the first seed's details (compression, robustness, analysis), the run details.
"""

from __future__ import annotations

import datetime as _dt

import pandas as pd

from .._io import read_json
from ..errors import CvmError
from ..intended_use import INTENDED_USE, LIMITATIONS, SYNTHETIC
from ..labels import abnormal_classes
from ..models import get_model_spec
from ..plan import STATS_FORMAT
from ..precisions import recommend
from ..report_inputs import ReportInputs, RunFiles
from ..runs import (
    Run,
    all_runs,
    dataset_spec,
    experiment_runs,
    experiment_seeds,
    experiment_splits,
    run_settings,
    start_label,
    used_datasets,
)
from ..stats import corruption_errors
from ..status import is_complete, plan_status
from ._common import paper_metrics, paper_results, row_name
from .figures import (
    compression_figure,
    confusion_figure,
    critical_difference_figure,
    curves_figure,
    experiment_figure,
    learning_curve,
    recipe_robustness_figure,
    reliability_figure,
)
from .screening import screening_section
from .sections import (
    _missing_dataset,
    aggregate_runs,
    analysis_section,
    checklists,
    compression_rows,
    dataset_section,
    failures_table,
    mixed_precision_contrasts,
    paper_confusions,
    robustness_section,
    transfer_section,
)


def collect(config: dict, inputs: ReportInputs) -> dict:
    """Everything the template shows, read from the rule's ``inputs``.

    Whatever the plan asks for and the results folder lacks (a failed job and what depends on it) is
    shown as missing, with the rule, its log and the error line, never left out of a table.
    """
    status = plan_status(config, inputs.results)
    datasets = dataset_sections(config, inputs, status)
    synthetic_sets = {d["name"] for d in datasets if d["synthetic"]}
    details: dict[str, list] = {"compression": [], "analyses": [], "robustness": []}
    run_details: dict[str, dict] = {}
    experiments = []
    for name in config["experiments"]:
        for part, items in first_seed_details(config, name, inputs, status).items():
            details[part] += items
        experiments.append(experiment_section(config, name, inputs, status, synthetic_sets, run_details))

    holm_across_experiments(experiments)
    reference = config.get("analysis", {}).get("reference", "cvm_cervix")

    import plotly.offline

    return {
        "title": config.get("report", {}).get("title", "CVM-Cervix reproduction report"),
        "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "incomplete": None
        if is_complete(status)
        else {
            "runs_missing": len(status["runs"]),
            "runs_total": len(all_runs(config)),
            "failures": failures_table(config, status),
        },
        "synthetic": bool(synthetic_sets),
        "synthetic_sets": sorted(synthetic_sets),
        "datasets": datasets,
        "glance": [g for e in experiments if (g := at_a_glance(e, reference)) is not None],
        "experiments": experiments,
        "runs": list(run_details.values()),
        **details,
        "intended_use": {"text": INTENDED_USE, "limitations": LIMITATIONS, "synthetic": SYNTHETIC},
        "checklists": checklists(
            {
                "transfer": bool(config.get("transfer")),
                "compression": bool(details["compression"]),
                "robustness": bool(details["robustness"]),
                "analysis": bool(details["analyses"]),
            }
        ),
        "transfer": transfer_section(config, inputs.transfer_matrix),
        "transfer_missing": status["transfer"].as_dict() if status["transfer"] else None,
        "reference": get_model_spec(config.get("analysis", {}).get("reference", "cvm_cervix")).paper_name,
        "train": config["train"],
        "paper": paper_results(),
        "abnormal_classes": abnormal_classes(config.get("analysis") or {"abnormal_classes": []}),
        "abnormal_set": (config.get("analysis") or {}).get("abnormal_set", "clinical"),
        "plotly_js": plotly.offline.get_plotlyjs(),
    }


def at_a_glance(experiment: dict, reference: str) -> dict | None:
    """The report's first screen for one experiment: its headline run (the reference model, plain recipe,
    else its first finished row), test accuracy with its interval beside the paper's, and the referral
    at the first coverage asked (marginal sets), where there is one."""
    done = [r for r in experiment["rows"] if "test" in r]
    if not done:
        return None
    row = next((r for r in done if r["model"] == reference and r["recipe"] == "none"), done[0])
    acc = row["test"]["accuracy"]
    intervals = (row.get("stats") or {}).get("intervals")
    referral = next(
        (r for r in ((experiment.get("screening") or {}).get("referral") or []) if r["label"] == row_name(row)), None
    )
    first = next((x for x in (referral or {}).get("rows", []) if x.get("method", "marginal") == "marginal"), None)
    return {
        "experiment": experiment["name"],
        "title": experiment["title"],
        "synthetic": experiment["synthetic"],
        "model": row_name(row),
        "accuracy": acc["mean"],
        "sd": acc["sd"],
        "runs": acc["n"],
        # one run: its Wilson interval (from the statistics); several: mean ± sd, shown as such
        "interval": intervals if acc["n"] == 1 and intervals else None,
        "paper": (row.get("paper_test") or {}).get("accuracy"),
        "referral": first,
        "missing_rows": len(experiment["rows"]) - len(done),
    }


def holm_across_experiments(experiments: list[dict]) -> None:
    """Holm's adjustment over every distinct comparison of the report, one family: the same two runs
    compared in two experiments on one dataset are one test, adjusted once (``p_holm_all``)."""
    import json

    from ..stats import holm

    key = lambda e, c: json.dumps([e["dataset"], c["a"], c["b"]], sort_keys=True)  # noqa: E731
    distinct = {key(e, c): c["p_value"] for e in experiments for c in e["comparisons"]}
    adjusted = dict(zip(distinct, holm(list(distinct.values())), strict=True))
    for e in experiments:
        for c in e["comparisons"]:
            c["p_holm_all"] = adjusted[key(e, c)]


def dataset_sections(config: dict, inputs: ReportInputs, status: dict) -> list[dict]:
    """Each prepared dataset's section, or the failure that left it missing."""
    paper_for_dataset = {}
    for exp in config["experiments"].values():
        if exp.get("paper"):  # the first experiment of the dataset that reproduces a table of the paper
            paper_for_dataset.setdefault(exp["dataset"], exp["paper"])
    out = []
    for name in used_datasets(config):
        spec = dataset_spec(config, name)
        if name in status["datasets"]:
            out.append(_missing_dataset(name, spec, status["datasets"][name]))
            continue
        parts = [inputs.datasets[p] for p in spec.get("parts") or []]
        out.append(dataset_section(name, spec, inputs.datasets[name], paper_for_dataset.get(name), parts))
    return out


def _first_seed_runs(config: dict, name: str) -> list[Run]:
    """The experiment's runs at its first seed and split: the ones compressed, analysed and shown in detail."""
    first_seed, first_dataset = experiment_seeds(config, name)[0], experiment_splits(config, name)[0][1]
    return [r for r in experiment_runs(config, name) if r.seed == first_seed and r.dataset == first_dataset]


def first_seed_details(config: dict, name: str, inputs: ReportInputs, status: dict) -> dict[str, list]:
    """Compression, robustness and analysis of the experiment's first-seed runs, where it asks for them."""
    exp = config["experiments"][name]
    out: dict[str, list] = {"compression": [], "robustness": [], "analyses": []}
    for run in _first_seed_runs(config, name):
        label = f"{run.dataset} · {run.model} · recipe {run.recipe} · seed {run.seed}"
        head = {"experiment": name, "label": label}
        if exp.get("compress"):
            gap = next((status["compress"][(run, p)] for p in exp["compress"] if (run, p) in status["compress"]), None)
            if gap:
                out["compression"].append({**head, "missing": gap.as_dict()})
            else:
                rows = compression_rows(inputs.run(run), exp["compress"])
                out["compression"].append(
                    {
                        **head,
                        "rows": rows,
                        "recommendation": recommend(rows),
                        "figure": compression_figure(rows, f"Compression: {label}"),
                    }
                )
        if exp.get("robustness"):
            if run in status["robustness"]:
                out["robustness"].append({**head, "missing": status["robustness"][run].as_dict()})
            else:
                out["robustness"].append(robustness_section(read_json(inputs.run(run).robustness), label, name))
        if exp.get("analysis"):
            if run in status["analysis"]:
                out["analyses"].append({**head, "missing": status["analysis"][run].as_dict()})
            else:
                files = inputs.run(run)
                out["analyses"].append(analysis_section(files, label, read_json(files.metrics)["classes"], name))
    _corruption_errors(exp, out["robustness"])
    return out


def _corruption_errors(exp: dict, sections: list[dict]) -> None:
    """Each robustness section's mCE against the experiment's first model (Hendrycks & Dietterich's
    baseline), where that model's run has its robustness too and is not the run itself."""
    measured = [r for r in sections if "result" in r]
    base = next((r for r in measured if r["result"]["model"] == exp["models"][0]), None)
    for r in measured:
        if base is not None and r is not base:
            r["mce"] = {"baseline": base["label"], **(corruption_errors(r["result"], base["result"]) or {})}


def experiment_section(
    config: dict, name: str, inputs: ReportInputs, status: dict, synthetic_sets: set, run_details: dict
) -> dict:
    """One experiment: its table of models (mean ± sd over its runs beside the paper), statistics, screening
    view and figures; each model's first run joins ``run_details`` (once, keyed by its folder)."""
    exp = config["experiments"][name]
    seeds = experiment_seeds(config, name)
    split_datasets = experiment_splits(config, name)  # (split seed, prepared dataset), first split first
    splits, first_dataset = [s for s, _ in split_datasets], split_datasets[0][1]
    stats_file = inputs.stats.get(name)
    present = stats_file is not None and stats_file.is_file()  # else its job failed: shown as missing
    stats_json = read_json(stats_file) if present else {"runs": [], "contrasts": []}
    if present and stats_json.get("format") != STATS_FORMAT:
        raise CvmError(
            f"{stats_file} holds statistics of another layout (format {stats_json.get('format', 1)}, this version "
            f"writes {STATS_FORMAT}); run the workflow again: its statistics job makes them anew"
        )
    stats = {(e["model"], e["recipe"], e["seed"], e.get("split_seed", 0)): e for e in stats_json["runs"]}

    def names(c):
        return {
            "a_name": get_model_spec(c["a"]["model"]).paper_name,
            "b_name": get_model_spec(c["b"]["model"]).paper_name,
        }

    rows = model_rows(config, name, inputs, status, stats, run_details)
    title = exp.get("title", name)
    done = [r for r in rows if "test" in r]
    return {
        "name": name,
        "title": title,
        "dataset": exp["dataset"],
        "paper": exp.get("paper"),
        "synthetic": exp["dataset"] in synthetic_sets,
        "seeds": seeds,
        "first_seed": seeds[0],
        "splits": splits,
        "rows": rows,
        "mixed_precision": mixed_precision_contrasts(rows, config.get("variants") or {}),
        # test metrics per source dataset (a combined set) and per configured subgroup column
        "subgroups": [
            {"label": row_name(r), "column": column, "rows": values}
            for r in rows
            if r.get("stats")
            for column, values in (r["stats"].get("subgroups") or {}).items()
        ],
        "comparisons": [{**c, **names(c)} for c in stats_json.get("contrasts", [])],
        # each recipe's robustness against the same model's `none` run, paired over the same test images
        "recipe_gains": (
            gains := [
                # a normalised recipe's reference stain (None: none, or statistics written before the key)
                {**g, "stain": g.get("stain"), "paper_name": get_model_spec(g["model"]).paper_name}
                for g in stats_json.get("robustness_gains", [])
            ]
        ),
        "recipe_figure": recipe_robustness_figure(gains, f"Robustness by recipe: {name}") if gains else "",
        # the models ranked over the splits and seeds (Friedman, Nemenyi), or why not
        "ranking": _ranking(stats_json.get("ranking"), name),
        # each model's first run with test-time flips, beside itself
        "tta": [{"label": row_name(r), **r["stats"]["tta"]} for r in rows if r.get("stats") and r["stats"].get("tta")],
        # each model's seeds averaged into one predictor, beside the seeds
        "ensembles": [
            {**e, "paper_name": get_model_spec(e["model"]).paper_name} for e in stats_json.get("ensembles", [])
        ],
        # another split of the same cells (the grouped split) against its baseline experiment's runs
        "baseline": exp.get("baseline"),
        "gaps": [{**g, "model": get_model_spec(g["model"]).paper_name} for g in stats_json.get("baseline_gaps", [])],
        "split_comparisons": [{**c, **names(c)} for c in stats_json.get("split_contrasts", [])],
        "spread": [
            {**e, "paper_name": get_model_spec(e["model"]).paper_name}
            for e in stats_json.get("spread", [])
            if e["splits"] > 1
        ],
        "screening": screening_section(
            name,
            rows,
            stats,
            config.get("analysis", {}).get("reference", "cvm_cervix"),
            seeds,
            exp.get("paper"),
            splits,
        ),
        "stats_missing": status["stats"][name].as_dict() if name in status["stats"] else None,
        "not_plotted": [row_name(r) for r in rows if "test" not in r],
        "figure": experiment_figure(
            done,
            f"Test accuracy: {title}",
            bool(exp.get("paper")),
            "seed" if len(splits) == 1 else "run (split × seed)",
        )
        if done
        else "",
        "curve": _learning_curve(config, first_dataset, done, seeds[0], f"Learning curve: {title}") if done else None,
    }


def _ranking(ranking: dict | None, title: str) -> dict | None:
    """The statistics' ranking with paper names, and its critical-difference diagram where there is one."""
    if not ranking:
        return None

    def name(n: str) -> str:
        model, _, recipe = n.partition(" (")
        try:
            return get_model_spec(model).paper_name + (f" ({recipe}" if recipe else "")
        except CvmError:
            return n

    out = {**ranking, "treatments": [name(n) for n in ranking["treatments"]]}
    result = ranking.get("result")
    if result:
        result = {
            **result,
            "mean_ranks": {name(k): v for k, v in result["mean_ranks"].items()},
            "nemenyi": [{**p, "a": name(p["a"]), "b": name(p["b"])} for p in result["nemenyi"]],
        }
        out["result"] = result
        out["figure"] = critical_difference_figure(result, f"Critical difference: {title}")
    return out


def model_rows(
    config: dict, name: str, inputs: ReportInputs, status: dict, stats: dict, run_details: dict
) -> list[dict]:
    """One row per model and recipe: its runs' metrics aggregated over seeds (and splits), the paper's
    numbers and the difference, its statistics; a model whose every run is missing keeps its row, marked."""
    exp = config["experiments"][name]
    seeds = experiment_seeds(config, name)
    split_datasets = experiment_splits(config, name)
    splits = [s for s, _ in split_datasets]
    split_of = {d: s for s, d in split_datasets}
    groups: dict[tuple, list[Run]] = {}
    for run in experiment_runs(config, name):
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
        files = [inputs.run(r) for r in present]
        agg = aggregate_runs(files)
        row.update(
            agg,
            stats=stats.get((model, recipe, seeds[0], splits[0])),
            stats_seeds=[stats[(model, recipe, s, p)] for p in splits for s in seeds if (model, recipe, s, p) in stats],
        )
        for split in ("val", "test"):
            paper = row[f"paper_{split}"]
            row[f"diff_{split}"] = {k: agg[split][k]["mean"] - paper[k] for k in paper} if paper else None
        metrics = read_json(files[0].metrics)
        row["precision"] = metrics.get("precision")
        row["per_class"] = {
            "seed": metrics["seed"],
            **{split: metrics[split]["per_class"] for split in ("val", "test")},
        }
        rows.append(row)
        key = str(files[0].folder)
        if key not in run_details:
            run_details[key] = run_detail(files[0], present[0], metrics, row, exp.get("paper"), inputs)
    return rows


def run_detail(files: RunFiles, run: Run, metrics: dict, row: dict, paper: str | None, inputs: ReportInputs) -> dict:
    """A run shown in detail: its per-class metrics, confusion matrices, training curves and calibration."""
    label = f"{run.dataset} · {run.model} · recipe {run.recipe} · seed {metrics['seed']}"
    return {
        "label": label,
        "path": files.folder.relative_to(inputs.results).as_posix()
        if files.folder.is_relative_to(inputs.results)
        else str(files.folder),
        "metrics": metrics,
        "paper_confusions": paper_confusions(metrics) if paper == "combined" else [],
        "confusion": confusion_figure(metrics, metrics["classes"], f"Confusion matrices: {label}"),
        "curves": curves_figure(pd.read_csv(files.history), f"Training curves: {label}"),
        # calibration per run, from the statistics job (where that job has run)
        "reliability": reliability_figure(row["stats"]["diagnostics"]["calibration"], f"Reliability (test): {label}")
        if row.get("stats") and row["stats"].get("diagnostics")
        else None,
    }


def _learning_curve(config: dict, dataset: str, rows: list[dict], seed: int, title: str) -> str | None:
    """Test accuracy against the share of the training split, one line per start (ImageNet, random,
    another run): drawn when the experiment's variants train on fractions (the fine-tuning question)."""
    points: dict[str, list] = {}
    for r in rows:
        run = Run(dataset, r["model"], r["recipe"], seed)
        settings, start = run_settings(config, run), start_label(config, run)
        points.setdefault(f"{r['paper_name']}, {start}", []).append((100 * settings.get("train_fraction", 1.0), r))
    if not any(x < 100 for pts in points.values() for x, _ in pts):
        return None
    return learning_curve(points, title)
