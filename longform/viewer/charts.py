"""Small inline SVG charts, computed on the server: no JavaScript, no plotting library in the page.

A few rectangles and circles are all a reader needs beside a sample (planned vs written words) or a
run (lengths, S_l, judge score vs length); matplotlib PNGs (judges/report.py) are for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 480, 160, 24


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    kind: str = ""


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    bars: tuple[Bar, ...] = ()
    dots: tuple[Dot, ...] = ()
    x_label: str = ""
    y_label: str = ""
    width: int = WIDTH
    height: int = HEIGHT


def histogram(title: str, values: list[float], *, bins: int = 20, low: float | None = None,
              high: float | None = None, x_label: str = "") -> Chart | None:
    if not values:
        return None
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    span = (high - low) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - low) / span * bins)))] += 1
    top = max(counts)
    step = (WIDTH - 2 * PAD) / bins
    bars = tuple(Bar(PAD + i * step, HEIGHT - PAD - (c / top) * (HEIGHT - 2 * PAD), step - 1,
                     (c / top) * (HEIGHT - 2 * PAD), f"{low + i * span / bins:.0f}–{low + (i + 1) * span / bins:.0f}: {c}")
                 for i, c in enumerate(counts))
    return Chart(title, bars=bars, x_label=f"{x_label} ({low:.0f} – {high:.0f})", y_label="samples")


def scatter(title: str, points: list[tuple[float, float, str]], *, x_label: str, y_label: str) -> Chart | None:
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx, sy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    dots = tuple(Dot(PAD + (x - x0) / sx * (WIDTH - 2 * PAD), HEIGHT - PAD - (y - y0) / sy * (HEIGHT - 2 * PAD),
                     f"{label}: {x:.0f} words, {y:.1f}") for x, y, label in points)
    return Chart(title, dots=dots, x_label=f"{x_label} ({x0:.0f} – {x1:.0f})", y_label=f"{y_label} ({y0:.0f} – {y1:.0f})")


def planned_vs_written(sections: list[dict]) -> Chart | None:
    """Two bars per section: what it was asked for (after re-allocation) and what it wrote."""
    if not sections:
        return None
    top = max(max(s["budget_words"] or s["planned_words"] or 0, s["words"]) for s in sections) or 1
    step = (WIDTH - 2 * PAD) / len(sections)
    bars = []
    for i, s in enumerate(sections):
        asked = s["budget_words"] or s["planned_words"] or 0
        for j, (value, kind, what) in enumerate(((asked, "asked", "asked"), (s["words"], "written", "written"))):
            h = value / top * (HEIGHT - 2 * PAD)
            bars.append(Bar(PAD + i * step + j * step / 2, HEIGHT - PAD - h, step / 2 - 1, h,
                            f"section {s['idx'] + 1}: {what} {value} words", kind))
    return Chart("Words per section: asked vs written", bars=tuple(bars), x_label="sections", y_label="words")
