"""Content-addressed blob store: SHA-256 names, atomic writes (temp file + rename).

``BlobStore`` is a small protocol so an S3-compatible store can follow; ``LocalBlobStore``
keeps blobs under ``<root>/ab/cd/<sha256>``.

Durability: a blob's data is on disk (``fsync``) before its name appears in the store, so a
database row that names a blob never points at a torn file after a crash. ``adopt`` takes a file
the caller has already written and fsync'd (the import writes and syncs its files on I/O threads
while it parses the next ones) and hard-links it into place; ``sync_dirs`` then makes the new
names themselves durable, once per directory, before the caller commits rows that name them.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from medlabel.errors import InvalidInput, NotFound
from medlabel.storage.files import write_new_file

__all__ = ["BlobEntry", "BlobStore", "LocalBlobStore"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_FANOUT = re.compile(r"^[0-9a-f]{2}$")


@dataclass(frozen=True)
class BlobEntry:
    """One stored blob as the file system sees it (for housekeeping, e.g. the orphan sweep)."""

    digest: str
    size: int
    #: the file's modification time, seconds since the epoch (a hard-linked blob keeps the time
    #: its source file was written, which may be well before it was stored)
    mtime: float


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory by its path (opened read-only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Threads that fsync blob directories in parallel (``sync_dirs``), kept for the process: one
#: pool made and joined per call started eight threads for every group of files recorded.
_DIR_SYNC_THREADS = 8
_dir_pool: tuple[int, ThreadPoolExecutor] | None = None
_dir_pool_lock = threading.Lock()


def _dir_syncers() -> ThreadPoolExecutor:
    global _dir_pool
    with _dir_pool_lock:
        if _dir_pool is None or _dir_pool[0] != os.getpid():  # a forked child has no threads of its own
            _dir_pool = (os.getpid(), ThreadPoolExecutor(_DIR_SYNC_THREADS, thread_name_prefix="medlabel-dir-sync"))
        return _dir_pool[1]


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def put_stream(self, stream: BinaryIO) -> str: ...
    def adopt(self, path: Path, digest: str) -> str: ...
    def refresh(self, digest: str) -> bool: ...
    def reserve(self, digest: str) -> None: ...
    def sync_dirs(self, digests: Iterable[str]) -> None: ...
    def get(self, digest: str) -> bytes: ...
    def open(self, digest: str) -> BinaryIO: ...
    def exists(self, digest: str) -> bool: ...
    def delete(self, digest: str) -> None: ...
    def digests(self) -> Iterable[str]: ...


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = os.fspath(self.root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(exist_ok=True)

    def _path(self, digest: str) -> Path:
        return Path(self._name(digest))

    def _name(self, digest: str) -> str:
        """The blob's path as a string (an import names hundreds a second: no ``Path`` objects)."""
        if not _DIGEST.match(digest):
            raise InvalidInput(f"blob name must be 64 lowercase hex digits (SHA-256), found {digest!r}")
        return f"{self._root}/{digest[:2]}/{digest[2:4]}/{digest}"

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.refresh(digest):
            return digest
        self._commit(digest, [data])
        return digest

    def put_stream(self, stream: BinaryIO) -> str:
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            final = self._path(digest)
            if self.refresh(digest):
                os.unlink(tmp)
                return digest
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return digest
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def adopt(self, path: Path, digest: str) -> str:
        """Store the file at ``path``, whose SHA-256 is ``digest`` and whose data the caller has
        already written and fsync'd; ``path`` itself is left as it is.

        The file is hard-linked into the store when both lie on one file system (no copy, no
        second hash); otherwise it is copied like ``put_stream``. The caller vouches for
        ``digest``: it must have hashed exactly the bytes it wrote. Call ``sync_dirs`` on the
        returned digests before committing rows that name them.
        """
        final = self._name(digest)
        if self.refresh(digest):
            return digest
        for attempt in (1, 2):
            try:
                os.link(path, final)
            except FileNotFoundError:  # its directories are not there yet (or ``path`` is gone)
                if attempt == 2 or not os.path.exists(path):
                    raise
                os.makedirs(os.path.dirname(final), exist_ok=True)
                continue
            except FileExistsError:
                return digest  # stored meanwhile (same name, same bytes)
            except OSError:  # another file system, or links not supported: copy
                with open(path, "rb") as fh:
                    return self.put_stream(fh)
            break
        return digest

    def refresh(self, digest: str) -> bool:
        """Whether ``digest`` is stored; if so its mtime becomes now, so that the orphan sweep
        (``medlabel.items.blob_sweep``, by age) never takes a blob an import is about to name."""
        name = self._name(digest)
        try:
            os.utime(name)
        except FileNotFoundError:
            return False
        except OSError:
            return os.path.exists(name)
        return True

    def reserve(self, digest: str) -> None:
        """Create the directories that will hold ``digest`` (nothing is stored): a file system may
        take a millisecond per new directory, so an import makes them while files are still
        being prepared (in parallel, in the server processes) instead of when it stores them.
        Empty directories are harmless; ``sync_dirs`` makes them durable with the blobs."""
        self._path(digest).parent.mkdir(parents=True, exist_ok=True)

    def sync_dirs(self, digests: Iterable[str]) -> None:
        """fsync the directories holding ``digests`` (and their parents, which may be new), so
        that the names survive a crash; in parallel, since each call waits for the disk."""
        leaves = {os.path.dirname(self._name(d)) for d in digests}
        folders = sorted(leaves | {os.path.dirname(p) for p in leaves} | ({self._root} if leaves else set()))
        if len(folders) <= 3:  # one blob's (a thread pool costs more than it saves)
            for folder in folders:
                fsync_path(folder)
            return
        list(_dir_syncers().map(fsync_path, folders))

    def _commit(self, digest: str, chunks: list[bytes]) -> None:
        final = self._path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{self._tmp}/{uuid.uuid4().hex}"
        write_new_file(tmp, chunks)  # fsync'd; a failure leaves nothing
        try:
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def get(self, digest: str) -> bytes:
        path = self._path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store") from None

    def open(self, digest: str) -> BinaryIO:
        path = self._path(digest)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store") from None

    def exists(self, digest: str) -> bool:
        return os.path.exists(self._name(digest))

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterable[str]:
        for p in self.root.glob("??/??/*"):
            if _DIGEST.match(p.name):
                yield p.name

    # ------------------------------------------------------------ housekeeping (local only)

    @property
    def tmp_dir(self) -> Path:
        """Where writes in progress live until they are renamed into place."""
        return self._tmp

    def path(self, digest: str) -> Path:
        """The file that holds (or would hold) ``digest``."""
        return self._path(digest)

    def fanout_dirs(self) -> Iterator[Path]:
        """The fan-out directories, deepest first: every ``ab/cd`` before its ``ab``."""
        for top in sorted(self.root.iterdir()):
            if not (_FANOUT.match(top.name) and top.is_dir() and not top.is_symlink()):
                continue
            try:
                subs = sorted(top.iterdir())
            except FileNotFoundError:  # removed meanwhile
                continue
            for sub in subs:
                if _FANOUT.match(sub.name) and sub.is_dir() and not sub.is_symlink():
                    yield sub
            yield top

    def entries(self) -> Iterator[BlobEntry]:
        """Every stored blob with its size and modification time, one directory at a time
        (files in the fan-out directories that are not named by their SHA-256 are skipped)."""
        for folder in self.fanout_dirs():
            if folder.parent == self.root:
                continue
            prefix = folder.parent.name + folder.name
            try:
                listing = os.scandir(folder)
            except FileNotFoundError:  # removed meanwhile
                continue
            with listing:
                for e in listing:
                    if not (_DIGEST.match(e.name) and e.name.startswith(prefix)):
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield BlobEntry(e.name, st.st_size, st.st_mtime)
