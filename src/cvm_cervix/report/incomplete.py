"""The report written after a failed job: everything that finished, each missing result named."""

from __future__ import annotations

import os
from pathlib import Path

from .render import build_report, restore_last_complete


def write_incomplete_report(
    config: dict, results: str, inputs: dict, outputs: dict, configfiles: list[str], workflow_dir
) -> None:
    """After a failed job (with --keep-going: once every job that does not depend on it has run), the
    report of everything that finished, each missing result named with its rule, log and error line.

    ``inputs`` and ``outputs``: the report rule's (``outputs``: ``html``, ``files`` and ``log``)."""
    import sys

    # Snakemake does not look behind an output that is newer than every input it has (a missing input
    # of an existing output never reruns it), so an incomplete report is dated just before the oldest
    # input it was made from: the next run of the same command sees it out of date, makes what is
    # missing and replaces it with the complete report.
    present = [Path(f) for files in inputs.values() for f in files if Path(f).exists()]
    oldest = min(f.stat().st_mtime for f in present) - 1 if present else None
    out_html = outputs["html"]
    try:
        context = build_report(
            config,
            out_html,
            results=results,
            files_dir=outputs["files"],
            configfiles=configfiles,
            workflow_dir=workflow_dir,
            inputs=inputs,
        )
    except Exception as err:  # the report itself failed: say so, and keep the last complete report
        # the report put back records the files it was made from: the next run sees they have changed
        # (report_state.stale_reason) and makes it again
        kept = restore_last_complete(out_html, oldest)
        print(
            f"error: the report could not be written ({type(err).__name__}: {err}); see "
            f"{outputs['log']}" + (f"; {out_html} is the last complete report, from before" if kept else ""),
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
