"""Write the shipped workflows/*.json (UI format, version 0.4) from the API prompts defined here.

    python tools/build_workflows.py          # rewrite every file
    python tools/build_workflows.py --check  # exit 1 if a file is out of date

A test checks that each file converts back to exactly its prompt, so the two never drift apart.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _link(node: str, slot: int = 0) -> list[Any]:
    return [node, slot]


WORKFLOWS: dict[str, dict[str, Any]] = {
    # Engine demo: no model needed. A synthetic batch is resized, cropped, saved and previewed.
    "image-utilities": {
        "1": {"class_type": "GenArtPatternImage",
              "inputs": {"pattern": "checkerboard", "width": 96, "height": 96, "batch_size": 2, "cell": 12,
                         "red": 0.9, "green": 0.5, "blue": 0.1}},
        "2": {"class_type": "GenArtResizeImage",
              "inputs": {"image": _link("1"), "width": 64, "height": 64, "method": "bicubic"}},
        "3": {"class_type": "GenArtCropImage",
              "inputs": {"image": _link("2"), "x": 8, "y": 8, "width": 48, "height": 48}},
        "4": {"class_type": "GenArtSaveImage",
              "inputs": {"images": _link("3"), "filename_prefix": "genart/image-utilities", "embed_workflow": True}},
        "5": {"class_type": "GenArtPreviewImage", "inputs": {"images": _link("2")}},
    },
}


def build(name: str) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from graph.run import load_pack

    pack = load_pack()
    from comfyui_genart.graph.comfy import object_info
    from comfyui_genart.graph.ui_build import api_to_ui

    return api_to_ui(WORKFLOWS[name], object_info(pack.REGISTRY))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args()
    stale = []
    for name in WORKFLOWS:
        path = REPO / "workflows" / f"{name}.json"
        text = json.dumps(build(name), indent=2) + "\n"
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text)
    print(("out of date: " if args.check else "wrote: ") + (", ".join(stale) or "nothing"))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
