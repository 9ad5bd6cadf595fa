"""Write the README's node list (between the `nodes:start` / `nodes:end` markers) from the registry.

    python tools/node_table.py          # rewrite README.md
    python tools/node_table.py --check  # exit 1 if README.md is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- nodes:start -->", "<!-- nodes:end -->"


def table() -> str:
    sys.path.insert(0, str(REPO))
    from graph.run import load_pack

    registry = load_pack().REGISTRY
    rows = ["| class_type | category | what it does | outputs |", "|---|---|---|---|"]
    for name, cls in sorted(registry.items(), key=lambda item: (item[1].spec.category, item[0])):
        if cls.HEADLESS_ONLY:
            continue
        spec = cls.spec
        outputs = ", ".join(f"{o.name} ({o.type})" for o in spec.outputs) or "—"
        rows.append(f"| `{name}` | {spec.category} | {spec.description.splitlines()[0]} | {outputs} |")
    standins = sorted(n for n, c in registry.items() if c.HEADLESS_ONLY)
    rows.append("")
    rows.append("Headless only (stand-ins for ComfyUI's own nodes, so workflows that use them run without "
                f"ComfyUI; never registered inside it): {', '.join(f'`{n}`' for n in standins)}.")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    readme = REPO / "README.md"
    text = readme.read_text()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), f"{START}\n{table()}\n{END}", text, flags=re.S)
    if args.check:
        print("README node list is " + ("up to date" if new == text else "out of date"))
        return 0 if new == text else 1
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
