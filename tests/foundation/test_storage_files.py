"""``medlabel.storage.files.write_new_file``: durable writes around the page cache, with a
buffered fallback; checked against ``hashlib`` and what is read back."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os

import pytest

from medlabel.storage import files

SIZES = [0, 1, 511, 4095, 4096, 4097, 525_000, files._BUFFER - 1, files._BUFFER, files._BUFFER + 1, 5_000_001]


def _pieces(data: bytes) -> list[bytes | memoryview]:
    """Bytes and views, of odd lengths (a piece ends off every block boundary)."""
    third = len(data) // 3
    return [memoryview(data)[:third], data[third : 2 * third], memoryview(bytearray(data[2 * third :]))]


def _direct_possible(folder) -> bool:
    if not files._O_DIRECT:
        return False
    try:
        fd = os.open(folder / ".probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL | files._O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(folder / ".probe")
    return True


@pytest.fixture
def opened(monkeypatch):
    """The flags of every ``os.open`` by the module."""
    seen: list[int] = []
    real = os.open

    def spy(path, flags, *a, **kw):
        seen.append(flags)
        return real(path, flags, *a, **kw)

    monkeypatch.setattr(files.os, "open", spy)
    return seen


@pytest.mark.parametrize("size", SIZES)
def test_bytes_read_back_and_digest(tmp_path, size):
    data = os.urandom(size)
    target = tmp_path / "f"
    digest = files.write_new_file(target, _pieces(data), hashed=True)
    assert target.read_bytes() == data
    assert os.path.getsize(target) == size
    assert digest == hashlib.sha256(data).hexdigest()
    assert files.write_new_file(tmp_path / "g", [data]) is None  # not hashed unless asked
    assert (tmp_path / "g").read_bytes() == data


def test_direct_where_the_file_system_takes_it(tmp_path, opened, monkeypatch):
    monkeypatch.delenv(files.DIRECT_IO_ENV, raising=False)
    if not _direct_possible(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    opened.clear()
    files.write_new_file(tmp_path / "f", [b"x" * 10_000])
    assert opened and all(flags & files._O_DIRECT for flags in opened)
    opened.clear()
    files.write_new_file(tmp_path / "g", [b"x" * 10_000], sync=False)  # not durable: buffered
    assert opened and not any(flags & files._O_DIRECT for flags in opened)


def test_turned_off_by_the_environment(tmp_path, opened, monkeypatch):
    monkeypatch.setenv(files.DIRECT_IO_ENV, "0")
    assert not files.direct_io_enabled()
    files.write_new_file(tmp_path / "f", [b"abc"])
    assert (tmp_path / "f").read_bytes() == b"abc"
    assert not any(flags & files._O_DIRECT for flags in opened)
    monkeypatch.setenv(files.DIRECT_IO_ENV, "1")
    assert files.direct_io_enabled() == bool(files._O_DIRECT)


@pytest.mark.parametrize("where", ["open", "write"])
def test_refused_direct_io_falls_back_and_is_remembered(tmp_path, monkeypatch, where):
    """A file system that answers EINVAL to O_DIRECT (at open, or only at the write) gets a
    buffered write instead, and is not asked again."""
    monkeypatch.delenv(files.DIRECT_IO_ENV, raising=False)
    monkeypatch.setattr(files, "_O_DIRECT", 0o40000)
    monkeypatch.setattr(files, "_no_direct", set())
    real_open, real_write = os.open, os.write
    direct_fds: set[int] = set()
    attempts = []

    def fake_open(path, flags, *a, **kw):
        if flags & 0o40000:
            attempts.append(path)
            if where == "open":
                raise OSError(errno.EINVAL, "Invalid argument")
            fd = real_open(path, flags & ~0o40000, *a, **kw)
            direct_fds.add(fd)
            return fd
        return real_open(path, flags, *a, **kw)

    def fake_write(fd, data):
        if fd in direct_fds:
            direct_fds.discard(fd)  # (its number is free again once closed)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "open", fake_open)
    monkeypatch.setattr(files.os, "write", fake_write)
    data = os.urandom(9000)
    assert files.write_new_file(tmp_path / "f", _pieces(data), hashed=True) == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "f").read_bytes() == data
    files.write_new_file(tmp_path / "g", [data])
    assert (tmp_path / "g").read_bytes() == data
    assert len(attempts) == 1  # remembered: the second file went buffered at once
    assert os.stat(tmp_path).st_dev in files._no_direct


@pytest.mark.parametrize("direct", ["1", "0"])
def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch, direct):
    monkeypatch.setenv(files.DIRECT_IO_ENV, direct)
    real_write = os.write
    calls = []

    def failing(fd, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", failing)
    data = os.urandom(files._BUFFER + 5000)
    with pytest.raises(OSError) as caught:
        files.write_new_file(tmp_path / "f", [data[:5000], data[5000:]])
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / "f").exists()


def test_a_failed_fsync_leaves_nothing(tmp_path, monkeypatch):
    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", failing)
    with pytest.raises(OSError):
        files.write_new_file(tmp_path / "f", [b"data"])
    assert not (tmp_path / "f").exists()


def test_an_existing_file_is_never_overwritten(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"before")
    with pytest.raises(FileExistsError):
        files.write_new_file(target, [b"after"])
    assert target.read_bytes() == b"before"


def test_threads_have_their_own_buffer(tmp_path):
    """Concurrent writers (the I/O threads) never mix their bytes."""
    from concurrent.futures import ThreadPoolExecutor

    blobs = [os.urandom(300_000 + i * 4099) for i in range(24)]

    def write(i: int) -> None:
        files.write_new_file(tmp_path / f"f{i}", [blobs[i]])

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(write, range(len(blobs))))
    for i, data in enumerate(blobs):
        assert (tmp_path / f"f{i}").read_bytes() == data


# ---------------------------------------------------------------- FilesystemSync


def test_filesystem_sync_makes_deferred_writes_durable(tmp_path, monkeypatch):
    """``write_new_file(deferred=True)`` writes without an fsync; ``FilesystemSync.sync`` is
    one ``syncfs`` of the file system (counted here through the loaded function)."""
    fs = files.FilesystemSync.open(tmp_path)
    if fs is None:
        pytest.skip("no syncfs here (not Linux 5.8 or later)")
    fsynced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real(fd))[1])
    calls: list[int] = []
    real_syncfs = files._syncfs
    monkeypatch.setattr(files, "_syncfs", lambda fd: (calls.append(fd), real_syncfs(fd))[1])  # type: ignore[misc]
    data = os.urandom(10_000)
    files.write_new_file(tmp_path / "a", [data], deferred=True)
    assert fsynced == [] and (tmp_path / "a").read_bytes() == data
    fs.sync()
    fs.sync()
    assert len(calls) == 2
    fs.close()
    fs.close()  # twice is harmless
    with pytest.raises(ValueError, match="closed"):
        fs.sync()


def test_filesystem_sync_failure_is_kept(tmp_path, monkeypatch):
    """A writeback error reported once fails that sync and every later one (what was written
    after it may be lost with no second report)."""
    fs = files.FilesystemSync.open(tmp_path)
    if fs is None:
        pytest.skip("no syncfs here (not Linux 5.8 or later)")
    calls: list[int] = []

    def broken(fd: int) -> int:
        calls.append(fd)
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(files, "_syncfs", broken)
    for _ in range(2):
        with pytest.raises(OSError, match="syncfs: Input/output error"):
            fs.sync()
    assert len(calls) == 1
    fs.close()


def test_filesystem_sync_off_or_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLABEL_SYNCFS", "0")
    assert files.FilesystemSync.open(tmp_path) is None
    monkeypatch.delenv("MEDLABEL_SYNCFS")
    assert files.FilesystemSync.open(tmp_path / "missing") is None
    monkeypatch.setattr(files, "_syncfs", None)
    assert files.FilesystemSync.open(tmp_path) is None
    monkeypatch.setattr(files.platform, "release", lambda: "5.4.0-generic")
    assert files._kernel_reports_syncfs_errors() is False
    monkeypatch.setattr(files.platform, "release", lambda: "6.1.0")
    assert files._kernel_reports_syncfs_errors() is (files.sys.platform.startswith("linux"))
