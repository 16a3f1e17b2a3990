"""Glue for the workflow's ``script:`` entries: log redirection and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Callable

from .errors import run_reporting_errors


def run_script(snakemake, main: Callable[[object], object]) -> None:
    """Send stdout/stderr and logging to the rule's log, then run ``main(snakemake)``."""
    log_path = snakemake.log[0] if snakemake.log else None
    with open(log_path, "w") if log_path else contextlib.nullcontext(sys.stderr) as log:
        logging.basicConfig(stream=log, level=logging.INFO, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        with contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
            run_reporting_errors(lambda: main(snakemake), log)
