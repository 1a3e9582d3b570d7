"""Where grid results live: a local folder or any filesystem pyarrow understands.

``open_store("runs")``, ``open_store("/mnt/shared/runs")``, ``open_store("s3://bucket/runs")``,
``open_store("gs://bucket/runs")``: the same small interface over ``pyarrow.fs``, the
filesystem layer Ray Tune's ``storage_path`` uses, so one location serves both. S3
endpoint and credentials come only from the standard variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``...).

Writes are whole-object: a local file is written to a temp file and renamed, an object
store makes an object visible only once its upload completes. So a reader never sees half
a file, whichever the backend.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import attrs

from glotok_bench.errors import GlotokError


class StoreError(GlotokError):
    """A store location that cannot be opened or read."""


def is_uri(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def _normalise(location: str | Path) -> str:
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if is_uri(text):
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


@attrs.frozen
class Store:
    """A folder in some filesystem. Relative names use ``/`` on every backend."""

    location: str  # an absolute local path or a URI such as s3://bucket/prefix

    @property
    def is_local(self) -> bool:
        return not is_uri(self.location)

    @property
    def local_path(self) -> Path | None:
        """The folder on this machine's disk (a shared mount counts), or None."""
        return Path(self.location) if self.is_local else None

    def _fs(self) -> tuple[object, str]:
        import pyarrow.fs

        if self.is_local:
            return pyarrow.fs.LocalFileSystem(), self.location
        return _remote_filesystem(self.location)

    def _path(self, name: str = "") -> tuple[object, str]:
        filesystem, root = self._fs()
        return filesystem, str(PurePosixPath(root, name)) if name else root

    def uri(self, name: str = "") -> str:
        """The full location of ``name`` (what records and messages show)."""
        return f"{self.location}/{name}" if name else self.location

    def child(self, *parts: str) -> Store:
        return Store(self.uri("/".join(parts)))

    # -- single files ---------------------------------------------------------------------

    def read_bytes(self, name: str) -> bytes:
        """Raises FileNotFoundError when ``name`` is absent."""
        filesystem, path = self._path(name)
        try:
            with filesystem.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if not self.exists(name):
                raise FileNotFoundError(self.uri(name)) from None
            raise StoreError(f"cannot read {self.uri(name)}: {exc}") from None

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def write_bytes(self, name: str, data: bytes) -> str:
        if self.is_local:
            from glotok_bench.atomic import atomic_write_bytes

            atomic_write_bytes(Path(self.location, name), data)
            return self.uri(name)
        filesystem, path = self._path(name)
        _with_parents(filesystem, path, lambda: _write_stream(filesystem, path, data))
        return self.uri(name)

    def write_text(self, name: str, text: str) -> str:
        return self.write_bytes(name, text.encode("utf-8"))

    def exists(self, name: str = "") -> bool:
        import pyarrow.fs

        filesystem, path = self._path(name)
        return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def delete(self, name: str) -> None:
        filesystem, path = self._path(name)
        try:
            filesystem.delete_file(path)
        except FileNotFoundError:
            pass

    def list(self, under: str = "") -> list[str]:
        """Names (relative to this store) of every file under ``under``, sorted."""
        import pyarrow.fs

        filesystem, root = self._fs()
        base = str(PurePosixPath(root, under)) if under else root
        selector = pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True)
        names = [
            str(PurePosixPath(info.path).relative_to(PurePosixPath(root)))
            for info in filesystem.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.File
        ]
        return sorted(names)

    # -- folders --------------------------------------------------------------------------

    def upload_file(self, source: Path, name: str) -> None:
        if self.is_local:
            from glotok_bench.atomic import atomic_path

            with atomic_path(Path(self.location, name)) as tmp:
                shutil.copyfile(source, tmp)
            return
        import pyarrow.fs

        filesystem, path = self._path(name)
        _with_parents(filesystem, path,
                      lambda: pyarrow.fs.copy_files(str(source), path, destination_filesystem=filesystem))

    def download_file(self, name: str, target: Path) -> None:
        from glotok_bench.atomic import atomic_path

        filesystem, path = self._path(name)
        with atomic_path(target) as tmp:
            import pyarrow.fs

            pyarrow.fs.copy_files(path, str(tmp), source_filesystem=filesystem,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())

    def upload_dir(self, source: Path, under: str = "") -> None:
        for path in sorted(Path(source).rglob("*")):
            if path.is_file():
                relative = path.relative_to(source).as_posix()
                self.upload_file(path, f"{under}/{relative}" if under else relative)

    def download_dir(self, target: Path, under: str = "", *, skip: frozenset[str] = frozenset()) -> list[str]:
        """Copy every file under ``under`` into ``target``; returns the names copied."""
        copied = []
        for name in self.list(under):
            relative = str(PurePosixPath(name).relative_to(under)) if under else name
            if relative in skip:
                continue
            self.download_file(name, Path(target, relative))
            copied.append(relative)
        return copied


@functools.lru_cache(maxsize=256)
def _remote_filesystem(location: str) -> tuple[object, str]:
    """One filesystem object per location and process: opening one can cost a round trip
    (S3 looks up the bucket's region), and an in-memory one keeps its files."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad URI
        raise StoreError(f"cannot open store {location}: {exc}") from None


def _write_stream(filesystem: object, path: str, data: bytes) -> None:
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def _with_parents(filesystem: object, path: str, write: Callable[[], None]) -> None:
    """Object stores need no folders; hierarchical ones (GCS emulation, HDFS, in-memory)
    do. Make them only when a write says so, which costs object stores nothing."""
    try:
        write()
    except FileNotFoundError:
        filesystem.create_dir(str(PurePosixPath(path).parent), recursive=True)
        write()


def open_store(location: str | Path | Store) -> Store:
    if isinstance(location, Store):
        return location
    return Store(_normalise(location))


_MIRRORS: list[tempfile.TemporaryDirectory] = []


def local_records_folder(location: str | Path, record_name: str = "record.json") -> Path | None:
    """A folder on this machine holding the run records under ``location``: the folder
    itself when local, else a temporary copy of just its record files (named after the
    location's last part, so output that names records by folder reads the same).
    None when there is no such folder."""
    store = open_store(location)
    if store.is_local:
        return store.local_path if store.local_path.is_dir() else None
    names = [name for name in store.list() if PurePosixPath(name).name == record_name]
    if not names:
        return None
    mirror = tempfile.TemporaryDirectory(prefix="glotok-records-")
    if not _MIRRORS:
        atexit.register(lambda: [m.cleanup() for m in _MIRRORS])
    _MIRRORS.append(mirror)
    root = Path(mirror.name, PurePosixPath(store.location).name or "records")
    for name in names:
        store.download_file(name, root / name)
    return root
