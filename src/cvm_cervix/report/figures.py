"""The report's plots of results: confusion matrices, training curves, t-SNE, accuracy and learning curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._common import _figure_html, _text, row_name


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
    return _text(row_name(row))


def learning_curve(config: dict, dataset: str, rows: list[dict], seed: int, title: str) -> str | None:
    """Test accuracy against the share of the training split, one line per start (ImageNet, random,
    another run): drawn when the experiment's variants train on fractions (the fine-tuning question)."""
    from ..runs import Run, run_settings, start_label

    points: dict[str, list] = {}
    for r in rows:
        run = Run(dataset, r["model"], r["recipe"], seed)
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
