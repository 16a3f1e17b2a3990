"""Every plot of the report: confusion matrices, training and learning curves, t-SNE, accuracy per model,
ROC/PR, reliability and risk-coverage, compression, robustness and the transfer matrix."""

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


def learning_curve(points: dict[str, list[tuple[float, dict]]], title: str) -> str:
    """Test accuracy against the share of the training split, one line per start (ImageNet, random,
    another run): ``points`` maps each line's name to (percent of the training split, report row) pairs."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, pts in points.items():
        pts.sort(key=lambda p: p[0])
        mean = [r["test"]["accuracy"]["mean"] for _, r in pts]
        ci = [r["stats"]["intervals"]["accuracy"] if r.get("stats") else None for _, r in pts]
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
    ci = [r["stats"]["intervals"]["accuracy"] if r.get("stats") else None for r in rows]
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


def pr_figure(curves: list[tuple[str, dict]], title: str) -> str:
    """Abnormal-against-normal precision-recall curves, one per run, overlaid, each average precision in
    the legend; the dotted line is the share of abnormal test images (a model that guesses)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, c in curves:
        fig.add_trace(
            go.Scatter(
                x=c["pr"]["recall"],
                y=c["pr"]["precision"],
                mode="lines",
                name=f"{label} (AP {c['average_precision']:.3f})",
            )
        )
    if curves:
        base = curves[0][1]["positives"] / curves[0][1]["n"]
        fig.add_trace(
            go.Scatter(x=[0, 1], y=[base, base], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance")
        )
    fig.update_layout(
        title=title,
        xaxis_title="recall = sensitivity (abnormal test images found)",
        yaxis_title="precision (called abnormal that are)",
        height=460,
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.02],
        legend={"font": {"size": 10}},
    )
    return _figure_html(fig)


def risk_coverage_figure(curves: list[tuple[str, dict]], title: str) -> str:
    """Error among the test images kept against the share kept (the most confident first), one per run."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, c in curves:
        fig.add_trace(go.Scatter(x=c["coverage"], y=c["risk"], mode="lines", name=label))
    fig.update_layout(
        title=title,
        xaxis_title="share of test images the model decides (the most confident first)",
        yaxis_title="error among them",
        height=420,
        xaxis_range=[0, 1],
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


def robustness_figure(result: dict, label: str) -> str:
    """Accuracy against severity, one line per corruption and the mean over them, clean at 0."""
    import plotly.graph_objects as go

    severities = sorted(int(s) for s in result["mean"])
    fig = go.Figure()
    for name, by_severity in result["corruptions"].items():
        fig.add_trace(
            go.Scatter(
                x=[0, *severities],
                y=[result["clean"]["accuracy"], *(by_severity[str(s)]["accuracy"] for s in severities)],
                mode="lines+markers",
                name=name,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, *severities],
            y=[result["clean"]["accuracy"], *(result["mean"][str(s)]["accuracy"] for s in severities)],
            mode="lines",
            line={"dash": "dash", "color": "black", "width": 3},
            name="mean over corruptions",
        )
    )
    fig.update_layout(
        title=_text(f"Test accuracy under slide variation: {label}"),
        xaxis_title="severity (0: clean)",
        yaxis_title="accuracy",
        yaxis_range=[0, 1],
        height=420,
    )
    return _figure_html(fig)


def transfer_figure(matrix: dict, rows: list[dict]) -> str:
    """The transfer matrix as a heatmap: trained on (rows) against tested on (columns), accuracy in each cell."""
    import plotly.graph_objects as go

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
    return _figure_html(fig)


def critical_difference_figure(result: dict, title: str) -> str:
    """Demšar's critical-difference diagram: each predictor at its mean rank (1 = best, left), a bar of the
    critical difference, and a line joining each group of predictors whose mean ranks lie within it of
    each other (Nemenyi: not told apart)."""
    import plotly.graph_objects as go

    ranks = sorted(result["mean_ranks"].items(), key=lambda kv: kv[1])
    cd, k = result["critical_difference"], len(ranks)
    fig = go.Figure()
    for i, (name, rank) in enumerate(ranks):
        y = -(i + 1)
        fig.add_trace(
            go.Scatter(
                x=[rank, rank],
                y=[0, y],
                mode="lines+markers+text",
                text=["", f"{_text(name)} ({rank:.2f})"],
                textposition="middle right",
                marker=dict(size=[8, 0]),
                line=dict(color="#444"),
                hovertemplate=f"{_text(name)}: mean rank {rank:.2f}<extra></extra>",
                showlegend=False,
            )
        )
    # the maximal groups within one CD of each other: not told apart
    groups = []
    for i in range(k):
        j = max(j for j in range(i, k) if ranks[j][1] - ranks[i][1] < cd)
        if j > i and not any(g[0] <= i and j <= g[1] for g in groups):
            groups.append((i, j))
    for n, (i, j) in enumerate(groups):
        fig.add_trace(
            go.Scatter(
                x=[ranks[i][1] - 0.03, ranks[j][1] + 0.03],
                y=[0.25 + 0.2 * n] * 2,
                mode="lines",
                line=dict(width=5, color="#c0392b"),
                hovertemplate="not told apart (within one CD)<extra></extra>",
                showlegend=False,
            )
        )
    top = 0.45 + 0.2 * len(groups)
    fig.add_trace(
        go.Scatter(
            x=[1, 1 + cd],
            y=[top, top],
            mode="lines+text",
            text=["", f"CD = {cd:.2f}"],
            textposition="top left",
            line=dict(width=3, color="#2c3e50"),
            hovertemplate=f"critical difference (Nemenyi, α = {result['alpha']}): {cd:.2f}<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_xaxes(range=[0.8, k + 0.2], title_text="mean rank (1 = best)", dtick=1)
    fig.update_yaxes(visible=False, range=[-(k + 0.5), top + 0.4])
    fig.update_layout(title=title, height=160 + 34 * k, width=760, margin=dict(t=60, b=40))
    return _figure_html(fig)


def recipe_robustness_figure(gains: list[dict], title: str) -> str:
    """Test accuracy against severity (clean at 0, then the mean over the corruptions that change the images
    at that severity), one line per recipe and the ``none`` run it is compared with."""
    import plotly.graph_objects as go

    fig = go.Figure()
    drawn = set()
    for g in gains:
        severities = sorted(g["mean"], key=int)
        x = [0, *map(int, severities)]
        for label, key, clean in (
            (f"{g['paper_name']} ({g['recipe']})", "accuracy", g["clean"]["accuracy"]),
            (f"{g['paper_name']} ({g['base']})", "base_accuracy", g["clean"]["base_accuracy"]),
        ):
            if label in drawn:
                continue
            drawn.add(label)
            y = [100 * clean, *(100 * g["mean"][s][key] for s in severities)]
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=_text(label)))
    fig.update_xaxes(title_text="severity (0 = clean)", dtick=1)
    fig.update_yaxes(title_text="test accuracy, %")
    fig.update_layout(title=title, height=420, width=760, margin=dict(t=60, b=40))
    return _figure_html(fig)
