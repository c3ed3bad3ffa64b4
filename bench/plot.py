"""A tiny SVG line-chart writer for the bench's curves (bench/curves.py): no plotting library,
so the bench needs nothing beyond what tests/requirements.txt already installs, and the SVG is
plain text that diffs and renders on GitHub.

A chart is a row of panels sharing one x axis (log or linear), each panel a few series of
(x, y) points drawn as lines with dots, y from 0 to a rounded-up maximum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
PANEL_W, PANEL_H = 330, 240
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 44, 46


@dataclass
class Panel:
    """One plot: its y axis label and its series (name -> points, in x order)."""

    y_label: str
    series: dict[str, list[tuple[float, float]]]


def nice_max(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= v (v > 0)."""
    if v <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    return next(m * p for m in (1, 2, 2.5, 5, 10) if m * p >= v * 0.999999)


def fmt_tick(v: float) -> str:
    """1, 10, 1k, 10k, 1M; 0.5; 12,000 -> 12k."""
    if v >= 1e6 and v % 1e6 == 0:
        return f"{v / 1e6:g}M"
    if v >= 1e3 and v % 1e3 == 0:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def chart(title: str, x_label: str, panels: list[Panel], *, log_x: bool, note: str = "") -> str:
    """The SVG text of the chart. log_x: a log10 x axis with a tick per power of ten (the x
    values must be > 0); otherwise linear with a tick per distinct x value."""
    xs = sorted({x for p in panels for pts in p.series.values() for x, _ in pts})
    if not xs:
        raise ValueError("a chart needs at least one point")
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: float(v))
    lo, hi = tx(xs[0]), tx(xs[-1])
    if log_x:
        lo, hi = math.floor(lo), math.ceil(hi)
        ticks = [10.0 ** e for e in range(int(lo), int(hi) + 1)]
    else:
        ticks = xs
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    names = list(dict.fromkeys(n for p in panels for n in p.series))
    color = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    legend_h = 18 * len(names) + 8
    width = len(panels) * (LEFT + PANEL_W + RIGHT)
    height = TOP + PANEL_H + BOTTOM + legend_h + (18 if note else 0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2:.0f}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
           f'{escape(title)}</text>']
    for i, p in enumerate(panels):
        x0, y0 = i * (LEFT + PANEL_W + RIGHT) + LEFT, TOP
        ys = [y for pts in p.series.values() for _, y in pts]
        ymax = nice_max(1.1 * max(ys) if ys else 1.0)  # some headroom above the highest point

        def px(v: float) -> float:
            return x0 + (tx(v) - lo) / (hi - lo) * PANEL_W

        def py(v: float) -> float:
            return y0 + PANEL_H - v / ymax * PANEL_H

        out.append(f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#888"/>')
        for k in range(6):  # y grid and ticks: 0 .. ymax in 5 steps
            v = ymax * k / 5
            out.append(f'<line x1="{x0}" y1="{py(v):.1f}" x2="{x0 + PANEL_W}" y2="{py(v):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{fmt_tick(round(v, 6))}</text>')
        for v in ticks:
            out.append(f'<line x1="{px(v):.1f}" y1="{y0 + PANEL_H}" x2="{px(v):.1f}" y2="{y0 + PANEL_H + 4}" '
                       'stroke="#888"/>')
            out.append(f'<text x="{px(v):.1f}" y="{y0 + PANEL_H + 16}" text-anchor="middle">{fmt_tick(v)}</text>')
        out.append(f'<text x="{x0 + PANEL_W / 2:.0f}" y="{y0 + PANEL_H + 34}" text-anchor="middle">'
                   f'{escape(x_label)}</text>')
        out.append(f'<text x="{x0 + PANEL_W / 2:.0f}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">'
                   f'{escape(p.y_label)}</text>')
        for name, pts in p.series.items():
            if not pts:
                continue
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color[name]}" stroke-width="2"/>')
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color[name]}">'
                    f'<title>{escape(name)}: {fmt_tick(x)} → {y:,.3g}</title></circle>' for x, y in pts]
    ly = TOP + PANEL_H + BOTTOM + 6
    for j, name in enumerate(names):
        y = ly + 18 * j
        out.append(f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + 24}" y2="{y}" stroke="{color[name]}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + 30}" y="{y + 4}">{escape(name)}</text>')
    if note:
        out.append(f'<text x="{LEFT}" y="{ly + 18 * len(names) + 8}" fill="#555">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
