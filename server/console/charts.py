"""Charts drawn on the server as inline SVG: no chart library, nothing to download on the big screen.

Every label is escaped here, since grid names and categories can come from imports and phones.
"""

from __future__ import annotations

import math

from markupsafe import Markup, escape

PALETTE = ("#c62828", "#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#ad1457", "#455a64")


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _nice_top(top: float, ticks: int = 4) -> float:
    """The axis top: ``ticks`` steps of 1, 2 or 5 times a power of ten, whole numbers for counts."""
    raw = max(top, 1) / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return max(1, step) * ticks


def hbars(items: list[tuple[str, float]], *, width: int = 460, bar: int = 18, colour: str = PALETTE[1]) -> Markup:
    """Horizontal bars, one per (label, value), longest first as given."""
    if not items:
        return Markup('<svg class="chart" width="0" height="0" aria-hidden="true"></svg>')
    label_w, value_w, gap = 156, 48, 6
    top = max(v for _, v in items) or 1
    height = len(items) * (bar + gap) + gap
    span = width - label_w - value_w
    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        )
    ]
    for i, (label, value) in enumerate(items):
        y = gap + i * (bar + gap)
        w = max(1.0, span * value / top) if value else 0
        text = str(label)
        short = text if len(text) <= 11 else text[:10] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar * 0.75:.1f}" text-anchor="end" font-size="13">'
            f"<title>{escape(text)}</title>{escape(short)}</text>"
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colour}" rx="2"></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar * 0.75:.1f}" font-size="12">{escape(_num(value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def columns(
    labels: list[str],
    series: list[tuple[str, list[float]]],
    *,
    width: int = 560,
    height: int = 220,
) -> Markup:
    """Grouped columns: one group per label, one column per series, with a legend."""
    if not labels or not series:
        return Markup('<svg class="chart" width="0" height="0" aria-hidden="true"></svg>')
    left, bottom, top_pad = 34, 34, 26
    longest = max(len(str(label)) for label in labels)
    # Labels wider than their column (Chinese grid names) are turned, with room made below.
    slanted = longest * 10 > (width - left - 6) / len(labels)
    if slanted:
        left = max(left, int(longest * 6))
        bottom = min(110, 20 + int(longest * 7.5))
        height += bottom - 34
    plot_w = width - left - 6
    group_w = plot_w / len(labels)
    plot_h = height - bottom - top_pad
    top = _nice_top(max((max(values) if values else 0) for _, values in series))
    col_w = max(2.0, (group_w - 6) / len(series))
    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        )
    ]
    for tick in range(5):
        value = top * tick / 4
        y = top_pad + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"></line>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{escape(_num(value))}</text>'
        )
    for g, label in enumerate(labels):
        x0 = left + g * group_w + 3
        for s, (_, values) in enumerate(series):
            value = values[g] if g < len(values) else 0
            h = plot_h * value / top
            parts.append(
                f'<rect x="{x0 + s * col_w:.1f}" y="{top_pad + plot_h - h:.1f}" width="{col_w - 1:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}"><title>{escape(label)}: {escape(_num(value))}'
                f"</title></rect>"
            )
        cx, ly = x0 + group_w / 2 - 3, height - bottom + 14
        turn = f' transform="rotate(-40 {cx:.1f} {ly})"' if slanted else ""
        anchor = "end" if slanted else "middle"
        parts.append(f'<text x="{cx:.1f}" y="{ly}" font-size="10" text-anchor="{anchor}"{turn}>{escape(label)}</text>')
    x = left
    for s, (name, _) in enumerate(series):
        parts.append(
            f'<rect x="{x}" y="6" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"></rect>'
            f'<text x="{x + 16}" y="16" font-size="12">{escape(name)}</text>'
        )
        x += 16 + 14 * max(2, len(name)) // 1.4 + 20
    parts.append("</svg>")
    return Markup("".join(parts))


def donut(value: float, *, label: str = "", size: int = 120, colour: str = PALETTE[2]) -> Markup:
    """A ring filled to ``value`` (0..1), the percentage in the middle."""
    value = min(max(value, 0.0), 1.0)
    r = size / 2 - 10
    circ = 2 * 3.141592653589793 * r
    c = size / 2
    return Markup(
        f'<svg class="donut" viewBox="0 0 {size} {size}" width="{size}" height="{size}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
        f'<circle cx="{c}" cy="{c}" r="{r:.1f}" fill="none" stroke="#e0e0e0" stroke-width="14"></circle>'
        f'<circle cx="{c}" cy="{c}" r="{r:.1f}" fill="none" stroke="{colour}" stroke-width="14" '
        f'stroke-dasharray="{circ * value:.1f} {circ:.1f}" transform="rotate(-90 {c} {c})"></circle>'
        f'<text x="{c}" y="{c + 7}" text-anchor="middle" font-size="20" font-weight="bold">'
        f"{escape(_num(value * 100))}%</text></svg>"
    )
