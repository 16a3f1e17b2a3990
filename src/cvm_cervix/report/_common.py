"""What every part of the report shares: the paper's numbers, number formatting, figure HTML."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import package_yaml

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"  # package data: works from an installed wheel
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


def _figure_html(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _png_data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def row_name(row: dict) -> str:
    """A row's model as the paper names it, with its recipe unless that is the plain one: "CVM-Cervix · flip4x"."""
    return row["paper_name"] + ("" if row["recipe"] == "none" else f" · {row['recipe']}")
