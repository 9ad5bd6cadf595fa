"""Charts drawn as IMAGE tensors: the codebook usage histogram, training loss curves."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from .codes import code_usage

BAR_COLOUR = (40, 90, 170)


UNUSED_COLOUR = (210, 50, 40)


TEXT_COLOUR = (20, 20, 20)


def column_values(values: torch.Tensor, width: int) -> torch.Tensor:
    """Values of `len(values)` bars drawn in `width` pixel columns: a column spanning several bars shows
    their maximum; a bar wider than a column repeats."""
    n = values.numel()
    if n >= width:
        column_of = torch.arange(n) * width // n
        return torch.zeros(width, dtype=values.dtype).scatter_reduce(0, column_of, values, "amax")
    return values[torch.arange(width) * n // width]


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def codebook_histogram(indices: torch.Tensor, num_codes: int, width: int, height: int,
                       order: Literal["index", "count"] = "index",
                       scale: Literal["linear", "log"] = "linear") -> torch.Tensor:
    """How often each code is used, as IMAGE [1, height, width, 3]: one bar per code (a pixel column shows the
    largest count among its codes when codes outnumber columns), red ticks under unused codes, and codes used /
    total, perplexity and positions written on top."""
    counts, used, perplexity = code_usage(indices, num_codes)
    if order == "count":
        counts = counts.sort(descending=True).values
    values = counts.double()
    if scale == "log":
        values = values.log1p()

    picture = PILImage.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    font = load_font(max(10, height // 18))
    title = (f"{used}/{num_codes} codes used   perplexity {perplexity:.1f}   "
             f"{indices.numel()} positions   max count {int(counts.max())}")
    draw.text((4, 2), title, fill=TEXT_COLOUR, font=font)
    top = int(draw.textbbox((4, 2), title, font=font)[3]) + 6
    margin, tick = 4, 3
    base = height - margin - tick - 1
    plot_w = width - 2 * margin
    if base - top < 8:
        raise ValueError(f"height {height} leaves no room for bars under the title; use a larger height")

    heights = column_values(values, plot_w)
    peak = float(values.max()) or 1.0
    bar_tops = (base - (heights / peak * (base - top)).round()).long().tolist()
    for x, (y, h) in enumerate(zip(bar_tops, heights.tolist(), strict=True)):
        if h > 0:
            draw.line([(margin + x, y), (margin + x, base)], fill=BAR_COLOUR)
        else:
            draw.line([(margin + x, base + 1), (margin + x, base + tick)], fill=UNUSED_COLOUR)
    array = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
    return array[None].contiguous()


CURVE_COLOURS = ((40, 90, 170), (210, 50, 40), (40, 150, 70), (150, 80, 170), (230, 140, 20))


def smoothed(values: list[float], window: int) -> list[float]:
    """Trailing moving average over `window` entries (a GAN's per-step losses are too noisy to read raw)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def axis_labels(high: float, low: float) -> tuple[str, str]:
    """The two ends of an axis with as few significant digits (3 to 7) as tell them apart."""
    for digits in range(3, 8):
        a, b = f"{high:.{digits}g}", f"{low:.{digits}g}"
        if a != b:
            break
    return a, b


def loss_curve(history: list[dict[str, float]], width: int = 640, height: int = 360,
               keys: tuple[str, ...] | None = None) -> torch.Tensor:
    """IMAGE [1, height, width, 3]: each logged value (losses, penalties, FD) against the step, smoothed over
    1% of the run, one colour per key with its last value in the legend; one y axis per chart, so keys of
    very different scales are drawn each in its own band."""
    keys = keys or tuple(dict.fromkeys(k for e in history for k in e if k != "step"))
    image = PILImage.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = load_font(11)
    if not history or not keys:
        draw.text((8, height // 2), "no steps logged yet", fill=TEXT_COLOUR, font=font)
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
    band = (height - 16) // len(keys)
    first, last = history[0]["step"], max(history[-1]["step"], history[0]["step"] + 1)
    window = max(1, len(history) // 100)
    for n, key in enumerate(keys):
        points = [(e["step"], float(e[key])) for e in history if key in e]
        if not points:
            continue
        values = smoothed([v for _, v in points], window)
        low, high = min(values), max(values)
        span = high - low or 1.0
        top, left, right = 16 + n * band, 48, width - 8
        bottom = top + band - 14
        draw.rectangle((left, top, right, bottom), outline=(200, 200, 200))
        colour = CURVE_COLOURS[n % len(CURVE_COLOURS)]
        xy = [(left + (s - first) / (last - first) * (right - left), bottom - (v - low) / span * (bottom - top))
              for (s, _), v in zip(points, values, strict=True)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=1)
        else:
            draw.point(xy, fill=colour)
        high_text, low_text = axis_labels(high, low)
        draw.text((2, top), high_text, fill=TEXT_COLOUR, font=font)
        draw.text((2, bottom - 10), low_text, fill=TEXT_COLOUR, font=font)
        draw.text((left + 4, top + 2), f"{key} (last {values[-1]:.4g})", fill=colour, font=font)
    draw.text((48, 2), f"step {first} .. {history[-1]['step']}", fill=TEXT_COLOUR, font=font)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


def labeled_grid(cells: torch.Tensor, columns: int, labels: list[str], cell_size: int = 96,
                 row_labels: list[str] | None = None, padding: int = 4) -> torch.Tensor:
    """IMAGE [N, H, W, 3] as one IMAGE grid, each cell enlarged to `cell_size` (nearest, so small latents show
    their pixels) with its label written under it, and an optional label left of each row."""
    n = cells.shape[0]
    rows = -(-n // columns)
    font = load_font(max(10, cell_size // 8))
    text_h = max(12, cell_size // 6)
    left = 0
    if row_labels:
        left = max(int(ImageDraw.Draw(PILImage.new("RGB", (1, 1))).textlength(t, font=font)) for t in row_labels) + 8
    width = left + columns * (cell_size + padding) + padding
    height = rows * (cell_size + text_h + padding) + padding
    canvas = PILImage.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    big = torch.nn.functional.interpolate(cells.permute(0, 3, 1, 2).float(), size=(cell_size, cell_size),
                                          mode="nearest").permute(0, 2, 3, 1)
    pixels = (big.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    for i in range(n):
        r, c = divmod(i, columns)
        x, y = left + padding + c * (cell_size + padding), padding + r * (cell_size + text_h + padding)
        canvas.paste(PILImage.fromarray(pixels[i][..., :3]), (x, y))
        label = labels[i] if i < len(labels) else ""
        while label and draw.textlength(label, font=font) > cell_size:
            label = label[:-1]
        draw.text((x + 2, y + cell_size + 1), label, fill=TEXT_COLOUR, font=font)
    for r, text in enumerate(row_labels or []):
        draw.text((4, padding + r * (cell_size + text_h + padding) + cell_size // 2), text, fill=TEXT_COLOUR,
                  font=font)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]
