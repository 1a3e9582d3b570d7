"""One job per grid cell, wherever the cell's folder lives.

The policy is :class:`glotok_bench.runlock.RunLock` (a lease with holder and expiry); this
module only says where the lease is kept. A local (or mounted) folder keeps it in a file
(:class:`~glotok_bench.runlock.LocalLeaseStore`); an S3 bucket keeps it as an object
written with S3's conditional requests (create: ``If-None-Match: *``; swap and delete:
``If-Match: <etag>``), through boto3 because pyarrow's filesystems cannot make a write
conditional. Other object stores have no lock yet: their cells run unlocked, and the
record says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from glotok_bench.runlock import LOCK_NAME, Lease, LocalLeaseStore, RunLock, RunLockedError
from glotok_bench.store import Store


class S3LeaseStore:
    """The lease as the object ``s3://bucket/<key>``. Endpoint and credentials come from
    the standard AWS variables, as for the store itself."""

    def __init__(self, uri: str):
        import boto3

        bucket, _, self.key = uri[len("s3://"):].partition("/")
        self.bucket = bucket
        self.client = boto3.client("s3")
        self._etags: dict[str, str] = {}  # lease token -> etag of the object we read it from

    def read(self) -> Lease | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        lease = Lease.from_json(response["Body"].read().decode("utf-8"))
        self._etags[lease.token] = response["ETag"]
        return lease

    def create(self, lease: Lease) -> bool:
        return self._conditional(self.client.put_object, Body=lease.to_json().encode(), IfNoneMatch="*")

    def swap(self, expected: Lease, new: Lease | None) -> bool:
        current = self.read()
        if current is None or current.token != expected.token:
            return False
        etag = self._etags[current.token]
        if new is None:
            return self._conditional(self.client.delete_object, IfMatch=etag)
        return self._conditional(self.client.put_object, Body=new.to_json().encode(), IfMatch=etag)

    def _conditional(self, call: Any, **kwargs: Any) -> bool:
        from botocore.exceptions import ClientError

        try:
            call(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as exc:
            # 412: the condition failed; 409: another conditional write raced this one.
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise
        return True


# A cell's lease is short: when a node dies, the retry lands on another node, which can
# only take the lease over once it has expired (it cannot see the dead node's processes).
CELL_LEASE_S = 60.0


def hold_cell(store: Store, what: str, notes: list[str], *, lease_s: float = CELL_LEASE_S
              ) -> contextlib.AbstractContextManager:
    """Hold the cell folder ``store`` for one job. A holder on this host whose process is
    gone is taken over at once; a holder elsewhere is waited for up to two lease periods
    (a dead node's lease expires in that time), then the job refuses, naming the holder."""
    if store.is_local:
        lease_store: Any = LocalLeaseStore(store.local_path)
    elif store.location.startswith("s3://"):
        lease_store = S3LeaseStore(store.uri(LOCK_NAME))
    else:
        notes.append(f"{store.location}: no lock for this kind of store; make sure one job runs this cell")
        return contextlib.nullcontext()
    return _held(RunLock(lease_store, job=what, what=store.location, lease_s=lease_s), wait_s=2 * lease_s)


@contextlib.contextmanager
def _held(lock: RunLock, *, wait_s: float) -> Iterator[RunLock]:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock.acquire()
            break
        except RunLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(min(5.0, wait_s / 10))
    try:
        yield lock
    finally:
        lock.release()
