"""Whether the report on disk belongs to the current plan and to the files it was made from.

Snakemake judges a report by dates and by its own records in ``.snakemake/``. Neither covers a
results folder it has no record of (someone else's results, a copy, a fresh clone beside kept
results, ``.snakemake/`` removed), nor a report put back after a failed report job: each would be
taken as up to date. So the report carries two marks in its ``<head>``: the digest of the plan it
covers (the validated config) and a fingerprint of the input files it was made from (names, sizes,
modification times). When Snakemake plans, :func:`stale_reason` compares them with the current
config and files; a report that differs, or carries no marks, is not current, and the plan's stamp
file (``plan/<digest>.json``: :func:`cvm_cervix.plan.write_plan`), an input of the report, the statistics
and the transfer matrix, is written anew, newer than all of them, so that they are made again.

No pandas, torch or plotly: this runs in Snakemake's own process on every start.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

PLAN_META = "cvm-cervix-plan"
INPUTS_META = "cvm-cervix-inputs"
# What the report job writes into report_files/ is listed here, so a file someone else put there is told apart.
REPORT_FILES_INDEX = ".written_by_cvm_cervix"
_REPORT_FILE = re.compile(r"[^/]+__[^/]+\.(csv|tex|md|html|yaml|json)")


def inputs_fingerprint(files: Iterable[str | os.PathLike], results: str | os.PathLike) -> str:
    """A digest of which of ``files`` exist, with their sizes and modification times (paths relative to
    ``results``): what a report was made from."""
    lines = []
    for f in sorted({str(f) for f in files}):
        try:
            st = os.stat(f)
        except OSError:
            continue
        lines.append(f"{os.path.relpath(f, results)}\t{st.st_size}\t{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def fingerprinted(inputs: dict[str, list[str]]) -> list[str]:
    """The report's input files that its fingerprint covers: all but the plan's stamp, whose name changes
    when a report is made again (the plan itself is the report's other mark, its digest)."""
    return [f for kind, files in inputs.items() if kind != "plan" for f in files]


def report_marks(html: str | os.PathLike) -> dict[str, str]:
    """The marks in the ``<head>`` of a report on disk (empty: none, or no report)."""
    try:
        with open(html, "rb") as handle:
            head = handle.read(8192).decode("utf-8", "replace")
    except OSError:
        return {}
    return dict(re.findall(r'<meta name="(cvm-cervix-[a-z]+)" content="([0-9a-f]+)"', head))


def head_marks(digest: str, fingerprint: str) -> str:
    """The ``<meta>`` lines the report's template puts first in its ``<head>``."""
    return f'<meta name="{PLAN_META}" content="{digest}">\n<meta name="{INPUTS_META}" content="{fingerprint}">'


def stale_reason(html: str | os.PathLike, digest: str, fingerprint: str) -> str | None:
    """Why the report at ``html`` is not the current plan's report of the current files; None when it is
    (or when there is no report: Snakemake makes a missing one anyway)."""
    if not Path(html).exists():
        return None
    marks = report_marks(html)
    if PLAN_META not in marks:
        return "it carries no plan digest (written by an older version, another tool, or cut short)"
    if marks[PLAN_META] != digest:
        return f"it covers plan {marks[PLAN_META]}, not this config's plan {digest}"
    if marks.get(INPUTS_META) != fingerprint:
        return "the results it was made from have changed since (a newer result, or a report put back after a failure)"
    return None


STAMP_ENV = "CVM_CERVIX_PLAN_STAMP"  # the stamp name a Snakemake process chose, for its jobs' processes


def choose_stamp(plan, results: str, main: bool) -> str | None:
    """Name ``plan``'s stamp (``plan.stamp``) and return why the report is made again (None: it is not).

    In Snakemake's own process: a file someone put into ``report_files/`` is an error (the report job
    replaces that folder); a report on disk that is not this plan's report of these files gets a stamp of
    a new name (:meth:`Plan.refresh`); otherwise the newest stamp of this plan that exists is kept, so the
    jobs' inputs stay what they were (a changed input list reruns a job). Each job's own process takes
    the name its Snakemake chose (an inherited variable): it cannot tell, since its outputs are removed."""
    from .errors import CvmError
    from .paths import pattern

    if not main:
        plan.stamp = os.environ.get(STAMP_ENV) or plan.digest
        return os.environ.get(STAMP_ENV + "_WHY") or None
    files_dir = pattern("report_files", results)
    foreign = foreign_report_files(files_dir)
    if foreign:
        raise CvmError(
            f"{files_dir}/ holds {len(foreign)} file(s) the report job did not write "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); the report job replaces that "
            "folder whole: move them elsewhere and run again"
        )
    fingerprint = inputs_fingerprint(fingerprinted(plan.report_inputs(results)), results)
    html = pattern("report", results)
    why = stale_reason(html, plan.digest, fingerprint)
    if why:
        import sys

        print(f"note: {html} is not up to date ({why}); the report will be made again", file=sys.stderr)
        plan.refresh(why, fingerprint)
    else:
        stamps = Path(pattern("plan", results, digest=plan.digest)).parent.glob(f"{plan.digest}*.json")
        newest = max(stamps, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)
        plan.stamp = newest.stem if newest is not None else plan.digest
    os.environ[STAMP_ENV] = plan.stamp
    os.environ[STAMP_ENV + "_WHY"] = why or ""
    return why


def stamp_reason() -> str | None:
    """Why the stamp was given a new name, as the job's Snakemake process found (not a param of the plan
    rule: a reason that came and went would rerun it)."""
    return os.environ.get(STAMP_ENV + "_WHY") or None


def foreign_report_files(folder: str | os.PathLike) -> list[str]:
    """Entries of the report's ``report_files/`` folder that the report job did not write: the job
    replaces the folder whole (and Snakemake removes it before the job runs), so they would be lost.
    The job's own are listed in its index; a folder without one (an older version) is judged by name.
    Snakemake's own mark of a directory output (``.snakemake_timestamp``) is not a user's file."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    index = folder / REPORT_FILES_INDEX
    ours = set(index.read_text(encoding="utf-8").split("\n")) if index.is_file() else None
    return sorted(
        e.name
        for e in folder.iterdir()
        if e.name not in (REPORT_FILES_INDEX, ".snakemake_timestamp")
        and (e.name not in ours if ours is not None else not (_REPORT_FILE.fullmatch(e.name) and e.is_file()))
    )
