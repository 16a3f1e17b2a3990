"""Small file helpers: writes that never leave a half-written output behind."""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import hashlib
import json
import os
import shutil
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CvmError, disk_full

if TYPE_CHECKING:  # pandas is imported where a table is read or written, not with this module
    import pandas as pd

_HOST = socket.gethostname().replace(".", "_") or "host"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``path`` left by writers on this host that no longer run.

    A cache at 224 px is gigabytes: an interrupted write must not stay behind. Temporaries of
    live processes, and of other hosts sharing the folder, are left alone. Returns what was removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.partial*"):
        parts = tmp.name[len(path.name) + 2 :].split(".")
        if len(parts) >= 3 and parts[0] == _HOST and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            with contextlib.suppress(FileNotFoundError):
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed.append(tmp)
    return removed


def partial_path(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path``, unique to this host, process and call.

    Two workflows writing into one results folder (other working directories, other hosts on a
    shared file system) never share a temporary name; the host and pid let the next writer tell a
    dead writer's leftovers (see :func:`remove_stale_partials`).
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A ``path`` that is a symbolic link keeps its link: its target is written (atomically, beside the
    target). One that is not a regular file (a FIFO a reader waits on, ``/dev/stdout``) is written
    through once the temporary file is complete, never replaced by a regular file.
    """
    path = Path(path)
    if path.is_symlink() and path.resolve().parent.is_dir():
        with atomic_path(path.resolve()) as tmp:
            yield tmp
        return
    if path.exists() and not path.is_file():
        import tempfile

        fd, name = tempfile.mkstemp(suffix=path.suffix)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            with open(tmp, "rb") as source, open(path, "wb") as sink:
                shutil.copyfileobj(source, sink)
        finally:
            tmp.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = partial_path(path)
    try:
        yield tmp
        if tmp.is_file():  # some writers (safetensors) create 0600 files: give every output the same mode
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except Exception as err:
        full = disk_full(err, path)
        if full is not None:
            raise full from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def take_lock(path: str | os.PathLike, what: str, clear: str = "wait for it to end or stop it, then run again"):
    """An exclusive ``flock`` on ``path``, held while the returned file stays open; one line naming the
    holder (pid, host, since when) and ``clear`` if another process has it.

    The operating system releases the lock when the holder ends in any way (``kill -9`` included), so it
    is never left taken; the file itself stays (removing it would let two processes lock two files). A
    ``path`` that is a symbolic link is refused, never followed: the holder's line would be written into
    whatever it points to. ``what`` names the thing locked in the error (``run folder X is being trained``).
    """
    import fcntl
    import time

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if path.is_symlink() or err.errno == errno.ELOOP:
            raise CvmError(
                f"{path} is a symbolic link; a lock file is never followed (it would write over what it points "
                "to): remove the link, then run again"
            ) from None
        raise
    handle = os.fdopen(fd, "r+")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CvmError(f"{path} is not a plain file; remove it, then run again")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).strip() or "another process"
            raise CvmError(f"{what} by {holder} ({path} is locked); {clear}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
    except BaseException:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold :func:`take_lock`'s lock on ``path`` while the block runs."""
    handle = take_lock(path, what)
    try:
        yield
    finally:
        handle.close()  # closing the file releases the lock


def safe_component(value: str, what: str) -> str:
    """``value`` if it can be one file or folder name inside the results, else a :class:`CvmError`.

    Values read from data files (CRIC's class and cell id columns) become file names: ``../``,
    absolute paths, separators and NUL bytes would write outside the results folder.
    """
    text = str(value)
    if (
        not text.strip()
        or text in (".", "..")
        or "/" in text
        or "\\" in text
        or "\0" in text
        or text != text.strip()
        or len(text.encode()) > 200
    ):
        raise CvmError(
            f"{what}: {text!r} cannot be a file name (empty, '.', '..', a path separator, a NUL byte, "
            "surrounding spaces or over 200 bytes); correct the value"
        )
    return text


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


@functools.cache
def package_yaml(name: str) -> Any:
    """A YAML file shipped inside the package (``paper_results.yaml``), read once per process."""
    import yaml

    return yaml.safe_load((Path(__file__).resolve().with_name(name)).read_text(encoding="utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; a file cut short or corrupted is one :class:`CvmError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CvmError(
            f"{path} is not valid JSON ({err}); it was cut short or edited: delete it and run the "
            "workflow again to remake it"
        ) from None


def shown_path(path) -> str:
    """A path as text a terminal and a UTF-8 file can hold: bytes of a file name that are not UTF-8
    shown as escapes (``\\xe9``)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(value):
    # A text cell a spreadsheet would run as a formula gets a leading "'" (OWASP's advice against CSV
    # injection); one that starts with "'" gets another, so reading back (read_table) is exact.
    return f"'{value}" if isinstance(value, str) and value[:1] in (*FORMULA_START, "'") else value


def _unescape(value):
    return value[1:] if isinstance(value, str) and value[:1] == "'" else value


def _text_columns(frame):
    import pandas as pd

    return [c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])]


def spreadsheet_safe_text(value):
    """One cell as :func:`spreadsheet_safe` writes it (for rows written one at a time)."""
    return _escape(value)


def spreadsheet_safe(frame) -> pd.DataFrame:
    """``frame`` with every text cell that would start a spreadsheet formula (``=``, ``+``, ``-``, ``@``,
    a tab or carriage return) neutralised by a leading ``'``; numbers are left as they are. Every CSV
    the workflow writes goes through it (:func:`write_csv`), and :func:`read_table` undoes it."""
    frame = frame.copy()
    for column in _text_columns(frame):
        frame[column] = frame[column].map(_escape)
    return frame


def read_table(path: str | os.PathLike, text: tuple[str, ...] = ("path", "class", "label", "pred")) -> pd.DataFrame:
    """A CSV the workflow wrote, read back exactly: the ``text`` columns (names of images and classes)
    as strings, no value taken for missing (pandas would read a class named ``NA``, ``None`` or
    ``null`` as missing, and classes ``0``/``1`` as numbers, so names would no longer match), and the
    spreadsheet escape of :func:`spreadsheet_safe` undone."""
    import pandas as pd

    header = pd.read_csv(path, nrows=0).columns
    frame = pd.read_csv(
        path, keep_default_na=False, na_values=[], dtype={c: str for c in header if c in text or c.endswith("_shared")}
    )
    for column in _text_columns(frame):
        frame[column] = frame[column].map(_unescape)
    return frame


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV, atomically, safe to open in a spreadsheet (:func:`spreadsheet_safe`)."""
    with atomic_path(path) as tmp:
        spreadsheet_safe(frame).to_csv(tmp, index=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
