"""PNG text chunks as ComfyUI writes them: `prompt` (API format) and `workflow` (UI format), JSON each.

An image saved with them is itself a runnable workflow: the runner reads them back.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def png_bytes(image: Image.Image, texts: dict[str, Any], compress_level: int = 4) -> bytes:
    """Encode `image` as PNG with each text entry JSON-encoded into a tEXt chunk."""
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, json.dumps(value))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def read_png_texts(path: Path | str) -> dict[str, str]:
    """The raw text chunks of a PNG (decompressed; values are strings)."""
    with Image.open(path) as im:
        if im.format != "PNG":
            raise ValueError(f"{path} is a {im.format} file, not a PNG")
        im.load()
        return {k: v for k, v in getattr(im, "text", {}).items() if isinstance(v, str)}


def read_workflow_from_png(path: Path | str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(prompt, workflow) stored in a PNG by ComfyUI or by our save node; either may be None."""
    texts = read_png_texts(path)
    prompt = json.loads(texts["prompt"]) if "prompt" in texts else None
    workflow = json.loads(texts["workflow"]) if "workflow" in texts else None
    return prompt, workflow
