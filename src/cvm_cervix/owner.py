"""One owner at a time for a results folder and for a run folder.

Snakemake's own lock (``.snakemake/locks``) belongs to the working folder it runs in: two workflows
started from two working folders on one ``results:`` folder would both run, and the second one's jobs,
refused by a run lock the first one holds, would fail and have Snakemake remove their outputs, which
are the first one's finished files. So the Snakemake process that runs jobs holds a lock on
``<results>/.cvm-cervix.owner`` from before its first job until it ends (taken in ``onstart``, which a
dry run never reaches: a dry run writes nothing); a second one stops there, before any job, with one
line naming the owner. A run folder is trained by one process at a time (its ``.train.lock``); a
training that finds it taken waits, then uses the other one's result when it is this run's.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ._io import take_lock
from .errors import CvmError

log = logging.getLogger(__name__)

OWNER_FILE = ".cvm-cervix.owner"
_held: dict[str, object] = {}  # results folder (real path) -> its open lock file, kept for the process's life


def hold_results(results: str | os.PathLike) -> Path:
    """Lock ``results`` for this process until it ends; a :class:`CvmError` naming the owner (pid, host,
    since when) when another process holds it. Taking it again in the same process is a no-op."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(results)
    lock = results / OWNER_FILE
    if key not in _held:
        _held[key] = take_lock(
            lock,
            f"results folder {results} is in use",
            "another workflow runs on it: wait for it to end or stop it, or give this one another folder "
            "(--config results=DIR). The "
            "operating system frees the lock when that process ends, kill -9 included, so it is never stale "
            "on a local disk; on a network file system without locks, remove the file once no such process runs",
        )
    return lock


def release_results(results: str | os.PathLike) -> None:
    """Give ``results`` up (the process ending does the same)."""
    handle = _held.pop(os.path.realpath(results), None)
    if handle is not None:
        handle.close()


@contextlib.contextmanager
def run_folder_lock(path, folder, wait: bool = True):
    """Hold the run folder's training lock; when another process holds it, say so in the log and wait for
    it to end (``wait``), else raise its one line."""
    import fcntl

    waited = False
    try:
        handle = take_lock(path, f"run folder {folder} is being trained already")
    except CvmError as busy:
        if not wait or "is being trained already" not in str(busy):
            raise
        log.warning("%s: waiting for it to end, then its result is used if it is this run's", busy)
        handle = open(path, "r+")  # take_lock refused a link or another kind of file already
        fcntl.flock(handle, fcntl.LOCK_EX)
        waited = True
    try:
        yield waited
    finally:
        handle.close()


WORKFLOW_ENV = "CVM_CERVIX_WORKFLOW"  # "<host> <pid>" of the Snakemake process that runs the jobs (common.smk)
ORPHANED = ".orphaned"  # a run folder's copy of a result finished after its workflow ended


def announce_workflow() -> None:
    """Tell this Snakemake process's jobs who started them (they inherit the variable), so that a training
    can tell, when it finishes, whether its workflow has ended meanwhile."""
    import socket

    os.environ[WORKFLOW_ENV] = f"{socket.gethostname()} {os.getpid()}"


def _workflow_gone() -> bool:
    """Whether the Snakemake process that started this job has ended (killed) while it trained."""
    import socket

    from ._io import _pid_alive

    host, _, pid = os.environ.get(WORKFLOW_ENV, "").partition(" ")
    return host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))


def keep_if_orphaned(files: dict) -> None:
    """A training that outlived its workflow (a kill -9 of Snakemake) keeps a second name for its three
    files in ``.orphaned/``: Snakemake, which never saw the job finish, removes the outputs before the
    next run trains it again, and that training takes them back instead (:func:`finished_elsewhere`)."""
    if not _workflow_gone():
        return
    keep = files["weights"].parent / ORPHANED
    keep.mkdir(exist_ok=True)
    for key in ("weights", "history", "info"):
        target = keep / files[key].name
        target.unlink(missing_ok=True)
        os.link(files[key], target)
    log.warning("the workflow that started this training has ended; its result is kept in %s", keep)


def finished_elsewhere(files: dict, identity: dict, epochs: int, waited: bool) -> dict | None:
    """The record of this very run (same settings, data and start, ``identity``) finished by another
    process: the training this one waited for, or one that outlived its workflow (``.orphaned/``).
    Its files are put in place and used as they are; None when there is none (a result of other settings
    is never used: ``.orphaned/`` is then removed and the run trained)."""
    import shutil

    from .record import RunRecord

    keep = files["weights"].parent / ORPHANED
    candidates = ([files] if waited else []) + ([_kept_files(keep, files)] if keep.is_dir() else [])
    for found in candidates:
        try:
            record = RunRecord.read(found["info"])
        except Exception:  # half a file, or not a record: nothing to use
            continue
        if record.identity() == identity and record.settings.epochs == epochs and found["weights"].is_file():
            for key in ("weights", "history", "info"):
                if found[key] != files[key]:
                    os.replace(found[key], files[key])
            log.warning("%s was trained by another process with these settings and data: used as it is", found["info"])
            shutil.rmtree(keep, ignore_errors=True)
            return record.to_json()
    if keep.is_dir():
        log.warning("%s holds a result of other settings or data: removed, the run is trained", keep)
        shutil.rmtree(keep, ignore_errors=True)
    return None


def _kept_files(keep, files: dict) -> dict:
    return {key: keep / files[key].name for key in ("weights", "history", "info")}
