"""The HTML report: every table and plot computed from files the workflow wrote.

One module per job of the report: ``collect`` and ``sections`` read the files the report rule hands
it (``report_inputs.ReportInputs``; no module here names a results file) into the template's context,
``screening`` the screening view's rows, ``figures`` draws every plot, ``tables`` turns the context into
tables and writes the report's files (CSV, LaTeX, Markdown, standalone figures), ``render`` writes the
report, ``incomplete`` the report after a failed job. The paper's numbers come only from
``paper_results.yaml`` and are labelled as the paper's.
"""

from ._common import paper_metrics, paper_results
from .collect import collect
from .incomplete import write_incomplete_report
from .render import build_report, last_complete, render, restore_last_complete
from .sections import aggregate_runs
from .tables import report_tables, write_report_files

__all__ = [
    "aggregate_runs",
    "build_report",
    "collect",
    "last_complete",
    "paper_metrics",
    "paper_results",
    "render",
    "report_tables",
    "restore_last_complete",
    "write_incomplete_report",
    "write_report_files",
]
