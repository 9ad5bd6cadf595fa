"""Write the shipped UI workflows (workflows/<name>.json, version 0.4) from their API prompts
(workflows/api/<name>.json), so both formats ship and never drift apart.

    python tools/build_workflows.py [NAME ...]  # rewrite every UI file (or the named ones)
    python tools/build_workflows.py --check    # exit 1 if a UI file is out of date

Edit the API prompt, then run this. A test checks each UI file converts back to exactly its prompt.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
API_DIR = REPO / "workflows" / "api"


def prompts() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(API_DIR.glob("*.json"))}


def build(prompt: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from graph.run import load_pack

    pack = load_pack()
    from comfyui_genart.graph.comfy import object_info
    from comfyui_genart.graph.ui_build import api_to_ui

    return api_to_ui(prompt, object_info(pack.REGISTRY))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    parser.add_argument("names", nargs="*", help="workflow names (default: all)")
    args = parser.parse_args()
    stale = []
    for name, prompt in prompts().items():
        if args.names and name not in args.names:
            continue
        path = REPO / "workflows" / f"{name}.json"
        text = json.dumps(build(prompt), indent=2) + "\n"
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text)
    print(("out of date: " if args.check else "wrote: ") + (", ".join(stale) or "nothing"))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
