"""The template rendered, the report written, and the last complete report kept beside it."""

from __future__ import annotations

import os
from pathlib import Path

from .._io import atomic_path
from ..plan import Plan
from ..report_inputs import ReportInputs
from ..report_state import fingerprinted, head_marks, inputs_fingerprint
from ._common import TEMPLATES
from .collect import collect
from .tables import write_report_files


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
    from ..provenance import provenance

    results = Path(results or config.get("results", "results"))
    plan = Plan(config)
    inputs = inputs if inputs is not None else plan.report_inputs(str(results))
    files = ReportInputs.of(inputs, results)
    context = collect(config, files)
    present = [d["name"] for d in context["datasets"] if not d.get("missing")]
    context["provenance"] = provenance(config, files, present, configfiles, workflow_dir)
    # the plan this report covers, and the files it was made from: a later run tells a report of another
    # plan, or of other files, from this plan's report of these files (report_state.py)
    stamp = files.plan if files.plan is not None and files.plan.is_file() else None
    context["plan"] = {
        "digest": plan.digest,
        "runs": len(plan.runs),
        "experiments": len(config["experiments"]),
        "stamp": os.path.relpath(stamp, results) if stamp else None,
    }
    context["marks"] = head_marks(plan.digest, inputs_fingerprint(fingerprinted(inputs), results))
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
