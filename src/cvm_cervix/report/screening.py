"""The screening view's plots and rows (ROC, reliability, operating points) and the compression plot."""

from __future__ import annotations

from ..models import get_model_spec
from ._common import _figure_html, _text, row_name


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
