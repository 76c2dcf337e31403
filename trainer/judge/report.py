"""The judge's outputs for people: a text table and a plot (PIL, no matplotlib needed).

The plot has one panel per metric (score, feature recall, adherence, leakage, and the validation
loss when the run recorded one); x = the saved epochs in order, one line per LoRA weight, the
recommended cell starred.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def validation_by_row(result: Any) -> dict[int, float]:
    """Row -> fixed-noise validation loss recorded when that LoRA file was saved."""
    by_file = {r.get("file"): r.get("loss") for r in result.validation}
    return {i: float(by_file[p.name]) for i, (_, p) in enumerate(result.plan.rows)
            if isinstance(by_file.get(p.name), (int, float))}


def score_table(result: Any) -> str:
    """Rows = LoRAs, columns = weights, each cell its score; the pick marked with ``*``."""
    plan, pick = result.plan, result.recommendation
    val = validation_by_row(result)
    width = max(6, *(len(label) for label, _ in plan.rows))
    head = f"{'LoRA':<{width}}  " + "  ".join(f"w {w:<4g}" for w in plan.weights) + "  val loss"
    lines = [head]
    for r, (label, _) in enumerate(plan.rows):
        cells = []
        for c in range(len(plan.weights)):
            cell = result.cell(r, c)
            mark = "*" if pick is not None and (pick.row, pick.col) == (r, c) else " "
            cells.append(f"{cell.score:5.2f}{mark}" if cell is not None else "   - ")
        loss = val.get(r)
        lines.append(f"{label:<{width}}  " + "  ".join(cells) + (f"  {loss:.5f}" if loss is not None else "  -"))
    return "\n".join(lines)


def _panels(result: Any) -> list[tuple[str, dict[float, list[float | None]]]]:
    plan = result.plan
    panels = []
    for title, attr in (("score", "score"), ("feature recall", "recall"), ("adherence", "adherence"),
                        ("leakage", "leakage")):
        lines: dict[float, list[float | None]] = {}
        for c, w in enumerate(plan.weights):
            vals = []
            for r in range(len(plan.rows)):
                cell = result.cell(r, c)
                vals.append(None if cell is None else getattr(cell, attr))
            if any(v is not None for v in vals):
                lines[w] = vals
        if lines:
            panels.append((title, lines))
    val = validation_by_row(result)
    if val:
        panels.append(("validation loss", {-1.0: [val.get(r) for r in range(len(plan.rows))]}))
    return panels


def write_plot(result: Any, path: Path) -> Path:
    from PIL import Image, ImageDraw

    from tagging.atomic import atomic_write_bytes
    from trainer.grid import _font

    plan, pick = result.plan, result.recommendation
    panels = _panels(result)
    pw, ph, pad = 460, 220, 48
    cols = 2
    n_rows = max(1, math.ceil(len(panels) / cols))
    img = Image.new("RGB", (cols * pw, n_rows * ph + 40), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font, small = _font(14), _font(11)
    title = "kazari judge"
    if pick is not None:
        title += f" - keep {pick.label} at weight {pick.weight:g} (score {pick.score:.2f}, starred)"
    d.text((8, 8), title, fill=(0, 0, 0), font=font)
    labels = [label for label, _ in plan.rows]
    for i, (name, lines) in enumerate(panels):
        ox, oy = (i % cols) * pw, 40 + (i // cols) * ph
        x0, y0, x1, y1 = ox + pad, oy + 20, ox + pw - 70, oy + ph - 36  # legend in the right margin
        d.text((ox + pad, oy + 2), name, fill=(0, 0, 0), font=font)
        d.rectangle([x0, y0, x1, y1], outline=(160, 160, 160))
        vals = [v for vs in lines.values() for v in vs if v is not None]
        lo, hi = (0.0, 1.0) if name != "validation loss" else (min(vals), max(vals))
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        d.text((ox + 4, y0 - 6), f"{hi:.3g}", fill=(90, 90, 90), font=small)
        d.text((ox + 4, y1 - 6), f"{lo:.3g}", fill=(90, 90, 90), font=small)
        n = len(labels)

        def xy(k: int, v: float, x0=x0, x1=x1, y0=y0, y1=y1, lo=lo, hi=hi, n=n) -> tuple[float, float]:
            inner = 24  # keep the first/last point and its label inside the box
            x = x0 + inner + (x1 - x0 - 2 * inner) * (0.5 if n == 1 else k / (n - 1))
            return x, y1 - (y1 - y0) * (v - lo) / (hi - lo)

        for k, label in enumerate(labels):
            x, _ = xy(k, lo)
            d.text((x, y1 + 4), label[:10], fill=(60, 60, 60), font=small, anchor="ma")
        for j, (w, vs) in enumerate(lines.items()):
            colour = PALETTE[j % len(PALETTE)] if w >= 0 else (0, 0, 0)
            pts = [xy(k, v) for k, v in enumerate(vs) if v is not None]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            for px, py in pts:
                d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
            if w >= 0:
                d.text((x1 + 6, y0 + 4 + 12 * j), f"w {w:g}", fill=colour, font=small)
        if name == "score" and pick is not None:
            px, py = xy(pick.row, pick.score)
            _star(d, px, py, 9, (230, 180, 0))
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _star(d: Any, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    pts = []
    for k in range(10):
        ang = -math.pi / 2 + k * math.pi / 5
        rad = r if k % 2 == 0 else r * 0.45
        pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
    d.polygon(pts, fill=colour, outline=(0, 0, 0))
