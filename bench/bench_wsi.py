"""Whole-slide viewport: 20 Deep Zoom tiles (256 px) of a generated 50 000 x 50 000 pyramidal
TIFF, cold and warm: medlabel over HTTP vs OpenSlide's DeepZoomGenerator in-process.

The slide is written tile by tile with tifffile (JPEG tiles, a pyramid of SubIFDs down to
< 512 px) without ever holding a level in memory. medlabel serves
``/api/v1/items/{id}/tiles/{level}/{col}_{row}.jpeg`` from ``medlabel serve`` (one server process,
and again with ``--workers 2``; 20 concurrent clients, the client of ``bench_render.py``); the
peer is ``openslide.deepzoom.DeepZoomGenerator(tile_size=254, overlap=1).get_tile`` plus a JPEG
encode (quality 80), called from 20 threads, no HTTP; for a like-for-like figure the same tiles
also go through medlabel's core (``open_slide`` + ``render_tile``) in-process. "Cold" = the first
request for those tiles after the server started (the slide is opened then; the OS page cache
may still hold the file); "warm" = the same viewport again.

Run: .venv/bin/python bench/bench_wsi.py [--quick] [--size N] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import io
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile
from bench_render import hammer, prepare_medlabel, start_server  # type: ignore[import-not-found]

TILE = 256


def _tiles(width: int, height: int, level: int) -> Iterator[np.ndarray]:
    """Tiles of one level, row by row: a few textured patterns so JPEG has work to do."""
    rng = np.random.default_rng(level)
    patterns = [
        np.clip(rng.normal(200 - 25 * i, 18, (TILE, TILE, 3)) * np.array([1.0, 0.75, 0.9]), 0, 255).astype(
            np.uint8
        )
        for i in range(6)
    ]
    for r in range(math.ceil(height / TILE)):
        for c in range(math.ceil(width / TILE)):
            yield patterns[(r * 7 + c * 3) % len(patterns)]


def write_slide(path: Path, size: int) -> list[tuple[int, int]]:
    levels = [(size, size)]
    while max(levels[-1]) > 512:
        w, h = levels[-1]
        levels.append((math.ceil(w / 2), math.ceil(h / 2)))
    opts = {
        "tile": (TILE, TILE),
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": 85},
    }
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        w, h = levels[0]
        tif.write(_tiles(w, h, 0), shape=(h, w, 3), dtype=np.uint8, subifds=len(levels) - 1, **opts)
        for i, (w, h) in enumerate(levels[1:], start=1):
            tif.write(_tiles(w, h, i), shape=(h, w, 3), dtype=np.uint8, subfiletype=1, **opts)
    return levels


def viewport(size: int) -> tuple[int, list[tuple[int, int]]]:
    """Full-resolution DZI level and a 5 x 4 block of tiles at the slide's centre."""
    top = math.ceil(math.log2(size))
    c0 = size // 2 // 254 - 2
    r0 = size // 2 // 254 - 2
    return top, [(c0 + c, r0 + r) for r in range(4) for c in range(5)]


def openslide_viewport(path: Path, level: int, tiles: list[tuple[int, int]]) -> tuple[float, float] | None:
    try:
        import openslide
        from openslide.deepzoom import DeepZoomGenerator
    except ImportError:
        return None
    out = []
    slide = openslide.OpenSlide(str(path))
    dz = DeepZoomGenerator(slide, tile_size=254, overlap=1, limit_bounds=False)

    def one(t: tuple[int, int]) -> None:
        buf = io.BytesIO()
        dz.get_tile(level, t).save(buf, "JPEG", quality=80)

    for _ in range(2):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(20) as pool:
            list(pool.map(one, tiles))
        out.append((time.perf_counter() - t0) * 1000)
    slide.close()
    return out[0], out[1]


def medlabel_core_viewport(path: Path, level: int, tiles: list[tuple[int, int]]) -> tuple[float, float]:
    """The same tiles through medlabel's core (open_slide + render_tile), in-process, no cache."""
    from medlabel.imaging import DeepZoom, open_slide
    from medlabel.imaging.dzi import render_tile

    out = []
    with open_slide(path) as slide:
        dz = DeepZoom(slide.info.width, slide.info.height, tile_size=254, overlap=1, format="jpeg")
        for _ in range(2):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(20) as pool:
                list(pool.map(lambda t: render_tile(slide, dz, level, t[0], t[1], quality=80), tiles))
            out.append((time.perf_counter() - t0) * 1000)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 10 000 px slide instead of 50 000")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--workers", default="1,2", help="server process counts to measure (default 1,2)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    size = args.size or (10_000 if args.quick else 50_000)
    tmp = Path(tempfile.mkdtemp(prefix="wsi-bench-"))
    try:
        path = tmp / "slide.tif"
        t0 = time.perf_counter()
        levels = write_slide(path, size)
        print(
            f"wrote {size}x{size} pyramid ({len(levels)} levels, {path.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        top, tiles = viewport(size)
        t0 = time.perf_counter()
        prepared = prepare_medlabel([path])
        print(f"medlabel import of the slide: {time.perf_counter() - t0:.1f} s")
        http: dict[int, tuple[float, float]] = {}
        try:
            for workers in counts:
                server = start_server(prepared, workers)
                try:
                    urls = [f"/api/v1/items/{server.item_id}/tiles/{top}/{c}_{r}.jpeg" for c, r in tiles]
                    c50, c95, crps = hammer(server.base, urls, server.headers)
                    cold = len(urls) / crps * 1000  # the viewport: first request sent to last answer
                    w50, w95, wrps = hammer(server.base, urls, server.headers)
                    warm = len(urls) / wrps * 1000
                finally:
                    server.stop()
                http[workers] = (cold, warm)
                procs = f"{workers} process{'es' if workers > 1 else ''}"
                print(
                    f"medlabel viewport (20 tiles, HTTP, {procs}): cold {cold:.0f} ms (p95 tile {c95:.0f} ms), "
                    f"warm {warm:.0f} ms (p95 tile {w95:.0f} ms)",
                    flush=True,
                )
        finally:
            prepared.cleanup()
        core = medlabel_core_viewport(path, top, tiles)
        print(
            f"medlabel core (in-process, no HTTP, no cache): first {core[0]:.0f} ms, again {core[1]:.0f} ms"
        )
        peer = openslide_viewport(path, top, tiles)
        if peer is None:
            print("OpenSlide: not installed (pip install openslide-python openslide-bin); no ratio")
            return
        print(
            f"OpenSlide DeepZoomGenerator (in-process, no HTTP): cold {peer[0]:.0f} ms, warm {peer[1]:.0f} ms"
        )
        for workers, (cold, warm) in http.items():
            print(
                f"ratio medlabel HTTP ({workers} process{'es' if workers > 1 else ''})/OpenSlide: "
                f"cold {cold / peer[0]:.2f}, warm {warm / peer[1]:.2f} (lower is faster)"
            )
        print(
            f"ratio medlabel core/OpenSlide (both in-process): first {core[0] / peer[0]:.2f}, again {core[1] / peer[1]:.2f}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
