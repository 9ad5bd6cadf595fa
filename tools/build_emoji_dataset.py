"""Build the emoji training set of the default model: Noto Color Emoji rendered at 32x32, with groups.

    python tools/build_emoji_dataset.py input/emoji32                 # downloads the Debian package
    python tools/build_emoji_dataset.py OUT --font NotoColorEmoji.ttf   # or use a font file you have

Source: Debian's `fonts-noto-color-emoji` (images Apache-2.0), fetched with `apt-get download` and
unpacked with `dpkg-deb -x` into a temporary folder (nothing is installed). Every emoji the font has
(its cmap, and every sequence of its ligature table: skin tones, ZWJ sequences, flags, keycaps) is
rendered with Pillow (raqm layout) at the font's bitmap size 109 with its colours, cropped to its ink,
padded to a square, and downscaled to RES x RES (Lanczos, premultiplied alpha). Blank renders and exact
duplicates are dropped.

Writes OUT/<codepoints>.png (RGBA) and OUT/groups.json, which maps each file to its group: the emoji
with skin-tone modifiers, variation selectors and gender signs removed and man/woman/person merged,
so that variants of one emoji land on the same side of a held-out split (GenArt Load Image Folder
reads groups.json). Needs `fonttools` (pip install fonttools) and Pillow built with raqm.
The rendered images are data, not code: keep them out of git.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

FONT_IN_DEB = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
BITMAP_SIZE = 109  # the only size the font's CBDT bitmaps come in
SKIN_TONES = set(range(0x1F3FB, 0x1F400))
VARIATION = {0xFE0E, 0xFE0F}
ZWJ = 0x200D
GENDER = {0x2640, 0x2642}
PEOPLE = {0x1F468, 0x1F469, 0x1F9D1, 0x1F466, 0x1F467, 0x1F9D2}  # man, woman, person, boy, girl, child


def fetch_font(workdir: Path) -> Path:
    """NotoColorEmoji.ttf from the Debian package, unpacked into `workdir` (no system install)."""
    subprocess.run(["apt-get", "download", "fonts-noto-color-emoji"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    deb = next(workdir.glob("fonts-noto-color-emoji_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "x")], check=True)
    return workdir / "x" / FONT_IN_DEB


def emoji_sequences(font_path: Path) -> list[tuple[int, ...]]:
    """Every code point of the cmap and every ligature sequence, as code point tuples, sorted."""
    from fontTools.ttLib import TTFont

    font = TTFont(str(font_path))
    cmap = font.getBestCmap()
    glyph_to_cp: dict[str, int] = {}
    for cp, glyph in sorted(cmap.items()):
        glyph_to_cp.setdefault(glyph, cp)
    seqs = {(cp,) for cp in cmap}
    for lookup in font["GSUB"].table.LookupList.Lookup:
        if lookup.LookupType != 4:
            continue
        for sub in lookup.SubTable:
            for first, ligatures in sub.ligatures.items():
                for lig in ligatures:
                    glyphs = [first, *lig.Component]
                    if all(g in glyph_to_cp for g in glyphs):
                        seqs.add(tuple(glyph_to_cp[g] for g in glyphs))
    return sorted(seqs)


def group_of(seq: tuple[int, ...]) -> str:
    """The split group: tone, variation and gender dropped; man/woman/person/boy/girl/child merged."""
    core = [cp for cp in seq if cp not in SKIN_TONES and cp not in VARIATION]
    while len(core) >= 2 and core[-2] == ZWJ and core[-1] in GENDER:
        core = core[:-2]
    if len(core) > 1 or ZWJ in seq:
        core = [0x1F9D1 if cp in PEOPLE else cp for cp in core]
    return "-".join(f"{cp:04x}" for cp in core) or "-".join(f"{cp:04x}" for cp in seq)


def render(font: ImageFont.FreeTypeFont, seq: tuple[int, ...], res: int) -> Image.Image | None:
    """The emoji as an RGBA res x res image, or None when it renders blank."""
    text = "".join(chr(cp) for cp in seq)
    canvas = Image.new("RGBA", (BITMAP_SIZE * 4, BITMAP_SIZE * 2), (0, 0, 0, 0))
    try:
        ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    except (RuntimeError, OSError):  # control characters the shaper refuses
        return None
    box = canvas.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        return None
    ink = canvas.crop(box)
    side = max(ink.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(ink, ((side - ink.size[0]) // 2, (side - ink.size[1]) // 2))
    return square.resize((res, res), Image.Resampling.LANCZOS)


def build(out: Path, font_path: Path, res: int) -> dict[str, int]:
    if not features.check("raqm"):
        raise SystemExit("Pillow was built without raqm: ligature sequences (skin tones, ZWJ, flags) would "
                         "render as separate glyphs. Install a Pillow wheel with raqm (the PyPI wheels have it).")
    font = ImageFont.truetype(str(font_path), BITMAP_SIZE, layout_engine=ImageFont.Layout.RAQM)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    groups: dict[str, str] = {}
    blank = dup = too_wide = 0
    for seq in emoji_sequences(font_path):
        image = render(font, seq, res)
        if image is None:
            blank += 1
            continue
        text = "".join(chr(cp) for cp in seq)
        # A sequence the font cannot shape falls apart into several glyphs side by side.
        if font.getbbox(text)[2] > BITMAP_SIZE * 1.5:
            too_wide += 1
            continue
        digest = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
        if digest in seen:
            dup += 1
            continue
        seen.add(digest)
        name = "-".join(f"{cp:04x}" for cp in seq) + ".png"
        image.save(out / name)
        groups[name] = group_of(seq)
    (out / "groups.json").write_text(json.dumps(groups, indent=0, sort_keys=True) + "\n")
    return {"images": len(groups), "groups": len(set(groups.values())), "blank": blank, "duplicates": dup,
            "unshaped": too_wide}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (outside git), e.g. input/emoji32")
    parser.add_argument("--font", type=Path, help="NotoColorEmoji.ttf to use instead of downloading the package")
    parser.add_argument("--resolution", type=int, default=32, help="output size in pixels (default 32)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emoji-font-") as tmp:
        font_path = args.font or fetch_font(Path(tmp))
        stats = build(args.out, font_path, args.resolution)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
