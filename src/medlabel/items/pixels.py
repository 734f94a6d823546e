"""Serving pixels: decoded-image cache, rendering, raw values, Deep Zoom tiles, batched audit.

* Decoded images and volumes live in a bounded LRU (``MEDLABEL_PIXEL_CACHE_MB``, default 1024 MiB,
  counted in array bytes); encoded responses (PNG/JPEG/WebP frames and DZI tiles) in a second
  one (``MEDLABEL_RESPONSE_CACHE_MB``, default 256 MiB); open slides in a small LRU of handles.
* Every response has a strong ETag computed from the item's immutable content key and the
  request parameters, so ``If-None-Match`` is answered (304) without decoding anything.
* Pixel reads are audited as ``image.read``, **batched**: at most one record per (user, item) per
  ``AUDIT_BATCH_SECONDS`` (60 s) per server process; the record carries how many reads the
  previous window of that pair saw.
* Rendering never holds a database transaction: pixel routes check access with read-only
  sessions (``medlabel.storage.db.make_read_sessionmaker``: on SQLite no write turn), or from
  the in-process caches alone, and the few lookups made on a cache miss use their own short
  sessions. The item rows pixel requests need are cached for a couple of seconds like sessions
  and memberships (``medlabel.storage.cache``); any change to an item in this process drops it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from medlabel import clock
from medlabel.accounts.service import Actor
from medlabel.audit import service as audit
from medlabel.audit.events import AuditAction, AuditEventData
from medlabel.errors import InvalidInput, NotFound, Quarantined
from medlabel.imaging import (
    DeepZoom,
    Image,
    Slide,
    Volume,
    Window,
    extract_plane,
    open_slide,
    read_dicom,
    read_dicom_info,
    read_nifti,
    read_raster,
)
from medlabel.imaging.dicom_wsi import DicomSlide, open_dicom_slide
from medlabel.imaging.dzi import render_tile
from medlabel.imaging.mpr import plane_count
from medlabel.imaging.multiframe import read_multiframe_volumes
from medlabel.imaging.render import (
    PRESETS,
    ImageFormat,
    apply_window,
    auto_window,
    encode,
    raw_export,
    render_frame,
)
from medlabel.imaging.series import SeriesStack, SliceHeader, load_volume
from medlabel.items.models import Instance, Item
from medlabel.security.rbac import Permission
from medlabel.storage.blobs import BlobStore, LocalBlobStore
from medlabel.storage.cache import ALL, RowCache
from medlabel.storage.db import session_scope
from medlabel.storage.models import Project

__all__ = [
    "AUDIT_BATCH_SECONDS",
    "RenderParams",
    "PixelResponse",
    "check_viewable",
    "etag_for",
    "rendered_frame",
    "raw_frame",
    "dzi_descriptor",
    "dzi_tile",
    "note_read",
    "read_event",
    "record_read",
    "media_type",
    "cached_item",
    "load_item",
    "fetch_item",
    "cached_body",
    "warm_codecs",
    "cache_stats",
    "clear_caches",
]

log = logging.getLogger(__name__)

AUDIT_BATCH_SECONDS = 60
_VERSION = "2"  # 2: Presentation LUT Shape INVERSE rendered; 4D NIfTI items serve their volume
TILE_SIZE, TILE_OVERLAP = 254, 1


def _env_mb(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, "") or default)) << 20
    except ValueError:
        return default << 20


class _LRU:
    """A thread-safe LRU bounded by the summed ``size`` of its values."""

    def __init__(self, max_bytes: int, on_evict: Callable[[Any], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._on_evict = on_evict
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> Any | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        evicted = []
        with self._lock:
            if size > self.max_bytes:
                return
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
                if old[0] is not value:
                    evicted.append(old[0])
            self._data[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._data:
                _k, (v, s) = self._data.popitem(last=False)
                self._bytes -= s
                evicted.append(v)
        if self._on_evict:
            for v in evicted:
                self._on_evict(v)

    def clear(self) -> None:
        with self._lock:
            values = [v for v, _ in self._data.values()]
            self._data.clear()
            self._bytes = 0
        if self._on_evict:
            for v in values:
                self._on_evict(v)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)


def _close(slide: Any) -> None:
    try:
        slide.close()
    except Exception:  # noqa: BLE001  (closing a cached handle must never fail a request)
        log.warning("closing a cached slide failed", exc_info=True)


_decoded = _LRU(_env_mb("MEDLABEL_PIXEL_CACHE_MB", 1024))
_encoded = _LRU(_env_mb("MEDLABEL_RESPONSE_CACHE_MB", 256))
_slides = _LRU(32, on_evict=_close)  # counted in handles (size 1 each)
_load_locks: dict[Any, threading.Lock] = {}
_load_guard = threading.Lock()


def warm_codecs() -> None:
    """Load what the first render or tile would otherwise load on a user's time: the PNG/JPEG
    writers, the lookup-table windowing and the JPEG decoder used for slide tiles."""
    import imagecodecs

    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    encode(rgb, "jpeg")
    encode(rgb, "webp")
    encode(apply_window(np.zeros((64, 64), dtype=np.int16), Window(0.0, 10.0)), "png")
    imagecodecs.jpeg8_decode(imagecodecs.jpeg8_encode(rgb))


def cache_stats() -> dict[str, int]:
    return {
        "decoded_entries": len(_decoded),
        "decoded_bytes": _decoded.nbytes,
        "decoded_hits": _decoded.hits,
        "decoded_misses": _decoded.misses,
        "encoded_entries": len(_encoded),
        "encoded_bytes": _encoded.nbytes,
        "encoded_hits": _encoded.hits,
    }


def clear_caches() -> None:
    _decoded.clear()
    _encoded.clear()
    _slides.clear()
    _items_cache.clear_all()
    with _audit_lock:
        _audit_windows.clear()


# ---------------------------------------------------------------- access

_items_cache = RowCache("items", {Item: lambda item: [item.id], Project: lambda _p: ALL})


def cached_item(engine: Engine | None, item_id: int) -> Item | None:
    """An item row from the in-process cache (no database), or None. The object is detached and
    shared: read it, never change it."""
    found: Item | None = _items_cache.get(engine, item_id)
    return found


def load_item(session: Session, item_id: int) -> Item | None:
    """The item (cached, else read through ``session`` and cached when committed state)."""
    found: Item | None = _items_cache.get_in(session, item_id)
    return found if found is not None else fetch_item(session, item_id)


def fetch_item(session: Session, item_id: int) -> Item | None:
    """The item read through ``session`` (and cached when committed state)."""
    found = session.get(Item, item_id)
    if found is not None:
        _items_cache.put(session, item_id, found)
    return found


def check_viewable(item: Item, permissions: frozenset[Permission]) -> None:
    """Quarantined and rejected items are shown only to those who decide on them (item.import)."""
    if item.status != "ready" and Permission.ITEM_IMPORT not in permissions:
        raise Quarantined(
            f"item {item.id} is {item.status}: a manager must clear it first", detail={"status": item.status}
        )


# ---------------------------------------------------------------- loading


def _blob_path(blobs: BlobStore, digest: str, home: Path) -> Path:
    """A local path to a blob (slides need random access through tifffile)."""
    if isinstance(blobs, LocalBlobStore):
        p = blobs.root / digest[:2] / digest[2:4] / digest
        if p.exists():
            return p
        raise NotFound(f"blob {digest} is not in the store")
    cache = home / "cache" / "blobs" / digest
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        with blobs.open(digest) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, cache)
    return cache


@dataclass(frozen=True)
class _Loaded:
    image: Image | None
    volume: Volume | None
    default_window: Window | None


def _content_key(item: Item) -> tuple[str, int, str]:
    return (item.dedup_key, item.id, item.blob_sha256 or "")


def _instances(sessions: sessionmaker[Session], item: Item) -> list[Instance]:
    with sessions() as s:
        stmt = select(Instance).where(Instance.item_id == item.id).order_by(Instance.slice_index)
        return list(s.scalars(stmt))


def _load(sessions: sessionmaker[Session], blobs: BlobStore, home: Path, item: Item) -> _Loaded:
    key = (str(home), _content_key(item))
    found = _decoded.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    with _load_guard:
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:  # one decode per item at a time; the others wait and hit the cache
        found = _decoded.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        loaded = _decode(sessions, blobs, home, item)
        arr = loaded.volume.array if loaded.volume is not None else loaded.image.pixels  # type: ignore[union-attr]
        _decoded.put(key, loaded, int(arr.nbytes))
    with _load_guard:
        _load_locks.pop(key, None)
    return loaded


def _decode(sessions: sessionmaker[Session], blobs: BlobStore, home: Path, item: Item) -> _Loaded:
    if item.kind == "slide":
        raise InvalidInput(f"item {item.id} is a slide: use its /dzi and /tiles routes")
    if item.source_format == "dicom":
        insts = _instances(sessions, item)
        if not insts:
            raise NotFound(f"item {item.id} has no stored instances")
        if item.kind == "image":
            return _Loaded(read_dicom(blobs.get(insts[0].blob_sha256)), None, None)
        if (item.meta or {}).get("multiframe"):  # one enhanced multi-frame file, one volume
            (vol,) = read_multiframe_volumes(str(_blob_path(blobs, insts[0].blob_sha256, home)))
            return _Loaded(None, vol, vol.windows[0] if vol.windows else auto_window(vol.array))
        paths = [str(_blob_path(blobs, i.blob_sha256, home)) for i in insts]
        headers = tuple(SliceHeader(p, read_dicom_info(p)) for p in paths)
        spacing = float((item.meta or {}).get("spacing", [1.0])[0] or 1.0)
        stack = SeriesStack(
            series_instance_uid=item.series_uid,
            slices=headers,
            positions=tuple(float(i.position or 0.0) for i in insts),
            spacing=spacing,
        )
        vol = load_volume(stack)
        return _Loaded(None, vol, vol.windows[0] if vol.windows else auto_window(vol.array))
    if item.blob_sha256 is None:
        raise NotFound(f"item {item.id} has no stored file")
    if item.source_format == "nifti":
        vol = read_nifti(blobs.get(item.blob_sha256), volume_index=int((item.meta or {}).get("volume_index", 0)))
        return _Loaded(None, vol, auto_window(vol.array))
    return _Loaded(read_raster(blobs.get(item.blob_sha256)), None, None)


def _slide_blobs(item: Item) -> list[str]:
    """The blobs a slide item opens from: its one TIFF/SVS, or its DICOM-WSI VOLUME instances in
    level order (kept in ``meta["instance_blobs"]`` by ingest, so no database read is needed)."""
    if item.kind == "slide" and item.source_format == "dicom":
        digests = (item.meta or {}).get("instance_blobs") or []
        if isinstance(digests, list) and digests and all(isinstance(d, str) for d in digests):
            return list(digests)
        raise NotFound(f"slide item {item.id} lists no DICOM instances (meta.instance_blobs)")
    if item.kind != "slide" or not item.blob_sha256:
        raise InvalidInput(f"item {item.id} is a {item.kind}, not a slide: DZI serves slides only")
    return [item.blob_sha256]


def _slide(blobs: BlobStore, home: Path, item: Item) -> Slide | DicomSlide:
    """An open slide from the handle cache: TIFF/SVS with ``open_slide``, DICOM-WSI with
    ``open_dicom_slide`` over the instances' local blob paths (both read lazily)."""
    digests = _slide_blobs(item)
    key = (str(home), *digests)
    found = _slides.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    with _load_guard:
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:  # one open per slide: a second handle would replace (and close) the first
        found = _slides.get(key)
        if found is None:
            paths = [_blob_path(blobs, d, home) for d in digests]
            found = open_dicom_slide(paths) if item.source_format == "dicom" else open_slide(paths[0])
            _slides.put(key, found, 1)
    with _load_guard:
        _load_locks.pop(key, None)
    return found  # type: ignore[no-any-return]


# ---------------------------------------------------------------- parameters, ETags


@dataclass(frozen=True)
class RenderParams:
    frame: int = 0
    window: float | None = None
    level: float | None = None
    preset: str | None = None
    format: ImageFormat = "png"
    quality: int = 90
    size: int | None = None
    plane: str = "axial"

    def validate(self) -> None:
        if self.frame < 0:
            raise InvalidInput(f"frame must be >= 0, found {self.frame}")
        if (self.window is None) != (self.level is None):
            raise InvalidInput("give both window and level, or neither", detail={"field": "window"})
        if self.window is not None and self.window <= 0:
            raise InvalidInput(f"window (width) must be > 0, found {self.window}", detail={"field": "window"})
        if self.preset is not None and self.preset.lower() not in PRESETS:
            raise InvalidInput(
                f"unknown preset {self.preset!r}; known: {', '.join(sorted(PRESETS))}",
                detail={"field": "preset"},
            )
        if self.format not in ("png", "jpeg", "webp"):
            raise InvalidInput(
                f"format must be png, jpeg or webp, found {self.format!r}", detail={"field": "format"}
            )
        if not 1 <= self.quality <= 100:
            raise InvalidInput(f"quality must be 1..100, found {self.quality}", detail={"field": "quality"})
        if self.size is not None and not 1 <= self.size <= 8192:
            raise InvalidInput(f"size must be 1..8192, found {self.size}", detail={"field": "size"})
        if self.plane not in ("axial", "coronal", "sagittal"):
            raise InvalidInput(
                f"plane must be axial, coronal or sagittal, found {self.plane!r}", detail={"field": "plane"}
            )

    def window_obj(self) -> Window | None:
        if self.window is not None and self.level is not None:
            return Window(center=float(self.level), width=float(self.window), explanation="request")
        if self.preset:
            return PRESETS[self.preset.lower()]
        return None


def etag_for(item: Item, what: str, params: object) -> str:
    """A strong ETag: item content is immutable (content-addressed blobs), so the item's content
    key plus the request parameters determine the bytes."""
    raw = f"{_VERSION}|{item.id}|{item.dedup_key}|{item.blob_sha256}|{what}|{params!r}".encode()
    return '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@dataclass(frozen=True)
class PixelResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]


# ---------------------------------------------------------------- frames


def _plane_values(
    loaded: _Loaded, p: RenderParams, *, isotropic: bool = True
) -> tuple[npt.NDArray[Any], tuple[float, float] | None]:
    assert loaded.volume is not None
    vol = loaded.volume
    count = plane_count(vol, p.plane)
    if p.frame >= count:
        raise NotFound(f"{p.plane} plane {p.frame} outside 0..{count - 1}")
    plane = extract_plane(vol, p.plane, p.frame, isotropic=isotropic)
    return plane.pixels, plane.spacing


_MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def media_type(p: RenderParams) -> str:
    return _MEDIA[p.format]


def cached_body(home: Path, etag: str) -> bytes | None:
    """An encoded frame or tile from the response cache (no decoding, no database), or None."""
    found: bytes | None = _encoded.get((str(home), etag))
    return found


def rendered_frame(
    sessions: sessionmaker[Session], blobs: BlobStore, home: Path, item: Item, p: RenderParams, etag: str
) -> PixelResponse:
    p.validate()
    media = _MEDIA[p.format]
    ckey = (str(home), etag)
    cached = _encoded.get(ckey)
    if cached is not None:
        return PixelResponse(cached, media, {})
    if item.kind == "slide":
        slide = _slide(blobs, home, item)
        if p.frame != 0:
            raise InvalidInput(f"a slide has one frame (0), found {p.frame}")
        thumb = np.asarray(slide.thumbnail(p.size or 1024))
        body = encode(
            thumb if thumb.dtype == np.uint8 else thumb.astype(np.uint8), p.format, quality=p.quality
        )
    else:
        loaded = _load(sessions, blobs, home, item)
        w = p.window_obj()
        if loaded.image is not None:
            if p.plane != "axial":
                raise InvalidInput(
                    f"item {item.id} is a 2D image: only plane=axial", detail={"field": "plane"}
                )
            if p.frame >= loaded.image.info.frames:
                raise NotFound(f"frame {p.frame} outside 0..{loaded.image.info.frames - 1}")
            pixels = render_frame(loaded.image, frame=p.frame, window=w)
        else:
            values, _ = _plane_values(loaded, p)
            pixels = apply_window(values, w or loaded.default_window or auto_window(values))
        body = encode(pixels, p.format, quality=p.quality, size=p.size)
    _encoded.put(ckey, body, len(body))
    return PixelResponse(body, media, {})


def raw_frame(
    sessions: sessionmaker[Session], blobs: BlobStore, home: Path, item: Item, p: RenderParams
) -> PixelResponse:
    """Modality values (rescaled) of one frame or plane, never interpolated: the voxels as stored
    (rendered planes are resampled to square pixels, raw ones are not — ``X-Spacing`` gives the
    row and column spacing). Little-endian int16 when the values are integral and fit, else
    float32; ``X-Dtype``, ``X-Shape`` (rows,columns), ``X-Spacing``."""
    p.validate()
    if item.kind == "slide":
        raise InvalidInput(f"item {item.id} is a slide: use its /tiles route")
    loaded = _load(sessions, blobs, home, item)
    spacing: tuple[float, float] | None
    if loaded.image is not None:
        if p.plane != "axial":
            raise InvalidInput(f"item {item.id} is a 2D image: only plane=axial", detail={"field": "plane"})
        if p.frame >= loaded.image.info.frames:
            raise NotFound(f"frame {p.frame} outside 0..{loaded.image.info.frames - 1}")
        values = loaded.image.modality_pixels(p.frame)
        spacing = loaded.image.info.pixel_spacing
    else:
        values, spacing = _plane_values(loaded, p, isotropic=False)
    integral = values.dtype.kind in "iu" or bool(np.all(np.mod(values, 1) == 0))
    fits = values.size == 0 or (float(values.min()) >= -32768 and float(values.max()) <= 32767)
    out = raw_export(np.asarray(values), "int16" if integral and fits else "float32")
    headers = {
        "X-Dtype": out.dtype,
        "X-Shape": ",".join(str(s) for s in out.shape),
        "X-Rescaled": "1",
    }
    if spacing:
        headers["X-Spacing"] = ",".join(f"{s:g}" for s in spacing)
    if loaded.image is not None and loaded.image.info.inverted:
        headers["X-Invert"] = "1"  # display inverts the grey scale (MONOCHROME1 / INVERSE)
    return PixelResponse(out.data, "application/octet-stream", headers)


# ---------------------------------------------------------------- Deep Zoom


def _deep_zoom(item: Item) -> DeepZoom:
    return DeepZoom(item.width, item.height, tile_size=TILE_SIZE, overlap=TILE_OVERLAP, format="jpeg")


def dzi_descriptor(item: Item) -> str:
    if item.kind != "slide":
        raise InvalidInput(f"item {item.id} is a {item.kind}, not a slide: DZI serves slides only")
    return _deep_zoom(item).descriptor()


def dzi_tile(
    blobs: BlobStore, home: Path, item: Item, level: int, col: int, row: int, etag: str
) -> PixelResponse:
    ckey = (str(home), etag)
    cached = _encoded.get(ckey)
    if cached is not None:
        return PixelResponse(cached, "image/jpeg", {})
    slide = _slide(blobs, home, item)
    dz = _deep_zoom(item)
    body = render_tile(slide, dz, level, col, row, quality=80)
    _encoded.put(ckey, body, len(body))
    return PixelResponse(body, "image/jpeg", {})


# ---------------------------------------------------------------- batched audit

_audit_lock = threading.Lock()
_audit_windows: dict[tuple[str, int | None, str, int], tuple[datetime, int]] = {}


def note_read(session: Session, actor: Actor, item: Item, what: str, *, home: Path) -> bool:
    """Count a pixel read; record an ``image.read`` audit event when the (user, item) pair has none
    in the last ``AUDIT_BATCH_SECONDS``. Returns True when a record was written."""
    event = read_event(actor, item, what, home=home)
    if event is None:
        return False
    audit.record(session, event)
    return True


def record_read(sessions: sessionmaker[Session], event: AuditEventData) -> None:
    """Record a :func:`read_event` in its own short transaction."""
    with session_scope(sessions) as s:
        audit.record(s, event)


def read_event(actor: Actor, item: Item, what: str, *, home: Path) -> AuditEventData | None:
    """Count a pixel read in memory; the ``image.read`` event to record when the (user, item) pair
    has none in the last ``AUDIT_BATCH_SECONDS``, else None (see :func:`note_read`)."""
    key = (str(home), actor.user_id, actor.username, item.id)
    now = clock.now()
    with _audit_lock:
        found = _audit_windows.get(key)
        if found is not None and now - found[0] < timedelta(seconds=AUDIT_BATCH_SECONDS):
            _audit_windows[key] = (found[0], found[1] + 1)
            return None
        previous = found[1] if found is not None else 0
        _audit_windows[key] = (now, 1)
        if len(_audit_windows) > 100_000:  # forget the oldest windows
            for k in sorted(_audit_windows, key=lambda k: _audit_windows[k][0])[:50_000]:
                _audit_windows.pop(k, None)
    return actor.event(
        AuditAction.IMAGE_READ,
        object_type="item",
        object_id=str(item.id),
        project_id=item.project_id,
        detail={"first": what, "batch_seconds": AUDIT_BATCH_SECONDS, "previous_window_reads": previous},
    )
