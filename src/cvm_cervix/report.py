"""The HTML report: every table and plot computed from files the workflow wrote.

The paper's numbers come only from ``paper_results.yaml`` and are labelled as the paper's.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_path, package_yaml, read_json, read_table, spreadsheet_safe
from .config import all_runs, dataset_spec, experiment_runs, experiment_seeds, experiment_splits, used_datasets
from .data import read_manifest, split_counts
from .errors import disk_full
from .labels import abnormal_classes
from .models import get_model_spec
from .plan import Plan, path
from .precisions import recommend
from .report_state import REPORT_FILES_INDEX, head_marks, inputs_fingerprint
from .status import is_complete, plan_status

TEMPLATES = Path(__file__).resolve().parent / "templates"  # package data: works from an installed wheel
METRICS = (("precision", "precision_macro"), ("recall", "recall_macro"), ("f1", "f1_macro"), ("accuracy", "accuracy"))


def paper_results() -> dict:
    """The paper's reported numbers (percent), from the project's one data file."""
    return package_yaml("paper_results.yaml")


def paper_metrics(paper_key: str | None, model: str, augment: str, split: str) -> dict | None:
    if not paper_key:
        return None
    return paper_results()["results"].get(paper_key, {}).get(model, {}).get(augment, {}).get(split)


def _mean_sd(values: list[float]) -> dict:
    arr = np.asarray(values, float)
    return {
        "mean": float(arr.mean()),
        "sd": float(arr.std(ddof=1)) if len(arr) > 1 else None,
        "n": len(arr),
        "values": [float(v) for v in arr],
    }


def _text(value) -> str:
    """A name as plotly text: plotly renders <b>, <br>, <a> and entities in labels, so escape them; the
    browser then shows the name exactly as written (a class folder may be named ``<img onerror=...>``)."""
    import html

    return html.escape(str(value), quote=False)


def aggregate_runs(run_dirs: list[Path]) -> dict:
    """Mean and standard deviation over seeds of each split's metrics (percent) and of the costs."""
    metrics = [read_json(d / "metrics.json") for d in run_dirs]
    trains = [read_json(d / "train.json") for d in run_dirs]
    out: dict = {"seeds": [m["seed"] for m in metrics]}
    for split in ("val", "test"):
        out[split] = {name: _mean_sd([100 * m[split][key] for m in metrics]) for name, key in METRICS}
        out[split]["ms_per_image"] = _mean_sd([m[split]["ms_per_image"] for m in metrics])
    out["cost"] = {
        "params_m": trains[0]["params"] / 1e6,
        "size_mib": metrics[0].get("size_mib", metrics[0]["size_mb"] * 1e6 / 2**20),
        "seconds_per_epoch": _mean_sd([t["seconds_per_epoch"] for t in trains]),
        "total_seconds": _mean_sd([t["total_seconds"] for t in trains]),
        "device": trains[0]["device_name"] or trains[0]["device"],
        "epochs": trains[0]["epochs"],
        "train_images": trains[0]["train_images"],
        "best_epoch": [t["best_epoch"] for t in trains],
    }
    return out


def _figure_html(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def confusion_figure(metrics: dict, classes: list[str], title: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation", "test"), horizontal_spacing=0.15)
    for col, split in enumerate(("val", "test"), start=1):
        z = np.asarray(metrics[split]["confusion"])
        names = [_text(c) for c in classes]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=names,
                y=names,
                colorscale="Blues",
                showscale=False,
                text=z,
                texttemplate="%{text}",
                hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="predicted", row=1, col=col, tickangle=45)
        fig.update_yaxes(title_text="true", autorange="reversed", row=1, col=col)
    side = max(360, 34 * len(classes) + 160)
    fig.update_layout(title=title, height=side, width=2 * side + 80, margin=dict(t=60, b=40))
    return _figure_html(fig)


def curves_figure(history: pd.DataFrame, title: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for col, metric in enumerate(("loss", "acc"), start=1):
        for split, dash in (("train", "solid"), ("val", "dash")):
            fig.add_trace(
                go.Scatter(
                    x=history["epoch"],
                    y=history[f"{split}_{metric}"],
                    mode="lines+markers",
                    name=f"{split} {metric}",
                    line=dict(dash=dash),
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(title=title, height=320, margin=dict(t=60, b=40))
    return _figure_html(fig)


def tsne_figure(tsne: pd.DataFrame, classes: list[str], title: str) -> str:
    """Interactive 3-D scatter of the t-SNE embedding: colour = true class, ✕ = misclassified."""
    import plotly.express as px
    import plotly.graph_objects as go

    palette = px.colors.qualitative.Dark24
    fig = go.Figure()
    for i, cls in enumerate(classes):
        for wrong in (False, True):
            part = tsne[(tsne["label"] == cls) & ((tsne["label"] != tsne["pred"]) == wrong)]
            if part.empty:
                continue
            fig.add_trace(
                go.Scatter3d(
                    x=part["x"],
                    y=part["y"],
                    z=part["z"],
                    mode="markers",
                    name=f"{_text(cls)}{' (misclassified)' if wrong else ''}",
                    legendgroup=_text(cls),
                    marker=dict(
                        size=5 if wrong else 3,
                        color=palette[i % len(palette)],
                        symbol="x" if wrong else "circle",
                        line=dict(width=0),
                    ),
                    text=[
                        f"true {_text(t)}<br>predicted {_text(p)}<br>{_text(Path(f).name)}"
                        for t, p, f in zip(part["label"], part["pred"], part["path"])
                    ],
                    hovertemplate="%{text}<extra></extra>",
                )
            )
    fig.update_layout(
        title=title,
        height=620,
        margin=dict(l=0, r=0, t=50, b=0),
        scene=dict(xaxis_title="t-SNE 1", yaxis_title="t-SNE 2", zaxis_title="t-SNE 3"),
    )
    return _figure_html(fig)


def _row_label(row: dict) -> str:
    return _text(row["paper_name"] + ("" if row["augment"] == "none" else f" · {row['augment']}"))


def learning_curve(config: dict, dataset: str, rows: list[dict], seed: int, title: str) -> str | None:
    """Test accuracy against the share of the training split, one line per start (ImageNet, random,
    another run): drawn when the experiment's variants train on fractions (the fine-tuning question)."""
    from .config import Run, run_settings, start_label

    points: dict[str, list] = {}
    for r in rows:
        run = Run(dataset, r["model"], r["augment"], seed)
        settings, start = run_settings(config, run), start_label(config, run)
        points.setdefault(f"{r['paper_name']}, {start}", []).append((100 * settings.get("train_fraction", 1.0), r))
    if not any(x < 100 for pts in points.values() for x, _ in pts):
        return None
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, pts in points.items():
        pts.sort(key=lambda p: p[0])
        mean = [r["test"]["accuracy"]["mean"] for _, r in pts]
        ci = [r["stats"]["bootstrap"]["accuracy"] if r.get("stats") else None for _, r in pts]
        fig.add_trace(
            go.Scatter(
                x=[x for x, _ in pts],
                y=mean,
                mode="lines+markers",
                name=_text(name),
                error_y=dict(
                    type="data",
                    array=[100 * c[1] - m if c else 0 for m, c in zip(mean, ci)],
                    arrayminus=[m - 100 * c[0] if c else 0 for m, c in zip(mean, ci)],
                    thickness=1.2,
                ),
                hovertemplate=_text(name) + "<br>%{x:.0f}% of the training split<br>"
                "test accuracy %{y:.2f}%<extra></extra>",
            )
        )
    fig.update_layout(
        title=_text(title),
        xaxis_title="share of the training split used (%)",
        yaxis_title="test accuracy (%, 95% CI)",
        height=380,
    )
    return _figure_html(fig)


def experiment_figure(rows: list[dict], title: str, paper: bool, each: str = "seed") -> str:
    """Test accuracy per model (the mean over its runs, with ± their sd, or one run with its 95%
    bootstrap interval), each seed (``each``: what one run is), and the paper's number.

    Many models (Table 3): a dot plot sorted by the reproduced accuracy, so one glance says which
    models the reproduction confirms. A few (the ablations): paired bars, reproduced beside paper.
    """
    import plotly.graph_objects as go

    rows = sorted(rows, key=lambda r: r["test"]["accuracy"]["mean"])
    labels = [_row_label(r) for r in rows]
    mean = [r["test"]["accuracy"]["mean"] for r in rows]
    # a bootstrap interval belongs to one run: around a mean over several runs the bars are ± their sd
    several = [r["test"]["accuracy"]["sd"] is not None for r in rows]
    ci = [r["stats"]["bootstrap"]["accuracy"] if r.get("stats") else None for r in rows]
    lo = [
        r["test"]["accuracy"]["sd"] if many_runs else (m - 100 * c[0] if c else 0)
        for m, r, c, many_runs in zip(mean, rows, ci, several)
    ]
    hi = [
        r["test"]["accuracy"]["sd"] if many_runs else (100 * c[1] - m if c else 0)
        for m, r, c, many_runs in zip(mean, rows, ci, several)
    ]
    bars = (
        "mean ± sd over runs"
        if all(several)
        else "mean, 95% CI"
        if not any(several)
        else "mean; bars: ± sd over runs, or one run's 95% CI"
    )
    seeds_x = [v for r in rows for v in r["test"]["accuracy"]["values"]]
    seeds_y = [label for r, label in zip(rows, labels) for _ in r["test"]["accuracy"]["values"]]
    papers = [(r["paper_test"] or {}).get("accuracy") for r in rows]
    fig = go.Figure()
    many = len(rows) >= 5
    error = dict(type="data", array=hi, arrayminus=lo, thickness=1.5)
    if many:
        fig.add_trace(
            go.Scatter(
                x=mean,
                y=labels,
                mode="markers",
                name=f"reproduced ({bars})",
                marker=dict(size=10, color="#1f5fbf"),
                error_x=error,
                hovertemplate="%{y}<br>reproduced %{x:.2f}%<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=seeds_x,
                y=seeds_y,
                mode="markers",
                name=f"each {each}",
                marker=dict(size=5, color="rgba(31,95,191,0.35)"),
                hovertemplate="%{y}<br>" + each + ": %{x:.2f}%<extra></extra>",
            )
        )
        if paper and any(p is not None for p in papers):
            fig.add_trace(
                go.Scatter(
                    x=papers,
                    y=labels,
                    mode="markers",
                    name="paper",
                    marker=dict(size=11, symbol="diamond-open", color="#a07800", line=dict(width=2)),
                    hovertemplate="%{y}<br>paper %{x:.2f}%<extra></extra>",
                )
            )
        fig.update_layout(height=max(260, 28 * len(rows) + 120), xaxis_title="test accuracy (%)")
    else:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=mean,
                name=f"reproduced ({bars})",
                marker_color="#1f5fbf",
                error_y=error,
                hovertemplate="%{x}<br>reproduced %{y:.2f}%<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=seeds_y,
                y=seeds_x,
                mode="markers",
                name=f"each {each}",
                marker=dict(size=6, color="rgba(0,0,0,0.45)"),
                hovertemplate="%{x}<br>" + each + ": %{y:.2f}%<extra></extra>",
            )
        )
        if paper and any(p is not None for p in papers):
            fig.add_trace(
                go.Bar(
                    x=labels,
                    y=papers,
                    name="paper",
                    marker_color="#e8c547",
                    hovertemplate="%{x}<br>paper %{y:.2f}%<extra></extra>",
                )
            )
        fig.update_layout(height=360, barmode="group", yaxis_title="test accuracy (%)")
    fig.update_layout(title=_text(title), margin=dict(t=50, b=40, l=10, r=10), legend=dict(orientation="h", y=-0.2))
    return _figure_html(fig)


def roc_figure(curves: list[tuple[str, dict]], title: str) -> str:
    """Abnormal-against-normal ROC curves, one per run, overlaid, with each AUC in the legend."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, c in curves:
        fig.add_trace(
            go.Scatter(x=c["roc"]["fpr"], y=c["roc"]["tpr"], mode="lines", name=f"{label} (AUC {c['auc']:.3f})")
        )
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance"))
    fig.update_layout(
        title=title,
        xaxis_title="1 − specificity (normal test images called abnormal)",
        yaxis_title="sensitivity (abnormal test images found)",
        height=460,
        legend={"font": {"size": 10}},
    )
    return _figure_html(fig)


def reliability_figure(calibration: dict, title: str) -> str:
    """Accuracy against confidence per bin (bars sized by images), the diagonal a calibrated model follows."""
    import plotly.graph_objects as go

    bins = [b for b in calibration["table"] if b["n"]]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=[(b["lo"] + b["hi"]) / 2 for b in bins],
            y=[b["accuracy"] for b in bins],
            width=[b["hi"] - b["lo"] for b in bins],
            name="accuracy in bin",
            customdata=[b["n"] for b in bins],
            hovertemplate="n=%{customdata}, accuracy %{y:.3f}",
        )
    )
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="calibrated")
    )
    fig.update_layout(
        title=_text(f"{title} (ECE {calibration['ece']:.3f}, {calibration['binning']})"),
        xaxis_title="confidence (top-class probability)",
        yaxis_title="accuracy",
        height=420,
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
    )
    return _figure_html(fig)


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
    classes are there. ``stats``: (model, augment, seed, split seed) -> the run's statistics."""
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
            table.append({"paper_name": r["paper_name"], "augment": r["augment"], "model": r["model"], **diag})
    if not table:
        return None
    curves = [
        (
            f"{t['paper_name']}"
            + ("" if t["augment"] == "none" else f" · {t['augment']}")
            + where(splits[0], seeds[0]),
            t["roc_pr"]["abnormal"],
        )
        for t in table
        if t["roc_pr"]["abnormal"]
    ]
    for (model, augment, seed, split), entry in sorted(stats.items()):
        diag = entry.get("diagnostics")
        if model == reference and (seed, split) != (seeds[0], splits[0]) and diag and diag["roc_pr"]["abnormal"]:
            curves.append(
                (
                    f"{get_model_spec(model).paper_name}"
                    + ("" if augment == "none" else f" · {augment}")
                    + where(split, seed),
                    diag["roc_pr"]["abnormal"],
                )
            )
    ref = next((t for t in table if t["model"] == reference), table[0])
    claim = ref["paper_claim"] if paper == "combined" else None
    return {
        "rows": table,
        "points": table[0]["operating_points"],
        "roc": roc_figure(curves, f"ROC, abnormal against normal (test): {exp_name}") if curves else "",
        "reliability": reliability_figure(ref["calibration"], f"Reliability (test): {ref['paper_name']}"),
        "reliability_of": ref["paper_name"],
        "claim": claim,
    }


def compression_figure(rows: list[dict], title: str) -> str:
    """Accuracy against size and against latency, one point per precision."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("size", "latency"), horizontal_spacing=0.12)
    names = [_text(r["precision"]) for r in rows]
    hover = [f"{n}<br>{_text(r['device'])}" for n, r in zip(names, rows)]
    for col, key, axis in ((1, "size_mib", "size (MiB)"), (2, "ms_per_image", "ms per image")):
        fig.add_trace(
            go.Scatter(
                x=[r[key] for r in rows],
                y=[100 * r["accuracy"] for r in rows],
                text=names,
                mode="markers+text",
                textposition="top center",
                showlegend=False,
                customdata=hover,
                marker=dict(size=10, color="#1f5fbf"),
                hovertemplate="%{customdata}<br>%{x:.2f}, accuracy %{y:.2f}%<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text=axis, type="log", row=1, col=col)
        fig.update_yaxes(title_text="test accuracy (%)", row=1, col=col)
    fig.update_layout(title=_text(title), height=360, margin=dict(t=60, b=40))
    return _figure_html(fig)


def _png_data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def analysis_section(run_path: Path, label: str, classes: list[str], experiment: str = "") -> dict:
    analysis = run_path / "analysis"
    gallery = read_json(analysis / "gallery.json")
    images = [{**img, "src": _png_data_uri(analysis / img["file"])} for img in gallery["images"]]
    return {
        "label": label,
        "experiment": experiment,
        "layer": gallery["layer"],
        "attention": gallery.get("attention"),
        "resolution": gallery.get("cam_resolution"),
        "pairs": gallery["pairs"],
        "images": images,
        "tsne": tsne_figure(read_table(analysis / "tsne.csv"), classes, f"t-SNE (3-D) of the test features: {label}"),
    }


def compression_rows(run_path: Path, precisions: list[str]) -> list[dict]:
    """float32 (evaluated in float32 by the compress step), then each compressed variant."""
    rows = [read_json(run_path / "compressed" / p / "metrics.json") for p in precisions]
    fp32 = rows[0]["fp32"]
    return [
        {
            "precision": "fp32",
            "size_mib": (run_path / "weights.safetensors").stat().st_size / 2**20,
            "accuracy": fp32["accuracy"],
            "f1_macro": fp32["f1_macro"],
            "delta_accuracy": 0.0,
            "delta_f1_macro": 0.0,
            "agreement_with_fp32": 1.0,
            "ms_per_image": fp32["ms_per_image"],
            "device": fp32["device"],
            "note": "float32 weights (the trained run), evaluated in float32",
        },
        *rows,
    ]


def paper_confusions(metrics: dict) -> list[dict]:
    """The paper's most frequent test confusions (Fig. 6) beside this run's counts of the same pairs."""
    classes, cm = metrics["classes"], metrics["test"]["confusion"]
    rows = []
    for item in paper_results().get("confusions", []):
        known = {item["label"], item["pred"]} <= set(classes)
        ours = cm[classes.index(item["label"])][classes.index(item["pred"])] if known else None
        rows.append({**item, "ours": ours})
    return rows


def dataset_section(name: str, spec: dict, data_dir: Path, paper_key: str | None) -> dict:
    manifest = read_manifest(data_dir / "manifest.csv")
    classes = read_json(data_dir / "classes.json")
    summary = read_json(data_dir / "summary.json")
    table = split_counts(manifest, classes)
    paper = (paper_results()["splits"].get(paper_key) or {}) if paper_key else {}
    rows = []
    for cls, row in table.iterrows():
        rows.append(
            {
                "class": cls,
                "train": int(row["train"]),
                "val": int(row["val"]),
                "test": int(row["test"]),
                "total": int(row["total"]),
                "paper": paper.get(cls),
            }
        )
    totals = table.sum()
    return {
        "name": name,
        "kind": spec["kind"],
        "synthetic": bool(summary.get("synthetic")),
        "split_of": spec.get("split_of"),
        "split_seed": spec.get("split_seed", 0),
        "split": summary.get("split", "stratified"),
        "rows": rows,
        "totals": {k: int(totals[k]) for k in ("train", "val", "test", "total")},
        "paper_totals": [sum(v[i] for v in paper.values()) for i in range(3)] if paper else None,
        "skipped": summary.get("skipped", []),
        "limits": summary.get("class_limits") or {},
        "duplicates": summary.get("duplicates", {}),
        "paper_key": paper_key,
        "paper_note": paper_results().get("split_notes", {}).get(paper_key) if paper_key else None,
    }


def _missing_dataset(name: str, spec: dict, failure) -> dict:
    return {
        "name": name,
        "kind": spec["kind"],
        "synthetic": spec["kind"] == "synthetic",
        "missing": failure.as_dict(),
        "split": spec.get("split", "stratified"),
        "rows": [],
        "paper_key": None,
    }


def failures_table(config: dict, status: dict) -> list[dict]:
    """One row per missing thing: what, the rule that failed (or did not run), its log, the error line."""
    rows = [{"what": f"dataset {name}", **f.as_dict()} for name, f in status["datasets"].items()]
    rows += [{"what": run.path, **f.as_dict()} for run, f in sorted(status["runs"].items())]
    caused = set(status["runs"].values())
    rows += [{"what": f"statistics of {name}", **f.as_dict()} for name, f in status["stats"].items() if f not in caused]
    rows += [
        {"what": f"{run.path} compressed to {p}", **f.as_dict()}
        for (run, p), f in sorted(status["compress"].items())
        if f not in caused
    ]
    rows += [
        {"what": f"{run.path} analysis", **f.as_dict()}
        for run, f in sorted(status["analysis"].items())
        if f not in caused
    ]
    if status["transfer"] and status["transfer"] not in caused:
        rows.append({"what": "transfer matrix", **status["transfer"].as_dict()})
    return rows


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
    ds_sections = [
        _missing_dataset(name, dataset_spec(config, name), status["datasets"][name])
        if name in status["datasets"]
        else dataset_section(name, dataset_spec(config, name), results / "data" / name, paper_for_dataset.get(name))
        for name in used_datasets(config)
    ]
    synthetic_sets = {d["name"] for d in ds_sections if d["synthetic"]}

    experiments, run_details, seen = [], [], set()
    compression, analyses = [], []
    for exp_name, exp in config["experiments"].items():
        runs = experiment_runs(config, exp_name)
        seeds = experiment_seeds(config, exp_name)
        first_seed = seeds[0]
        split_datasets = experiment_splits(config, exp_name)  # (split seed, prepared dataset), first split first
        splits, first_dataset = [s for s, _ in split_datasets], split_datasets[0][1]
        split_of = {d: s for s, d in split_datasets}
        stats_file = results / "stats" / f"{exp_name}.json"
        stats_json = read_json(stats_file) if stats_file.is_file() else {"runs": [], "contrasts": []}
        stats = {(e["model"], e["augment"], e["seed"], e.get("split_seed", 0)): e for e in stats_json["runs"]}

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
            label = f"{run.dataset} · {run.model} · augment {run.recipe} · seed {run.seed}"
            if exp.get("compress"):
                gap = next(
                    (status["compress"][(run, p)] for p in exp["compress"] if (run, p) in status["compress"]), None
                )
                if gap:
                    compression.append({"experiment": exp_name, "label": label, "missing": gap.as_dict()})
                else:
                    rows = compression_rows(results / run.path, exp["compress"])
                    compression.append(
                        {
                            "experiment": exp_name,
                            "label": label,
                            "rows": rows,
                            "recommendation": recommend(rows),
                            "figure": compression_figure(rows, f"Compression: {label}"),
                        }
                    )
            if exp.get("analysis"):
                if run in status["analysis"]:
                    analyses.append(
                        {"label": label, "experiment": exp_name, "missing": status["analysis"][run].as_dict()}
                    )
                else:
                    metrics = read_json(results / run.path / "metrics.json")
                    analyses.append(analysis_section(results / run.path, label, metrics["classes"], exp_name))
        groups: dict[tuple, list] = {}
        for run in runs:
            groups.setdefault((run.model, run.recipe), []).append(run)
        rows = []
        for (model, augment), group in groups.items():
            present = [r for r in group if r not in status["runs"]]
            absent = [r for r in group if r in status["runs"]]
            row = {
                "model": model,
                "paper_name": get_model_spec(model).paper_name,
                "augment": augment,
                "missing_seeds": [
                    str(r.seed) if len(splits) == 1 else f"{r.seed} (split {split_of[r.dataset]})" for r in absent
                ],
                "missing": status["runs"][absent[0]].as_dict() if absent else None,
            }
            for split in ("val", "test"):
                row[f"paper_{split}"] = paper_metrics(exp.get("paper"), model, augment, split)
            if not present:  # every seed missing: the row stays, marked, with the paper's numbers
                rows.append({**row, "stats": None, "stats_seeds": [], "diff_val": None, "diff_test": None})
                continue
            dirs = [results / r.path for r in present]
            agg = aggregate_runs(dirs)
            row.update(
                agg,
                stats=stats.get((model, augment, first_seed, splits[0])),
                stats_seeds=[
                    stats[(model, augment, s, p)] for p in splits for s in seeds if (model, augment, s, p) in stats
                ],
            )
            for split in ("val", "test"):
                paper = row[f"paper_{split}"]
                row[f"diff_{split}"] = {k: agg[split][k]["mean"] - paper[k] for k in paper} if paper else None
            rows.append(row)
            first = dirs[0]
            key = str(first)
            metrics = read_json(first / "metrics.json")
            row["per_class"] = {
                "seed": metrics["seed"],
                **{split: metrics[split]["per_class"] for split in ("val", "test")},
            }
            if key not in seen:
                seen.add(key)
                label = f"{present[0].dataset} · {model} · augment {augment} · seed {metrics['seed']}"
                run_details.append(
                    {
                        "label": label,
                        "path": str(first.relative_to(results)),
                        "metrics": metrics,
                        "paper_confusions": paper_confusions(metrics) if exp.get("paper") == "combined" else [],
                        "confusion": confusion_figure(metrics, metrics["classes"], f"Confusion matrices: {label}"),
                        "curves": curves_figure(pd.read_csv(first / "history.csv"), f"Training curves: {label}"),
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
                "comparisons": comparisons,
                "split_comparisons": split_comparisons,
                "spread": spread,
                "screening": screening,
                "stats_missing": status["stats"][exp_name].as_dict() if exp_name in status["stats"] else None,
                "not_plotted": [
                    r["paper_name"] + ("" if r["augment"] == "none" else f" · {r['augment']}")
                    for r in rows
                    if "test" not in r
                ],
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
        "transfer": transfer_section(config, results),
        "transfer_missing": status["transfer"].as_dict() if status["transfer"] else None,
        "reference": get_model_spec(config.get("analysis", {}).get("reference", "cvm_cervix")).paper_name,
        "train": config["train"],
        "paper": paper_results(),
        "abnormal_classes": abnormal_classes(config.get("analysis") or {"abnormal_classes": []}),
        "abnormal_set": (config.get("analysis") or {}).get("abnormal_set", "clinical"),
        "plotly_js": plotly.offline.get_plotlyjs(),
    }


def transfer_section(config: dict, results: Path) -> dict | None:
    """The transfer matrix (rows: trained on, columns: tested on) from ``transfer/matrix.json``."""
    spec = config.get("transfer")
    path = results / "transfer" / "matrix.json"
    if not spec or not path.is_file():
        return None
    import plotly.graph_objects as go

    matrix = read_json(path)
    cells = {(c["source"], c["target"]): c for c in matrix["cells"]}
    rows = [
        {
            "source": s,
            "dataset": next(c["source_dataset"] for c in matrix["cells"] if c["source"] == s),
            "cells": [cells.get((s, t)) for t in matrix["targets"]],
        }
        for s in matrix["sources"]
    ]
    z = [[None if c is None else 100 * c["accuracy"] for c in r["cells"]] for r in rows]
    text = [
        [
            "" if c is None else f"{100 * c['accuracy']:.1f}" + (" (in domain)" if c["in_domain"] else "")
            for c in r["cells"]
        ]
        for r in rows
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[_text(t) for t in matrix["targets"]],
            y=[_text(f"{r['source']} ({r['dataset']})") for r in rows],
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=100,
            colorbar={"title": "accuracy %"},
            hovertemplate="trained on %{y}<br>tested on %{x}<br>accuracy %{z:.1f}%<extra></extra>",
        )
    )
    fig.update_layout(
        title=_text(f"Transfer accuracy ({matrix['mapping']})"),
        xaxis_title="tested on",
        yaxis_title="trained on",
        height=160 + 60 * len(rows),
        margin={"l": 260},
    )
    return {
        "title": spec.get("title", "Transfer between datasets"),
        "mapping": matrix["mapping"],
        "targets": matrix["targets"],
        "rows": rows,
        "cells": matrix["cells"],
        "figure": _figure_html(fig),
    }


def render(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.2f}"
    env.filters["signed"] = lambda v: "–" if v is None else f"{v:+.2f}"
    return env.get_template("report.html.j2").render(**context)


def build_report(
    config: dict,
    out_html: str | os.PathLike,
    results: str | os.PathLike | None = None,
    files_dir: str | os.PathLike | None = None,
    configfiles: list[str] | None = None,
    workflow_dir: str | os.PathLike | None = None,
    inputs: dict | None = None,
) -> dict:
    """Render the self-contained report (plotly.js inlined: it opens with no network).

    ``inputs``: the report rule's input files by kind (:meth:`Plan.report_inputs`, the default);
    provenance reads the training records and benchmark files listed there that exist.
    ``files_dir`` also receives each figure (standalone HTML) and table (CSV) as
    ``<experiment>__<name>.<ext>``, for ``snakemake --report``. Returns the template's context.
    """
    from .provenance import provenance

    results = Path(results or config.get("results", "results"))
    plan = Plan(config)
    inputs = inputs if inputs is not None else plan.report_inputs(str(results))
    context = collect(config, results)
    run_dirs = sorted({Path(f).parent for f in inputs.get("train", []) if Path(f).is_file()})
    benchmarks = [f for f in inputs.get("benchmarks", []) if Path(f).is_file()]
    present = [d["name"] for d in context["datasets"] if not d.get("missing")]
    context["provenance"] = provenance(config, results, present, run_dirs, configfiles, workflow_dir, benchmarks)
    # the plan this report covers, and the files it was made from: a later run tells a report of another
    # plan, or of other files, from this plan's report of these files (report_state.py)
    stamp = next((f for f in inputs.get("plan", []) if Path(f).is_file()), None)
    context["plan"] = {
        "digest": plan.digest,
        "runs": len(plan.runs),
        "experiments": len(config["experiments"]),
        "stamp": os.path.relpath(stamp, results) if stamp else None,
    }
    context["marks"] = head_marks(plan.digest, inputs_fingerprint([f for fs in inputs.values() for f in fs], results))
    html = render(context)
    with atomic_path(out_html) as tmp:
        tmp.write_text(html, encoding="utf-8")
    if files_dir is not None:
        write_report_files(context, Path(files_dir))
    if context["incomplete"] is None:  # a second name for it, which outlives Snakemake removing the output
        last = last_complete(out_html)
        last.unlink(missing_ok=True)
        _link_or_copy(out_html, last)
    return context


def _link_or_copy(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links: a copy, never a half-written one
        import shutil

        with atomic_path(target) as tmp:
            shutil.copy2(source, tmp)


def last_complete(out_html: str | os.PathLike) -> Path:
    """Where the last complete report is kept (a hard link beside it, no copy)."""
    return Path(out_html).with_name(f".{Path(out_html).stem}.last_complete.html")


def restore_last_complete(out_html: str | os.PathLike, older_than: float | None = None) -> bool:
    """Put the last complete report back where a failed report job left none (Snakemake removes a
    job's outputs before it runs it). Dated ``older_than`` (the oldest input), the next run rebuilds
    it. Returns whether there was one to restore."""
    out_html, last = Path(out_html), last_complete(out_html)
    if out_html.exists() or not last.is_file():
        return False
    _link_or_copy(last, out_html)
    if older_than is not None:
        os.utime(out_html, (older_than, older_than))
    return True


def write_incomplete_report(config: dict, results: str, configfiles: list[str], workflow_dir) -> None:
    """After a failed job (with --keep-going: once every job that does not depend on it has run), the
    report of everything that finished, each missing result named with its rule, log and error line."""
    import sys

    # Snakemake does not look behind an output that is newer than every input it has (a missing input
    # of an existing output never reruns it), so an incomplete report is dated just before the oldest
    # input it was made from: the next run of the same command sees it out of date, makes what is
    # missing and replaces it with the complete report.
    inputs = Plan(config).report_inputs(results)
    present = [Path(f) for files in inputs.values() for f in files if Path(f).exists()]
    oldest = min(f.stat().st_mtime for f in present) - 1 if present else None
    out_html = path("report", results)
    try:
        context = build_report(
            config,
            out_html,
            results=results,
            files_dir=path("report_files", results),
            configfiles=configfiles,
            workflow_dir=workflow_dir,
            inputs=inputs,
        )
    except Exception as err:  # the report itself failed: say so, and keep the last complete report
        kept = restore_last_complete(out_html, oldest)
        # the report put back is not this plan's report of these files: without its stamp, the next run remakes it
        Path(path("plan", results, digest=Plan(config).digest)).unlink(missing_ok=True)
        print(
            f"error: the report could not be written ({type(err).__name__}: {err}); see "
            f"{path('report', results, table='log')}"
            + (f"; {out_html} is the last complete report, from before" if kept else ""),
            file=sys.stderr,
        )
        return
    gap = context["incomplete"]
    if gap and present:
        os.utime(out_html, (oldest, oldest))
    elif gap:  # nothing it needs was made (every dataset failed): a report of nothing would never be rebuilt
        Path(out_html).unlink(missing_ok=True)
        print("\nno report was written: nothing it needs was made", file=sys.stderr)
    if gap:
        print(
            f"\n{out_html} is INCOMPLETE: {gap['runs_missing']} of {gap['runs_total']} training runs "
            f"missing, {len(gap['failures'])} result(s) in all; each is named there with the job that failed, its log "
            "and its error (below, the first 20)",
            file=sys.stderr,
        )
        for f in gap["failures"][:20]:
            print(f"  {f['what']}: {f['rule']} job, {f['error']} (log {results}/{f['log']})", file=sys.stderr)


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
                    "augment": r["augment"],
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
                    row["accuracy 95% CI"] = " – ".join(f"{100 * v:.2f}" for v in r["stats"]["bootstrap"]["accuracy"])
                for name in ("accuracy", "f1"):
                    row[f"paper {split} {name}"] = (r[f"paper_{split}"] or {}).get(name)
                table.append(row)
            tables[f"{exp['name']}__{suffix}"] = pd.DataFrame(table)
        per_class = [
            {
                "model": r["paper_name"],
                "augment": r["augment"],
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
                "augment": r["augment"],
                "seed": exp["first_seed"],
                "accuracy 95% CI": " – ".join(f"{100 * v:.2f}" for v in r["stats"]["bootstrap"]["accuracy"]),
                "f1 95% CI": " – ".join(f"{100 * v:.2f}" for v in r["stats"]["bootstrap"]["f1_macro"]),
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
                        "B": f"{c['b_name']} · {c['b']['augment']}",
                        "A": f"{c['a_name']} · {c['a']['augment']}",
                        "split seed": c["b"].get("split_seed", 0),
                        "seed": c["b"]["seed"],
                        "delta accuracy": round(100 * c["accuracy_diff"], 2),
                        "95% CI": " – ".join(f"{100 * v:+.2f}" for v in c["accuracy_diff_ci"]),
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
                        "augment": e["augment"],
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
                        "B": f"{c['b_name']} · {c['b']['augment']}",
                        "A": f"{c['a_name']} · {c['a']['augment']}",
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
                    "augment": t["augment"],
                    "AUC abnormal": a.get("auc"),
                    "AUC 95% CI": a.get("auc_ci"),
                    "AP abnormal": a.get("average_precision"),
                    "AP 95% CI": a.get("average_precision_ci"),
                    "macro AUC": t["roc_pr"]["macro_auc"],
                    "ECE": t["calibration"]["ece"],
                    "ECE temperature-scaled": (t.get("temperature") or {}).get("test_ece", {}).get("scaled"),
                    "temperature": (t.get("temperature") or {}).get("temperature"),
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

    from ._io import partial_path

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
