"""Decode + render a 512x512 CT slice: medlabel.imaging vs SimpleITK reading the same file.

Run: .venv/bin/python bench/bench_imaging.py [repeats]. Prints medians and ratios; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from medlabel.imaging import PRESETS, apply_window, encode, read_dicom, render_frame


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(repeats: int = 20) -> None:
    for name in ("693_UNCR.dcm", "693_J2KR.dcm"):
        path = get_testdata_file(name)
        if path is None:
            print(f"{name}: not installed (pip install pydicom-data)")
            continue
        path = str(path)

        def ours_decode(path: str = path) -> object:
            return read_dicom(path)

        def ours_render(path: str = path) -> object:
            return encode(render_frame(read_dicom(path), window="ct_abdomen"), "png")

        def itk_decode(path: str = path) -> object:
            return sitk.GetArrayFromImage(sitk.ReadImage(path))

        def itk_render(path: str = path) -> object:
            hu = sitk.GetArrayFromImage(sitk.ReadImage(path))[0]
            return encode(apply_window(hu.astype(np.float32), PRESETS["ct_abdomen"]), "png")

        d_ours, d_itk = _median_ms(ours_decode, repeats), _median_ms(itk_decode, repeats)
        r_ours, r_itk = _median_ms(ours_render, repeats), _median_ms(itk_render, repeats)
        print(f"{name}: decode ours {d_ours:.1f} ms, SimpleITK {d_itk:.1f} ms, ratio {d_ours / d_itk:.2f}")
        print(
            f"{name}: decode+window+PNG ours {r_ours:.1f} ms, SimpleITK-read {r_itk:.1f} ms, ratio {r_ours / r_itk:.2f}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
