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
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Protocol

from medlabel.errors import InvalidInput, NotFound

__all__ = ["BlobStore", "LocalBlobStore"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def put_stream(self, stream: BinaryIO) -> str: ...
    def adopt(self, path: Path, digest: str) -> str: ...
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
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(exist_ok=True)

    def _path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise InvalidInput(f"blob name must be 64 lowercase hex digits (SHA-256), found {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(digest):
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
            if final.exists():
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
        final = self._path(digest)
        if final.exists():
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, final)
        except FileExistsError:
            return digest  # stored meanwhile (same name, same bytes)
        except OSError:  # another file system, or links not supported: copy
            with open(path, "rb") as fh:
                return self.put_stream(fh)
        return digest

    def reserve(self, digest: str) -> None:
        """Create the directories that will hold ``digest`` (nothing is stored): a file system may
        take a millisecond per new directory, so an import makes them while files are still
        being prepared (in parallel, in the server processes) instead of when it stores them.
        Empty directories are harmless; ``sync_dirs`` makes them durable with the blobs."""
        self._path(digest).parent.mkdir(parents=True, exist_ok=True)

    def sync_dirs(self, digests: Iterable[str]) -> None:
        """fsync the directories holding ``digests`` (and their parents, which may be new), so
        that the names survive a crash; in parallel, since each call waits for the disk."""
        leaves = {self._path(d).parent for d in digests}
        folders = sorted(leaves | {p.parent for p in leaves} | ({self.root} if leaves else set()))
        if len(folders) <= 2:
            for folder in folders:
                _fsync_dir(folder)
            return
        with ThreadPoolExecutor(min(8, len(folders))) as pool:
            list(pool.map(_fsync_dir, folders))

    def _commit(self, digest: str, chunks: list[bytes]) -> None:
        final = self._path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                for c in chunks:
                    out.write(c)
                out.flush()
                os.fsync(out.fileno())
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
        return self._path(digest).exists()

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterable[str]:
        for p in self.root.glob("??/??/*"):
            if _DIGEST.match(p.name):
                yield p.name
