"""One job per run folder: a lease (holder + expiry) taken before a job writes the folder.

A second job on the same folder refuses at once and names the holder (host, pid, start
time). A lease whose holder is gone is taken over: on the same host when the holder's
process no longer exists, from another host once the lease has expired (the holder
renews it while it runs, so only a dead or cut-off holder lets it expire).

The policy (:class:`RunLock`) only needs three atomic operations from where the lease is
kept (:class:`LeaseStore`): read it, create it if absent, and swap it if it is still the
one read. :class:`LocalLeaseStore` keeps it in a file in the folder; an object store
implements the same three with conditional writes (create: ``If-None-Match: *``; swap:
``If-Match: <etag of the read>``), so grids that keep runs in a bucket lock the same way.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from glotok_bench.errors import GlotokError, OutputError
from glotok_bench.processes import pid_alive, process_start, this_host

LOCK_NAME = ".glotok-lock.json"
# Long enough that a busy or briefly suspended holder renews in time, short enough that
# a folder whose holder vanished on another host frees itself within minutes.
DEFAULT_LEASE_S = 300.0


class RunLockedError(GlotokError):
    """The run folder is held by another live job."""


@attrs.frozen
class Lease:
    token: str  # unique per acquisition: a swap compares tokens, never holders
    host: str
    pid: int
    started: str  # ISO time (UTC) the job took the folder
    expires: float  # unix time; renewed while the job runs
    job: str = ""
    # The holder's process start time, so a reused pid is not mistaken for the holder.
    pid_start: str | None = None

    def describe(self) -> str:
        what = f"a {self.job} job" if self.job else "another job"
        return f"{what} (host {self.host}, pid {self.pid}, started {self.started})"

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Lease:
        data = json.loads(text)
        return cls(**{field.name: data[field.name] for field in attrs.fields(cls) if field.name in data})


class LeaseStore(Protocol):
    """Where one folder's lease lives. Each method must be atomic across processes/hosts."""

    def read(self) -> Lease | None:
        """The stored lease, or None when there is none."""

    def create(self, lease: Lease) -> bool:
        """Store ``lease`` if no lease is stored; False (and nothing written) otherwise."""

    def swap(self, expected: Lease, new: Lease | None) -> bool:
        """Replace the stored lease by ``new`` (None: delete it) only if the stored one is
        still ``expected`` (same token); False (and nothing written) otherwise."""


class LocalLeaseStore:
    """The lease as ``<folder>/.glotok-lock.json``.

    Created by a hard link from a complete temp file (an O_EXCL create that is never seen
    half-written). Swaps and deletes happen under an ``flock`` on the folder, which the
    kernel releases if the process dies, so a takeover can never race another takeover.
    """

    def __init__(self, folder: str | Path, *, beside: bool = False):
        """``beside``: keep the lease next to ``folder`` (``.<name>.glotok-lock.json``), for
        jobs that replace the folder whole (token sets are swapped in when complete)."""
        self.folder = Path(folder)
        self.path = self.folder.with_name(f".{self.folder.name}{LOCK_NAME}") if beside else self.folder / LOCK_NAME

    def read(self) -> Lease | None:
        try:
            text = self.path.read_text(encoding="utf-8")
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            return Lease.from_json(text)
        except (ValueError, TypeError, KeyError):
            # Unreadable: nobody can renew it, so it frees itself like a lease from afar.
            return Lease(token=f"unreadable:{mtime}", host="<unreadable lock file>", pid=0,
                         started=_iso(mtime), expires=mtime + DEFAULT_LEASE_S)

    def create(self, lease: Lease) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._write_temp(lease)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: a plain O_EXCL create
            return self._create_exclusive(lease)
        finally:
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self, lease: Lease) -> bool:
        # Briefly empty before it is written: read() then sees an unreadable lease, which
        # counts as held until it would have expired, so nobody takes it meanwhile.
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(lease.to_json())
        return True

    def swap(self, expected: Lease, new: Lease | None) -> bool:
        with self._guard():
            current = self.read()
            if current is None or current.token != expected.token:
                return False
            if new is None:
                self.path.unlink(missing_ok=True)
            else:
                os.replace(self._write_temp(new), self.path)
            return True

    def _write_temp(self, lease: Lease) -> Path:
        # atomic.py's temp naming, so one left by a process killed right here is swept up.
        tmp = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.{os.getpid()}@{this_host()}.tmp")
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(lease.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        return tmp

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        import fcntl

        # The folder itself is the guard (Linux flocks directories), so no file is left behind.
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock


class RunLock:
    """Hold a folder for one job: ``with RunLock(LocalLeaseStore(run_dir), job="train"):``.

    Refuses at once (:class:`RunLockedError`, naming the holder) when a live job holds the
    folder; takes over a lease whose holder is dead or whose lease expired, and says so.
    """

    def __init__(self, store: LeaseStore, *, job: str = "", what: str = "", lease_s: float = DEFAULT_LEASE_S):
        self.store = store
        self.job = job
        self.what = what or str(getattr(store, "folder", "the run folder"))
        self.lease_s = float(lease_s)
        self.lease: Lease | None = None
        self.lost = False  # the lease was taken from us while we ran (we were cut off too long)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> Lease:
        mine = Lease(
            token=uuid.uuid4().hex, host=this_host(), pid=os.getpid(),
            started=_iso(time.time()), expires=time.time() + self.lease_s, job=self.job,
            pid_start=process_start(os.getpid()),
        )
        for _ in range(5):  # each retry means the holder changed under us: try again
            if self.store.create(mine):
                return self._hold(mine)
            current = self.store.read()
            if current is None:
                continue
            why_stale = stale_reason(current)
            if why_stale is None:
                raise RunLockedError(
                    f"{self.what} is in use by {current.describe()}; wait for it to finish, "
                    f"stop it, or use another folder"
                )
            if self.store.swap(current, mine):
                warnings.warn(f"{self.what}: took over the lock of {current.describe()}: {why_stale}",
                              stacklevel=2)
                return self._hold(mine)
        raise RunLockedError(f"{self.what}: could not take the lock; other jobs keep taking it")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self.lease is not None:
            if not self.store.swap(self.lease, None):
                self.lost = True
            self.lease = None
        if self.lost:
            warnings.warn(f"{self.what}: another job took this folder's lock while this job ran "
                          f"(it could not renew its lease in time)", stacklevel=2)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _hold(self, lease: Lease) -> Lease:
        self.lease = lease
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="glotok-lease", daemon=True)
        self._renewer.start()
        return lease

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            current = self.lease
            if current is None:
                return
            renewed = attrs.evolve(current, expires=time.time() + self.lease_s)
            try:
                ok = self.store.swap(current, renewed)
            except OSError:
                continue  # a transient store error: the next renewal retries in time
            if not ok:
                self.lost = True
                return
            self.lease = renewed


def stale_reason(lease: Lease, *, now: float | None = None) -> str | None:
    """Why ``lease``'s holder is gone, or None while it may still be running."""
    if lease.host == this_host() and lease.pid > 0:
        if not pid_alive(lease.pid):
            return f"process {lease.pid} no longer exists"
        started = process_start(lease.pid)
        if lease.pid_start and started and started != lease.pid_start:
            return f"process {lease.pid} is another process now (pid reused)"
        return None
    now = time.time() if now is None else now
    if now > lease.expires:
        return f"its lease expired at {_iso(lease.expires)} without renewal"
    return None


@contextlib.contextmanager
def hold_run_folder(folder: str | Path, *, job: str = "", beside: bool = False) -> Iterator[RunLock]:
    """Hold ``folder`` (a local path) for the duration of the ``with`` block (``beside``:
    see :class:`LocalLeaseStore`)."""
    lock = RunLock(LocalLeaseStore(folder, beside=beside), job=job, what=str(folder))
    with lock:
        yield lock


def _iso(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).isoformat(timespec="seconds")
