"""Burned-in annotation: held for a human, never silently admitted."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medlabel.deid import burned_in_reasons, deidentify_dataset

from .deid_factories import config, context, minimal


def _file(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return pydicom.dcmread(path)


def test_ultrasound_without_burned_in_attribute_is_quarantined() -> None:
    ds = _file("US1_UNCR.dcm")
    assert "BurnedInAnnotation" not in ds
    result = deidentify_dataset(ds, config(), context())
    assert result.quarantined
    assert any("US" in r and "(0008,0060)" in r for r in result.reasons)
    assert result.dataset.PatientIdentityRemoved == "YES"  # header still cleaned


def test_secondary_capture_is_quarantined() -> None:
    ds = _file("SC_rgb.dcm")
    result = deidentify_dataset(ds, config(), context())
    assert result.quarantined
    assert any("1.2.840.10008.5.1.4.1.1.7" in r for r in result.reasons)


def test_explicit_no_admits_and_yes_quarantines() -> None:
    ds = _file("US1_UNCR.dcm")
    ds.BurnedInAnnotation = "NO"
    assert burned_in_reasons(ds) == []
    assert not deidentify_dataset(ds, config(), context()).quarantined
    ct = _file("CT_small.dcm")
    assert not deidentify_dataset(ct, config(), context()).quarantined
    ct.BurnedInAnnotation = "YES"
    result = deidentify_dataset(ct, config(), context())
    assert result.quarantined and "(0028,0301) is YES" in result.reasons[0]


def test_no_pixels_no_quarantine_and_switch() -> None:
    ds = minimal()
    ds.Modality = "US"
    assert burned_in_reasons(ds) == []
    us = _file("US1_UNCR.dcm")
    assert not deidentify_dataset(us, config(quarantine_risky_modalities=False), context()).quarantined
