"""Report outputs read back with the standard library: JSON (``json``), CSV (``csv``) and the
HTML page (``html.parser``)."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import timedelta
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from medlabel.quality.html import fmt, render_html
from medlabel.quality.metrics import Box
from medlabel.quality.records import (
    ErrorRecord,
    GoldOutcome,
    MaskRecord,
    ReportInput,
    ReviewOutcome,
    ShapeRecord,
    Targets,
    WorkRecord,
)
from medlabel.quality.report import CSV_COLUMNS, QualityReport, build_report
from tests.quality.test_report import PERIOD, T0, matrix, noisy_ratings

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "area", "base", "source"}
SVG_EMPTY = {"line", "circle", "rect", "polyline", "path"}


class Collector(HTMLParser):
    """Collects tags and text; checks that every opened element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Collector:
    c = Collector()
    c.feed(page)
    c.close()
    assert c.errors == [] and c.stack == [], (c.errors, c.stack)
    return c


@pytest.fixture(scope="module")
def full() -> tuple[QualityReport, list]:  # type: ignore[type-arg]
    ratings = noisy_ratings(11, ["ann1", "ann2"], 60, step=timedelta(hours=8), agree=0.5)
    sq = np.zeros((16, 16), dtype=bool)
    sq[2:10, 2:10] = True
    masks = [
        MaskRecord("m1", "ann1", "liver", sq, (1.0, 1.0), T0),
        MaskRecord("m1", "ann2", "liver", np.roll(sq, 2, axis=0), (1.0, 1.0), T0),
    ]
    shapes = [
        ShapeRecord("s1", "ann1", "nodule", Box(0, 0, 10, 10), T0),
        ShapeRecord("s1", "ann2", "nodule", Box(1, 1, 10, 10), T0),
    ]
    reviews = [
        ReviewOutcome("i000", "ann1", "rev", "review", "accept", T0),
        ReviewOutcome("i000", "ann1", "aud", "audit", "fail", T0 + timedelta(days=1)),
    ]
    errors = [
        ErrorRecord("i000", "ann1", "aud", "audit", cat, "major", T0 + timedelta(days=d))
        for d, cat in [(1, "omission"), (9, "boundary"), (10, "omission")]
    ]
    work = [WorkRecord(f"i{i:03d}", a, "annotate", 90, 2, T0) for i in range(10) for a in ("ann1", "ann2")]
    gold = [GoldOutcome("g1", "ann1", 1.0, True, T0)]
    records = ReportInput(ratings, shapes, masks, gold, reviews, errors, work)
    return build_report(records, period=PERIOD, targets=Targets(), bootstrap_n=100), ratings


def test_to_dict_round_trips_through_strict_json(full) -> None:  # type: ignore[no-untyped-def]
    rep, _ = full
    d = rep.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert d["period"]["start"] == PERIOD[0].isoformat()
    assert {h["metric"] for h in d["headline"]} >= {"kappa", "dice", "gold_accuracy"}
    assert d["alerts"] and d["alerts"][0]["metric"] == "kappa"
    assert d["confusion"][0]["labels"] and d["pair_kappa"][0]["annotators"] == ["ann1", "ann2"]
    # Undefined numbers become null; the diagonal of the pair matrix is undefined.
    assert d["pair_kappa"][0]["kappa"][0][0] is None


def test_csv_parses_and_carries_the_sklearn_kappa(full) -> None:  # type: ignore[no-untyped-def]
    rep, ratings = full
    rows = list(csv.DictReader(io.StringIO(rep.to_csv())))
    assert rows and tuple(rows[0]) == CSV_COLUMNS
    m = matrix(ratings, ["ann1", "ann2"])
    expected = cohen_kappa_score([r[0] for r in m], [r[1] for r in m])
    (row,) = [
        r
        for r in rows
        if (r["section"], r["subject"], r["metric"]) == ("agreement.classification", "finding", "cohen_kappa")
    ]
    assert float(row["value"]) == pytest.approx(expected, abs=1e-12)
    assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"]) and row["n"] == "60"
    for r in rows:
        assert r["value"] == "" or r["value"] in ("inf", "-inf") or math.isfinite(float(r["value"]))
        int(r["n"])
    sections = {r["section"] for r in rows}
    assert {
        "headline",
        "annotator",
        "reviewer",
        "trend",
        "alert",
        "errors_week",
        "confusion.finding",
    } <= sections
    assert "pair_kappa.finding" in sections
    # The pair kappa row carries the same number as the agreement row.
    (pair,) = [r for r in rows if r["section"] == "pair_kappa.finding"]
    assert float(pair["value"]) == pytest.approx(expected, abs=1e-12)


def test_html_is_self_contained_and_has_the_charts(full) -> None:  # type: ignore[no-untyped-def]
    rep, _ = full
    page = render_html(rep, title="Week <48> & co")
    c = parse(page)
    lowered = page.lower()
    for external in ("http:", "https:", "src=", "href=", "url(", "@import", "<script", "<link"):
        assert external not in lowered
    assert "Week &lt;48&gt; &amp; co" in page
    svgs = [v for k, v in c.attrs if k == "aria-label"]
    assert {"kappa trend", "dice trend", "errors per week", "items/h"} <= set(svgs)
    assert c.tags.count("svg") == 4
    assert c.tags.count("table") >= 6  # alerts, agreement, confusion, pair kappa, annotators, reviewers
    text = " ".join(c.text)
    assert "target 0.8" in text and "not met" in text
    assert "—" in text  # an undefined value (pair-kappa diagonal)
    assert "ann1" in text and "omission" in text
    # The kappa trend has the target as a dashed line.
    assert ("class", "target") in c.attrs


def test_empty_report_renders_no_data_sections() -> None:
    rep = build_report(ReportInput(), period=PERIOD, targets=Targets())
    page = render_html(rep, title="Empty")
    c = parse(page)
    text = " ".join(c.text)
    assert "svg" not in c.tags
    assert text.count("No data") >= 5 and "No alerts" in text
    assert text.count("—") >= len(rep.headline)  # every headline value is undefined
    assert rep.to_csv().splitlines()[0] == ",".join(CSV_COLUMNS)
    json.dumps(rep.to_dict(), allow_nan=False)


def test_fmt() -> None:
    assert fmt(math.nan) == "—" and fmt(None) == "—" and fmt(math.inf) == "∞" and fmt(0.12345) == "0.123"


def test_names_are_escaped_in_html() -> None:
    evil = '<script>alert("x")</script>'
    ratings = noisy_ratings(12, [evil, "b&c"], 12, question="q<1>")
    errors = [ErrorRecord("i1", evil, "rev", "review", "cat<x>", "minor", T0)]
    work = [WorkRecord("i1", evil, "annotate", 60, 1, T0)]
    page = render_html(
        build_report(
            ReportInput(ratings=ratings, errors=errors, work=work),
            period=PERIOD,
            targets=Targets(),
            bootstrap_n=0,
        ),
        title="t",
    )
    parse(page)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "q&lt;1&gt;" in page and "b&amp;c" in page and "cat&lt;x&gt;" in page
