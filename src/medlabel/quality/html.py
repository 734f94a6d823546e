"""Render a :class:`~medlabel.quality.report.QualityReport` as one self-contained HTML page.

Inline CSS and inline SVG charts drawn here (no plotting library, no script, no external URL),
so the page can be e-mailed, archived or served as is. Undefined values show as "—".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape

from medlabel.quality.report import QualityReport
from medlabel.quality.results import AnnotatorStats, ConfusionMatrix, PairMatrix, TrendPoint

__all__ = ["confusion_table", "fmt", "hbars", "line_chart", "pair_table", "render_html", "stacked_bars"]

_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac")  # fmt: skip
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:1.5em;margin-bottom:0}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
.period{color:#666;margin-top:4px}.nodata{color:#888;font-style:italic}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}
.card .v{font-size:1.6em;font-weight:600}.card .s{color:#666;font-size:.85em}
.ok{border-left:6px solid #59a14f}.bad{border-left:6px solid #e15759}.na{border-left:6px solid #bbb}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}
.alert td{background:#fdecea}svg{display:block;margin:8px 0}
svg text{font-size:11px;fill:#444}
caption{caption-side:top;text-align:left;white-space:nowrap;color:#444;padding:4px 0}
"""


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for display: ``nan``/``None`` → "—", infinity → "∞"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:.1f} %"


def _nodata(what: str = "No data for this period.") -> str:
    return f'<p class="nodata">{escape(what)}</p>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1, cls: str = "") -> str:
    """``rows`` are already-escaped cell contents; the first ``left`` columns align left."""
    ths = "".join(
        f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>" for i, h in enumerate(head)
    )
    body = []
    for r in rows:
        tds = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _date(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


# -------------------------------------------------------------------------------------------- charts


def line_chart(points: Sequence[TrendPoint], target: float | None, *, label: str) -> str:
    """An SVG line of ``value`` by window end, with the target as a dashed line."""
    pts = [p for p in points if math.isfinite(p.value)]
    if not pts:
        return _nodata(f"No {label} windows with data.")
    w, h, ml, mr, mt, mb = 640, 220, 44, 16, 12, 34
    t0 = min(p.window_end for p in points).timestamp()
    t1 = max(p.window_end for p in points).timestamp()
    lo = min([0.0, *(p.value for p in pts), *([target] if target is not None else [])])
    hi = max([1.0, *(p.value for p in pts)])

    def x(t: datetime) -> float:
        return ml + (w - ml - mr) * ((t.timestamp() - t0) / (t1 - t0) if t1 > t0 else 0.5)

    def y(v: float) -> float:
        return mt + (h - mt - mb) * (1.0 - (v - lo) / (hi - lo))

    parts = [f'<svg class="chart" width="{w}" height="{h}" role="img" aria-label="{escape(label)} trend">']
    for v in _ticks(lo, hi):
        parts.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{ml - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    if target is not None:
        parts.append(
            f'<line class="target" x1="{ml}" x2="{w - mr}" y1="{y(target):.1f}" y2="{y(target):.1f}" '
            f'stroke="#e15759" stroke-dasharray="6 4"/>'
            f'<text x="{w - mr}" y="{y(target) - 4:.1f}" text-anchor="end">target {target:g}</text>'
        )
    # Break the line where a window has no value.
    segments: list[list[TrendPoint]] = [[]]
    for p in points:
        if math.isfinite(p.value):
            segments[-1].append(p)
        elif segments[-1]:
            segments.append([])
    for seg in segments:
        if len(seg) > 1:
            d = " ".join(f"{x(p.window_end):.1f},{y(p.value):.1f}" for p in seg)
            parts.append(f'<polyline points="{d}" fill="none" stroke="#4e79a7" stroke-width="2"/>')
    for p in pts:
        tip = f"{_date(p.window_start)} – {_date(p.window_end)}: {fmt(p.value)} (n={p.n})"
        parts.append(
            f'<circle cx="{x(p.window_end):.1f}" cy="{y(p.value):.1f}" r="3" fill="#4e79a7">'
            f"<title>{escape(tip)}</title></circle>"
        )
    parts.append(f'<text x="{ml}" y="{h - 8}">{escape(_date(points[0].window_end))}</text>')
    parts.append(
        f'<text x="{w - mr}" y="{h - 8}" text-anchor="end">{escape(_date(points[-1].window_end))}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(lo: float, hi: float) -> list[float]:
    step = 0.2 if hi - lo <= 1.2 else 0.5
    v = math.floor(lo / step) * step
    out = []
    while v <= hi + 1e-9:
        if v >= lo - 1e-9:
            out.append(round(v, 6))
        v += step
    return out


def stacked_bars(weeks: Sequence[tuple[str, Sequence[tuple[str, int]]]], categories: Sequence[str]) -> str:
    """Vertical stacked bars: one bar per week, one colour per category, with a legend."""
    totals = [sum(c for _, c in counts) for _, counts in weeks]
    if not weeks or not any(totals):
        return _nodata("No error records in this period.")
    colour = {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(categories)}
    bw, gap, h, mt, mb, ml = 40, 16, 200, 12, 30, 36
    w = ml + len(weeks) * (bw + gap) + 160
    top = max(totals)
    parts = [f'<svg class="chart" width="{w}" height="{h}" role="img" aria-label="errors per week">']
    parts.append(f'<text x="{ml - 4}" y="{mt + 4}" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{ml - 4}" y="{h - mb}" text-anchor="end">0</text>')
    for i, (week, counts) in enumerate(weeks):
        x0 = ml + i * (bw + gap)
        base = float(h - mb)
        for cat, c in counts:
            if not c:
                continue
            bh = (h - mt - mb) * c / top
            base -= bh
            parts.append(
                f'<rect x="{x0}" y="{base:.1f}" width="{bw}" height="{bh:.1f}" fill="{colour[cat]}">'
                f"<title>{escape(f'{week} {cat}: {c}')}</title></rect>"
            )
        parts.append(
            f'<text x="{x0 + bw / 2}" y="{h - mb + 14}" text-anchor="middle">{escape(week[-3:])}</text>'
        )
    lx = ml + len(weeks) * (bw + gap) + 8
    for j, cat in enumerate(categories):
        parts.append(
            f'<rect x="{lx}" y="{mt + j * 16}" width="10" height="10" fill="{colour[cat]}"/>'
            f'<text x="{lx + 14}" y="{mt + j * 16 + 9}">{escape(cat)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def hbars(values: Sequence[tuple[str, float]], *, unit: str) -> str:
    """Horizontal bars, one per name (undefined values drawn as empty rows)."""
    finite = [v for _, v in values if math.isfinite(v)]
    if not values or not finite or max(finite) <= 0:
        return _nodata("No timed work in this period.")
    top = max(finite)
    ml, bar, gap, w = 140, 16, 6, 640
    h = len(values) * (bar + gap) + 8
    parts = [f'<svg class="chart" width="{w}" height="{h}" role="img" aria-label="{escape(unit)}">']
    for i, (name, v) in enumerate(values):
        y0 = 4 + i * (bar + gap)
        parts.append(f'<text x="{ml - 6}" y="{y0 + 12}" text-anchor="end">{escape(name)}</text>')
        if math.isfinite(v):
            bw = (w - ml - 90) * v / top
            parts.append(
                f'<rect x="{ml}" y="{y0}" width="{bw:.1f}" height="{bar}" fill="#4e79a7">'
                f"<title>{escape(f'{name}: {fmt(v, 1)} {unit}')}</title></rect>"
                f'<text x="{ml + bw + 4:.1f}" y="{y0 + 12}">{fmt(v, 1)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _heat(value: float, top: float, colour: tuple[int, int, int] = (78, 121, 167)) -> str:
    if not math.isfinite(value) or top <= 0:
        return ""
    a = max(0.0, min(1.0, value / top))
    return f' style="background:rgba({colour[0]},{colour[1]},{colour[2]},{a * 0.85:.2f})"'


def confusion_table(c: ConfusionMatrix) -> str:
    top = max((v for r in c.counts for v in r), default=0)
    head = "".join(f"<th>{escape(lab)}</th>" for lab in c.labels)
    rows = []
    for lab, r in zip(c.labels, c.counts, strict=True):
        cells = "".join(f"<td{_heat(v, top)}>{v}</td>" for v in r)
        rows.append(f'<tr><th class="l">{escape(lab)}</th>{cells}</tr>')
    return (
        f'<table class="heat"><caption>{escape(c.question)}: rows = annotator, columns = consensus of the '
        f'others (n={c.total})</caption><thead><tr><th class="l"></th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def pair_table(p: PairMatrix) -> str:
    head = "".join(f"<th>{escape(a)}</th>" for a in p.annotators)
    rows = []
    for i, a in enumerate(p.annotators):
        cells = "".join(
            f'<td{_heat(k, 1.0)} title="n={p.n[i][j]}">{fmt(k)}</td>' for j, k in enumerate(p.kappa[i])
        )
        rows.append(f'<tr><th class="l">{escape(a)}</th>{cells}</tr>')
    return (
        f'<table class="heat"><caption>{escape(p.question)}: Cohen\'s kappa per annotator pair</caption>'
        f'<thead><tr><th class="l"></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _annotator_row(a: AnnotatorStats) -> list[str]:
    cats = ", ".join(f"{k} {v}" for k, v in a.errors_by_category) or "—"
    return [
        escape(a.annotator),
        f"{_pct(a.gold_accuracy)} ({a.gold_items})",
        f"{_pct(a.consensus_agreement)} ({a.consensus_items})",
        f"{fmt(a.error_rate, 2)} ({a.errors}/{a.reviewed_items})",
        escape(cats),
        f"{_pct(a.rework_rate)} ({a.rework_items})",
        str(a.items),
        fmt(a.items_per_hour, 1),
        fmt(a.annotations_per_hour, 1),
        fmt(a.median_seconds_per_item, 0),
    ]


# ---------------------------------------------------------------------------------------------- page


def render_html(report: QualityReport, *, title: str) -> str:
    """The whole report as one HTML5 page (UTF-8 text)."""
    out = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="period">{escape(report.period_start.isoformat())} to {escape(report.period_end.isoformat())} '
        f"(UTC, end excluded)</p>",
        "<h2>Headline figures</h2>",
        '<div class="cards">',
    ]
    for h in report.headline:
        cls = {True: "ok", False: "bad", None: "na"}[h.met]
        ci = f"95 % CI {fmt(h.ci_low)}–{fmt(h.ci_high)}, " if math.isfinite(h.ci_low) else ""
        state = {True: "met", False: "not met", None: "no data"}[h.met]
        tgt = "" if h.target is None else f"target {h.target:g} · {state}"
        out.append(
            f'<div class="card {cls}"><div class="s">{escape(h.metric.replace("_", " "))}</div>'
            f'<div class="v">{fmt(h.value)}</div><div class="s">{escape(ci)}n={h.n}</div>'
            + (f'<div class="s">{escape(tgt)}</div>' if tgt else "")
            + "</div>"
        )
    out.append("</div>")

    out.append("<h2>Alerts</h2>")
    if report.alerts:
        rows = [
            [escape(a.metric), escape(_date(a.window_start)), escape(_date(a.window_end)), fmt(a.value),
             fmt(a.target), str(a.n), escape(", ".join(a.annotators))]
            for a in report.alerts
        ]  # fmt: skip
        out.append(_table(["metric", "from", "to", "worst", "target", "n", "annotators"], rows, cls="alert"))
    else:
        out.append(_nodata(f"No alerts: no {report.targets.window_days}-day window with at least "
                           f"{report.targets.min_items} items fell below target."))  # fmt: skip

    out.append(f"<h2>Agreement trend ({report.targets.window_days}-day rolling windows)</h2>")
    for metric, target in (("kappa", report.targets.kappa), ("dice", report.targets.dice)):
        points = [t for t in report.trends if t.metric == metric]
        if points:
            out.append(f"<h3>{escape(metric)}</h3>" + line_chart(points, float(target), label=metric))
    if not report.trends:
        out.append(_nodata())

    out.append("<h2>Agreement</h2>")
    if report.agreement:
        rows = [
            [escape(f.section), escape(f.subject), escape(f.metric), fmt(f.value), fmt(f.ci_low), fmt(f.ci_high),
             str(f.n)]
            for f in report.agreement
        ]  # fmt: skip
        out.append(_table(["kind", "subject", "metric", "value", "CI low", "CI high", "items"], rows, left=3))
    else:
        out.append(_nodata("No overlap items (annotated by two or more annotators) in this period."))

    out.append("<h2>Errors per week</h2>")
    weeks = [(w.week, w.counts) for w in report.error_weeks]
    out.append(stacked_bars(weeks, report.error_categories))

    out.append("<h2>Throughput (items per active hour)</h2>")
    out.append(hbars([(a.annotator, a.items_per_hour) for a in report.annotators if a.items], unit="items/h"))

    out.append("<h2>Confusion matrices</h2>")
    out.append("".join(confusion_table(c) for c in report.confusion) or _nodata())
    out.append("<h2>Pairwise kappa</h2>")
    out.append("".join(pair_table(p) for p in report.pair_kappa) or _nodata())

    out.append("<h2>Annotators</h2>")
    if report.annotators:
        head = ["annotator", "gold accuracy (n)", "agrees with consensus (n)", "errors / reviewed item",
                "error categories", "rework (items)", "items", "items/h", "annotations/h", "median s/item"]  # fmt: skip
        out.append(_table(head, [_annotator_row(a) for a in report.annotators]))
    else:
        out.append(_nodata())

    out.append("<h2>Reviewers and validators</h2>")
    if report.reviewers:
        rows = [
            [escape(r.reviewer), str(r.decisions), str(r.acceptances), str(r.audited), str(r.overturned),
             _pct(r.overturn_rate)]
            for r in report.reviewers
        ]  # fmt: skip
        out.append(
            _table(["reviewer", "decisions", "acceptances", "audited", "overturned", "overturn rate"], rows)
        )
    else:
        out.append(_nodata())
    out.append("</body></html>\n")
    return "\n".join(out)
