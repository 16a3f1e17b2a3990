"""``cvm-cervix predict --review review.html``: one self-contained page for the person who reviews the cells.

The cells a person must see come first: those referred (their conformal set is not exactly one class),
then the most uncertain (lowest top probability). The page keeps at most ``limit`` of them, chosen as
predict streams (a heap: memory bounded by the limit, not by the number of cells), each with a
thumbnail (inlined), its prediction, set and probabilities; the counts of every cell are at the top, a
filter by predicted class above the list. Plain HTML and a few lines of script: no network, and every
name escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import base64
import heapq
import io
import itertools
from pathlib import Path

import numpy as np

THUMBNAIL_PX = 96


def _thumbnail(image: np.ndarray) -> str:
    """A uint8 3×S×S image as a PNG data URI, at most :data:`THUMBNAIL_PX` on a side."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    if picture.width > THUMBNAIL_PX:
        picture = picture.resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class Review:
    """The ``limit`` cells most in need of a person, collected as rows stream past."""

    def __init__(self, limit: int = 500):
        self.limit = limit
        self._heap: list = []  # (priority, order, row): the least urgent on top, pushed out first
        self._order = itertools.count()

    @staticmethod
    def urgency(row: dict) -> tuple:
        """Referred cells first, then the least confident."""
        return (bool(row.get("refer")), -float(row["confidence"]))

    def offer(self, row: dict, image: np.ndarray) -> None:
        item = (self.urgency(row), next(self._order))
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, (*item, {**row, "thumbnail": _thumbnail(image)}))
        elif item > self._heap[0][:2]:
            heapq.heapreplace(self._heap, (*item, {**row, "thumbnail": _thumbnail(image)}))

    def rows(self) -> list[dict]:
        """The kept cells, most urgent first (ties in the order they came)."""
        return [row for *_, row in sorted(self._heap, key=lambda e: (e[0], -e[1]), reverse=True)]


def write_review(path: Path, review: Review, summary: dict, classes: list[str], run: str, precision: str) -> None:
    """The review page at ``path``, written whole or not at all."""
    import jinja2

    from ._io import atomic_path
    from .intended_use import INTENDED_USE

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    rows = review.rows()
    prob_columns = [k for k in (rows[0] if rows else {}) if k.startswith("prob_")]
    html = env.from_string(TEMPLATE).render(
        rows=rows,
        summary=summary,
        classes=classes,
        prob_columns=prob_columns,
        run=run,
        precision=precision,
        limit=review.limit,
        intended_use=INTENDED_USE,
    )
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cells to review</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: right; }
td.l, th.l { text-align: left; } .refer { background: #fff4e5; } .note { color: #666; font-size: .9em; }
img { width: 64px; height: 64px; image-rendering: pixelated; }
</style></head><body>
<h1>Cells to review</h1>
<p class="note">{{ intended_use }}</p>
<p><b>{{ summary.images }}</b> cells classified by <code>{{ run }}</code> ({{ precision }}):
{% for c, n in summary.per_class.items() %}{{ c }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}.
{% if summary.referred is not none %}<b>{{ summary.referred }}</b> referred at coverage {{ summary.coverage }}
(their conformal set is not exactly one class).{% endif %}
{% if summary.unreadable %}{{ summary.unreadable | length }} unreadable, left out.{% endif %}
Shown: the {{ rows | length }} most in need of a person
{%- if summary.images > rows | length %} (at most {{ limit }}){% endif %}, referred first, then the least confident.</p>
<p><label>Predicted class: <select id="filter"><option value="">all</option>
{% for c in classes %}<option value="{{ c }}">{{ c }}</option>{% endfor %}</select></label>
<span id="shown" class="note"></span></p>
<table id="cells">
<tr><th class="l">image</th><th class="l">file</th><th class="l">predicted</th><th>confidence</th>
{% if rows and rows[0].set is defined %}<th class="l">set</th>{% endif %}
{% for p in prob_columns %}<th>{{ p }}</th>{% endfor %}</tr>
{% for r in rows %}<tr data-pred="{{ r.pred }}"{% if r.refer %} class="refer"{% endif %}>
<td class="l"><img src="{{ r.thumbnail }}" alt="{{ r.path }}"></td><td class="l note">{{ r.path }}</td>
<td class="l">{{ r.pred }}</td><td>{{ "%.3f" | format(r.confidence) }}</td>
{% if r.set is defined %}<td class="l">{{ r.set.split("|") | join(", ") if r.set else "(empty)" }}</td>{% endif %}
{% for p in prob_columns %}<td>{{ "%.3f" | format(r[p]) }}</td>{% endfor %}</tr>
{% endfor %}
</table>
<script>
const select = document.getElementById("filter");
function show() {
  let n = 0;
  for (const row of document.querySelectorAll("#cells tr[data-pred]")) {
    const on = !select.value || row.dataset.pred === select.value;
    row.style.display = on ? "" : "none";
    n += on;
  }
  document.getElementById("shown").textContent = n + " shown";
}
select.addEventListener("change", show);
show();
</script>
</body></html>
"""
