"""``medlabel.pickling.by_fields``: dataclasses pickled as their constructor and field values."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medlabel.imaging.model import ImageInfo, LookupTable, Photometric, SourceUIDs, Window
from medlabel.pickling import by_fields


@by_fields
@dataclass(slots=True)
class _Plain:
    name: str
    path: Path
    values: list[int] = field(default_factory=list)


@by_fields
@dataclass(frozen=True, slots=True)
class _Frozen:
    a: int
    b: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError(f"a must be >= 0, found {self.a}")


@by_fields
@dataclass(frozen=True, slots=True)
class _One:
    only: str


def _old_style(obj: object) -> bytes:
    """The pickle the class gave before ``by_fields`` (its ``__setstate__`` route)."""
    cls = type(obj)
    reduce = cls.__dict__["__reduce__"]
    del cls.__reduce__  # type: ignore[attr-defined]
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        cls.__reduce__ = reduce  # type: ignore[attr-defined]


def _info() -> ImageInfo:
    return ImageInfo(
        "dicom",
        512,
        512,
        photometric=Photometric.MONOCHROME1,
        modality="CT",
        bits_allocated=16,
        bits_stored=12,
        rescale_intercept=-1024.0,
        windows=(Window(40.0, 400.0, "SOFT"),),
        pixel_spacing=(0.7, 0.7),
        image_position=(-180.0, -180.0, 12.5),
        image_orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        uids=SourceUIDs("1.2.3", "1.2.3.4", "1.2.3.4.5", "", "1.2.840.10008.5.1.4.1.1.2", "ANON-1"),
        voi_luts=(LookupTable(0, 8, (0, 5, 10, 200), "curve"),),
        warnings=("a warning",),
        dimension=(("echo", 2.0),),
    )


@pytest.mark.parametrize(
    "obj",
    [
        _Plain("a", Path("/x/y.dcm"), [1, 2]),
        _Frozen(3, ("p", "q")),
        _One("x"),
        _info(),
    ],
    ids=["plain", "frozen", "one-field", "image-info"],
)
def test_round_trip_equal_and_smaller(obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    back = pickle.loads(data)
    assert back == obj and type(back) is type(obj)
    assert len(data) < len(_old_style(obj))
    assert pickle.loads(_old_style(obj)) == obj  # pickles written before still load


def test_loading_runs_the_constructor() -> None:
    """Restored through ``__init__``: a ``__post_init__`` check applies to what is loaded."""
    assert pickle.loads(pickle.dumps(_Frozen(1))) == _Frozen(1)
    reduce = _Frozen(1).__reduce__()
    assert reduce == (_Frozen, (1, ()))
    with pytest.raises(ValueError, match="a must be >= 0, found -1"):
        reduce[0](-1, ())


def test_fields_outside_init_are_refused() -> None:
    @dataclass(slots=True)
    class Late:
        a: int
        b: int = field(init=False, default=0)

    with pytest.raises(TypeError, match=r"Late: fields \['b'\] are not __init__ parameters"):
        by_fields(Late)


def test_upload_journal_entry_round_trip(tmp_path: Path) -> None:
    """The records of an upload session's journal (the commit job reads one per file)."""
    from medlabel.items.ingest import PreparedDicom, _Dicom
    from medlabel.items.upload_sessions import FileResult, _Entry

    dicom = _Dicom("ct1.dcm", tmp_path / "data" / "1-00000001.dcm", _info(), ("reason",), "ANON-1", ["w"])
    entry = _Entry(
        "ct1.dcm",
        FileResult("ct1.dcm", "prepared", sop_instance_uid="2.25.1"),
        PreparedDicom(dicom, "ab" * 32, synced=True, stored=True),
        None,
        "boot",
        7,
    )
    back = pickle.loads(pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == entry
    assert back.prepared.path == tmp_path / "data" / "1-00000001.dcm"
    assert back.prepared.dicom.info.windows[0].explanation == "SOFT"


def test_an_instance_with_a_field_never_set_pickles_the_default_way() -> None:
    """An instance restored from an older version's pickle may lack a field: it still pickles
    (by its state, as before ``by_fields``) and loads with the field still unset."""
    obj = _Plain("a", Path("/x"))
    del obj.values
    back = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    assert back.name == "a" and back.path == Path("/x")
    assert not hasattr(back, "values")
