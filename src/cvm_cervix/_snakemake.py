"""Glue for the workflow's ``script:`` entries: log redirection, GPU slots and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable

from .errors import run_reporting_errors


def _claim_gpu_slot(snakemake):
    """A rule that declares ``gpu=1`` takes a device slot before anything touches CUDA."""
    if not int(getattr(snakemake.resources, "gpu", 0) or 0):
        return None
    from .devices import claim_gpu

    gpu = snakemake.config.get("gpu", {})
    return claim_gpu(
        snakemake.config.get("train", {}).get("device", "auto"),
        gpu.get("jobs_per_device", 1),
        gpu.get("lock_dir") or None,
        [str(d) for d in gpu.get("devices") or []],
    )


def run_script(snakemake, main: Callable[[object], object]) -> None:
    """Send stdout/stderr and logging to the rule's log, take a GPU slot if the rule asks for one,
    then run ``main(snakemake)``."""
    log_path = snakemake.log[0] if snakemake.log else None
    with open(log_path, "w") if log_path else contextlib.nullcontext(sys.stderr) as log:
        logging.basicConfig(
            stream=log, level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        with contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
            slot = None

            def job():
                nonlocal slot
                slot = _claim_gpu_slot(snakemake)
                return main(snakemake)

            try:
                run_reporting_errors(job, log)
            finally:
                if slot is not None:
                    slot.release()
    _leave()


def _leave() -> None:
    """End a job that succeeded without the interpreter's teardown.

    Its outputs are written and closed by now (every writer closes, then renames, its file), so what
    is left is freeing some 4,000 modules of torch, timm and sklearn and unloading the CUDA libraries:
    2-3 s per job on a 2-core machine, a fifth of a small job (BENCHMARKS.md). Only logging and the
    standard streams can hold anything unwritten: they are flushed first. A failed job never gets here.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
