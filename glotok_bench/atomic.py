"""Writes that never leave half a file behind: temp file in the same folder, then rename.

A write that fails because the disk is full or the folder is read-only is one clear
:class:`~glotok_bench.errors.OutputError` naming the file. Temp files (and staging
folders) carry their writer's pid and host, so one left by a killed writer is removed at
the next write into its folder, while a live writer's is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from glotok_bench.errors import OutputError
from glotok_bench.processes import pid_alive, this_host

# ".<name>.<random>.<pid>@<host>.tmp"; the older ".<name>.<random>.tmp" has no owner.
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}(?:\.(?P<pid>\d+)@(?P<host>[^/]*))?\.tmp$")
# A temp file from another host (or with no owner) untouched this long is an orphan.
ORPHAN_AGE_S = 3600.0
# errno values that mean "this file cannot be written here", whatever the write was.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_swept: set[Path] = set()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    with _as_output_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temp_files(path.parent)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".{os.getpid()}@{this_host()}.tmp", dir=path.parent
        )
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _as_output_error(path):
            yield tmp
            # mkstemp makes the file 0600; give it the permissions a plain open() would.
            os.chmod(tmp, 0o666 & ~_current_umask())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder inside ``folder``; on success its files move into
    ``folder`` (each by an atomic rename), on failure they are deleted: a job that fails
    half-way leaves none of its outputs behind, and never half of them over older ones."""
    import shutil

    folder = Path(folder)
    with _as_output_error(folder):
        folder.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temp_files(folder)
        staging = Path(tempfile.mkdtemp(prefix=".staging.", suffix=f".{os.getpid()}@{this_host()}.tmp", dir=folder))
    try:
        yield staging
        with _as_output_error(folder):
            for entry in sorted(staging.iterdir()):
                os.replace(entry, folder / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_orphaned_temp_files(folder: str | Path, *, force: bool = False) -> list[Path]:
    """Remove temp files of this module's naming whose writer is gone (once per folder
    and process unless ``force``); returns what was removed."""
    folder = Path(folder)
    if folder in _swept and not force:
        return []
    _swept.add(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host, now = this_host(), time.time()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or entry.is_symlink():
            continue
        pid = match.group("pid")
        try:
            if pid is not None and match.group("host") == host:
                orphan = not pid_alive(int(pid))
            else:
                orphan = now - entry.stat(follow_symlinks=False).st_mtime > ORPHAN_AGE_S
            if orphan:
                if entry.is_dir(follow_symlinks=False):  # a staged_folder of a killed job
                    import shutil

                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to remove: leave it
    return removed


@contextlib.contextmanager
def _as_output_error(path: Path) -> Iterator[None]:
    """Turn "disk full" / "read-only" failures (also torch's wrapped ones) into one line."""
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        reason = _write_failure(exc)
        if reason is None:
            raise
        raise OutputError(f"cannot write {path}: {reason}") from exc


def _write_failure(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _WRITE_ERRNOS:
            return os.strerror(seen.errno)
        # torch.save reports a full disk as a RuntimeError ("enforce fail at inline_container.cc").
        if "No space left on device" in str(seen):
            return os.strerror(errno.ENOSPC)
        seen = seen.__cause__ or seen.__context__
    return None


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fileobj)`` on a temp file, fsync it and move it into place."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))
