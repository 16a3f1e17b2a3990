"""User-facing errors: one line that names the file or key and says what to do."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable


class CvmError(Exception):
    """An error caused by the user's input (data, config, arguments), not by a bug.

    The message is a single line naming the offending file or key and the fix.
    """


def disk_full(err: BaseException, path=None) -> CvmError | None:
    """The one line for ``err`` when it means the disk (or the user's quota) is full, else None.

    Writers say it differently: ``OSError`` with ENOSPC or EDQUOT, numpy's short write (``N requested
    and M written``, no errno), safetensors' ``I/O error: No space left on device (os error 28)``.
    """
    import errno
    import shutil

    text = str(err)
    full = (
        (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT))
        or any(
            sign in text for sign in ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
        )
        or (isinstance(err, OSError) and err.errno is None and " requested and " in text and " written" in text)
    )
    if not full:
        return None
    where = path or getattr(err, "filename", None)
    free = ""
    if where is not None:
        from pathlib import Path

        folder = Path(where).parent
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        try:
            free = f" ({shutil.disk_usage(folder).free / 2**20:.0f} MiB free there)"
        except OSError:
            pass
    target = f"to write {where}" if where is not None else "for this job's output"
    return CvmError(
        f"no space left on the device {target}{free}; free some space (or point 'results' at a "
        "larger disk) and run the same command again: nothing half-written was kept"
    )


def run_reporting_errors(main: Callable[[], object], log_file=None) -> None:
    """Run ``main``; turn a :class:`CvmError` into one line and exit status 1.

    The line goes to ``log_file`` (the rule's log) and to the terminal, so a user sees it
    without opening the log. Any other exception is a bug and keeps its traceback.
    """
    try:
        main()
    except CvmError as err:
        line = f"error: {err}"
        if log_file is not None:
            print(line, file=log_file, flush=True)
        print(line, file=sys.__stderr__, flush=True)
        sys.exit(1)
    except Exception as err:
        full = disk_full(err)
        if full is not None:  # a full disk is the user's to fix, not a bug: one line, as for a CvmError
            line = f"error: {full}"
            for stream in (log_file, sys.__stderr__):
                if stream is not None:
                    try:
                        print(line, file=stream, flush=True)
                    except OSError:  # the log is on the full disk too
                        pass
            sys.exit(1)
        if log_file is not None:
            traceback.print_exc(file=log_file)
            log_file.flush()
        raise
