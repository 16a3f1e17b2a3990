"""User-facing errors: one line that names the file or key and says what to do."""

from __future__ import annotations

import sys
import traceback
from typing import Callable


class CvmError(Exception):
    """An error caused by the user's input (data, config, arguments), not by a bug.

    The message is a single line naming the offending file or key and the fix.
    """


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
    except Exception:
        if log_file is not None:
            traceback.print_exc(file=log_file)
            log_file.flush()
        raise
