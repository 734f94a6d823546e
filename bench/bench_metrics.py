"""Benchmark medlabel's mask metrics against SimpleITK, a plain full-volume scipy EDT and MONAI.

Two realistic masks (ellipsoids whose surfaces are perturbed by smooth random noise, a few
voxels apart) of 512 x 512 x 300 voxels, anisotropic spacing. Every method's value is checked
against ours; the table gives the best of ``--repeat`` runs and the ratio to ours.

    .venv/bin/python bench/bench_metrics.py            # 300 x 512 x 512 (z, y, x)
    .venv/bin/python bench/bench_metrics.py --quick    # 40 x 64 x 64, a smoke test

MONAI is timed only if ``monai`` is importable (it needs torch; we do not install it for this).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from medlabel.quality.metrics import dice, hausdorff_distance, iou, surface_dice

SPACING = (1.5, 0.75, 0.75)  # mm, numpy order (z, y, x)
TOLERANCE_MM = 2.0


def make_masks(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping perturbed ellipsoids, like two raters' outlines of one organ."""
    rng = np.random.default_rng(seed)
    coarse = tuple(max(4, n // 8) for n in shape)
    zoom = [n / c for n, c in zip(shape, coarse, strict=True)]

    def noise() -> np.ndarray:
        field = ndimage.gaussian_filter(rng.standard_normal(coarse), 1.5)
        field /= np.abs(field).max()
        return np.asarray(ndimage.zoom(field.astype(np.float32), zoom, order=1))[
            : shape[0], : shape[1], : shape[2]
        ]

    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    masks = []
    for shift, radii in (((0.0, 0.0, 0.0), (0.30, 0.28, 0.25)), ((0.015, -0.01, 0.012), (0.29, 0.29, 0.26))):
        cz, cy, cx = ((0.5 + s) * n for s, n in zip(shift, shape, strict=True))
        rz, ry, rx = (r * n for r, n in zip(radii, shape, strict=True))
        q = ((z - cz) / rz)[:, None, None] ** 2 + ((y - cy) / ry)[None, :, None] ** 2
        q = q + ((x - cx) / rx)[None, None, :] ** 2
        masks.append(np.asarray(q + 0.08 * noise() <= 1.0))
    return masks[0], masks[1]


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def sitk_image(mask: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing([float(s) for s in SPACING[::-1]])  # SimpleITK: x, y, z
    return image


def sitk_dice(a: sitk.Image, b: sitk.Image) -> float:
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(a, b)
    return float(f.GetDiceCoefficient())


def sitk_hausdorff(a: sitk.Image, b: sitk.Image) -> float:
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(a, b)
    return float(f.GetHausdorffDistance())


def full_edt_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The textbook approach: boundaries and distance transforms over the whole volume."""
    structure = ndimage.generate_binary_structure(3, 1)
    ba = a & ~ndimage.binary_erosion(a, structure=structure, border_value=0)
    bb = b & ~ndimage.binary_erosion(b, structure=structure, border_value=0)
    to_b = ndimage.distance_transform_edt(~bb, sampling=SPACING)
    to_a = ndimage.distance_transform_edt(~ba, sampling=SPACING)
    return to_b[ba], to_a[bb]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny volume (40 x 64 x 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per fast method; best is kept")
    parser.add_argument("--skip-full-edt", action="store_true", help="skip the slow full-volume EDT")
    args = parser.parse_args(argv)
    shape = (40, 64, 64) if args.quick else (300, 512, 512)

    t0 = time.perf_counter()
    a, b = make_masks(shape)
    print(f"shape (z, y, x) = {shape}, spacing = {SPACING} mm, |A| = {a.sum()}, |B| = {b.sum()} voxels")
    print(f"masks generated in {time.perf_counter() - t0:.1f} s\n")

    rows: list[tuple[str, str, float, float]] = []  # metric, method, seconds, value
    r = args.repeat
    rows.append(("Dice", "medlabel", *best_of(r, lambda: dice(a, b))))
    rows.append(("IoU", "medlabel", *best_of(r, lambda: iou(a, b))))
    rows.append(("HD", "medlabel", *best_of(r, lambda: hausdorff_distance(a, b, spacing=SPACING))))
    rows.append(
        ("HD95", "medlabel", *best_of(r, lambda: hausdorff_distance(a, b, spacing=SPACING, percentile=95)))
    )
    rows.append(
        (
            f"SurfDice@{TOLERANCE_MM}",
            "medlabel",
            *best_of(r, lambda: surface_dice(a, b, tolerance=TOLERANCE_MM, spacing=SPACING)),
        )
    )

    # SimpleITK: conversion to images is counted (a caller holding numpy arrays pays it).
    rows.append(("Dice", "SimpleITK", *best_of(r, lambda: sitk_dice(sitk_image(a), sitk_image(b)))))
    rows.append(("HD", "SimpleITK", *best_of(1, lambda: sitk_hausdorff(sitk_image(a), sitk_image(b)))))
    rows.append(
        ("Dice", "numpy float sum", *best_of(r, lambda: float(2 * np.sum(a * b) / (a.sum() + b.sum()))))
    )

    if not args.skip_full_edt:
        seconds, (da, db) = best_of(1, lambda: full_edt_distances(a, b))
        rows.append(("HD", "scipy full EDT", seconds, float(max(da.max(), db.max()))))
        rows.append(
            ("HD95", "scipy full EDT", seconds, float(max(np.percentile(da, 95), np.percentile(db, 95))))
        )
        both = np.concatenate([da, db])
        rows.append(
            (f"SurfDice@{TOLERANCE_MM}", "scipy full EDT", seconds, float(np.mean(both <= TOLERANCE_MM)))
        )

    if importlib.util.find_spec("monai") is not None:  # pragma: no cover - not installed here
        from monai.metrics import compute_hausdorff_distance  # type: ignore[import-not-found]

        ta, tb = (np.asarray(m, dtype=np.float32)[None, None] for m in (a, b))  # batch, channel

        def monai_hd(percentile: float | None) -> float:
            result = compute_hausdorff_distance(
                tb, ta, include_background=True, percentile=percentile, spacing=list(SPACING)
            )
            return float(result.item())

        rows.append(("HD", "MONAI", *best_of(1, lambda: monai_hd(None))))
        rows.append(("HD95", "MONAI", *best_of(1, lambda: monai_hd(95))))
    else:
        print("monai not importable: MONAI rows skipped\n")

    ours = {m: (s, v) for m, meth, s, v in rows if meth == "medlabel"}
    print(f"{'metric':<14}{'method':<18}{'time':>11}{'x ours':>9}  {'value':>14}  agrees")
    ok = True
    for metric, method, seconds, value in rows:
        ref_s, ref_v = ours[metric]
        agrees = math.isclose(value, ref_v, rel_tol=1e-6, abs_tol=1e-6)
        ok &= agrees
        print(
            f"{metric:<14}{method:<18}{seconds * 1e3:>9.1f}ms{seconds / ref_s:>9.1f}  {value:>14.6f}  "
            f"{'yes' if agrees else 'NO'}"
        )
    print("\nall values agree" if ok else "\nVALUES DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
