"""Writing a new file that must be durable: ``write_new_file``.

Imported images are written once and read seldom (the viewer reads them once into its decoded
cache), so a durable write goes around the page cache where the file system allows it
(``O_DIRECT``): the bytes are copied into a reused, page-aligned buffer of this thread and the
disk reads them from there. A buffered write first copies every byte into fresh page-cache
pages; on virtual machines whose memory the host backs lazily (balloon free-page reporting),
touching those pages cost 1.3–1.6 ms of CPU per 512 KiB in ``copy_folio_from_iter_atomic`` on
this project's 2-core VMs, against 0.2 ms for the same write and fsync direct
(``docs/performance.md``). And a large import no longer evicts what is being viewed from the
page cache.

Where direct I/O is refused (tmpfs, some network file systems: ``EINVAL`` when opening or
writing), the write is buffered instead and that file system is remembered as such, and
``MEDLABEL_DIRECT_IO=0`` turns it off. Either way the file is fsync'd before this returns.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import platform
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DIRECT_IO_ENV", "SYNCFS_ENV", "FilesystemSync", "direct_io_enabled", "write_new_file"]

DIRECT_IO_ENV = "MEDLABEL_DIRECT_IO"
SYNCFS_ENV = "MEDLABEL_SYNCFS"

#: Alignment of a direct write's buffer address, length and file offset: 4096 satisfies devices
#: of 512- and 4096-byte logical blocks.
_ALIGN = 4096
#: The aligned buffer of each writing thread (reused: its pages stay mapped and warm).
_BUFFER = 2 << 20

_local = threading.local()
_no_direct: set[int] = set()  # st_dev of file systems that refused O_DIRECT
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def direct_io_enabled() -> bool:
    """Whether durable writes try ``O_DIRECT`` (the platform has it and ``MEDLABEL_DIRECT_IO``
    is not ``0``/``false``/``no``/``off``)."""
    raw = os.environ.get(DIRECT_IO_ENV, "").strip().lower()
    return bool(_O_DIRECT) and raw not in ("0", "false", "no", "off")


def _buffer() -> memoryview:
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(mmap.mmap(-1, _BUFFER))  # anonymous: page-aligned
    return view


def write_new_file(
    target: Path | str,
    pieces: Sequence[bytes | memoryview],
    *,
    sync: bool = True,
    hashed: bool = False,
    deferred: bool = False,
) -> str | None:
    """Create ``target`` (it must not exist: ``FileExistsError``) holding the concatenation of
    ``pieces``, and fsync it when ``sync`` (directly, around the page cache, where the file
    system allows); returns the SHA-256 of the bytes when ``hashed``. With ``deferred`` (and
    ``sync``), written the same way but not fsync'd: the caller makes a group of such files
    durable at once (:class:`FilesystemSync`). A failure removes what was created and raises
    the ``OSError``."""
    if sync and direct_io_enabled() and (not _no_direct or _device(target) not in _no_direct):
        try:
            return _write_direct(target, pieces, hashed, fsync=not deferred)
        except _Refused:
            _no_direct.add(_device(target))
    return _write_buffered(target, pieces, sync and not deferred, hashed)


def _device(target: Path | str) -> int:
    """The file system (``st_dev``) ``target`` is created in; -1 when unknown."""
    try:
        return os.stat(os.path.dirname(os.fspath(target)) or ".").st_dev
    except OSError:
        return -1


class _Refused(Exception):
    """The file system does not take direct writes (nothing is left of the attempt)."""


def _write_buffered(target: Path | str, pieces: Sequence[bytes | memoryview], sync: bool, hashed: bool) -> str | None:
    h = hashlib.sha256() if hashed else None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for piece in pieces:
            if h is not None:
                h.update(piece)
            view = memoryview(piece).cast("B")
            while view:
                view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink(target)
        raise
    os.close(fd)
    return h.hexdigest() if h is not None else None


def _write_direct(
    target: Path | str, pieces: Sequence[bytes | memoryview], hashed: bool, *, fsync: bool = True
) -> str | None:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise _Refused from exc
        raise
    h = hashlib.sha256() if hashed else None
    buf = _buffer()
    fill = 0  # bytes waiting in ``buf``
    written = 0  # bytes in the file
    try:
        for piece in pieces:
            view = memoryview(piece).cast("B")
            if h is not None:
                h.update(view)
            while view:
                n = min(len(view), _BUFFER - fill)
                buf[fill : fill + n] = view[:n]
                fill += n
                view = view[n:]
                if fill == _BUFFER:
                    _write_aligned(fd, buf[:fill])
                    written += fill
                    fill = 0
        if fill:
            padded = -(-fill // _ALIGN) * _ALIGN
            buf[fill:padded] = bytes(padded - fill)  # the tail of the last block, cut below
            _write_aligned(fd, buf[:padded])
            if padded != fill:
                os.ftruncate(fd, written + fill)
        if fsync:
            os.fsync(fd)
    except BaseException as exc:
        os.close(fd)
        _unlink(target)
        if isinstance(exc, OSError) and exc.errno == errno.EINVAL:
            raise _Refused from exc
        raise
    os.close(fd)
    return h.hexdigest() if h is not None else None


def _write_aligned(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        if n % _ALIGN and n != len(view):  # a short write off a block boundary: not resumable direct
            raise OSError(errno.EIO, f"short direct write of {n} bytes")
        view = view[n:]


def _unlink(target: Path | str) -> None:
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- groups made durable at once


def _off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


def _kernel_reports_syncfs_errors() -> bool:
    """Linux 5.8 and later report writeback errors through ``syncfs`` (earlier ones return 0)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


def _load_syncfs() -> object | None:
    if not _kernel_reports_syncfs_errors():
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


class FilesystemSync:
    """Make everything written on one file system durable with one ``syncfs(2)``: the data,
    inodes and directory entries of a group of files (written with ``write_new_file(...,
    deferred=True)``, linked, their directories made) with one flush of the disk's cache,
    instead of an fsync of each file and of each directory naming one (three flushes a file into
    the blob store's fan-out: measured, the disk then took 0.66–0.71 s for 300 files of 525 KB,
    and 0.49–0.52 s with one ``syncfs`` per 16 files; ``docs/performance.md``). Where names must
    only appear once their data is durable (the blob store), sync, link, then sync again.

    Open it on a directory of that file system **before** the writes it is to cover: the kernel
    reports a writeback error to a ``syncfs`` on a descriptor opened before the error (Linux
    ≥ 5.8), once. After a failure every later :meth:`sync` fails too (what was written meanwhile
    may be lost with no second report). ``syncfs`` also writes back other processes' dirty data
    on that file system: ``MEDLABEL_SYNCFS=0`` turns it off (fsyncs file by file, as
    elsewhere), for a data folder on a file system shared with heavy writers."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self.failed: OSError | None = None

    @classmethod
    def open(cls, folder: Path | str) -> FilesystemSync | None:
        """One for the file system of ``folder``; None where ``syncfs`` is not available (not
        Linux ≥ 5.8), turned off, or ``folder`` cannot be opened."""
        if _syncfs is None or _off(SYNCFS_ENV):
            return None
        try:
            return cls(os.open(folder, os.O_RDONLY | os.O_DIRECTORY))
        except OSError:
            return None

    def sync(self) -> None:
        """Everything written on the file system so far is durable when this returns; raises the
        ``OSError`` (now and at every later call) when the kernel reports a writeback error."""
        with self._lock:
            if self.failed is not None:
                raise self.failed
            if self._fd is None:
                raise ValueError("FilesystemSync is closed")
            if _syncfs(self._fd) != 0:  # type: ignore[operator]
                code = ctypes.get_errno()
                self.failed = OSError(code, f"syncfs: {os.strerror(code)}")
                raise self.failed

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
