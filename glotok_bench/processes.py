"""Is a process still there? Used to tell a dead writer's leftovers from a live one's."""

from __future__ import annotations

import errno
import os
import platform
from pathlib import Path


def this_host() -> str:
    return platform.node()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists on this host and is not a zombie waiting to be reaped."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    except OSError as exc:
        return exc.errno != errno.ESRCH
    state = _stat_fields(pid)
    return not (state and state[0] in ("Z", "X"))


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), else None: with the
    pid it names one process, even after the pid is reused."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')'; the fields after the last ')' are plain.
    return stat[stat.rfind(")") + 2 :].split()
