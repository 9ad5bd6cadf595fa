"""Reproduce the default model's figures (models/MODEL_CARD.md): runs workflows/evaluate-default-model.json.

    python tools/evaluate_default_model.py --data input/emoji32      # data: tools/build_emoji_dataset.py
    python tools/evaluate_default_model.py --data input/emoji32 --json figures.json --cache-dir .cache

The workflow does the work (the same graph runs in ComfyUI or with python -m graph.run); this prints its
report table and, with --json, writes the figures as {label: {metric: value}}. Outputs (the report's JSON and
CSV, the 8x8 samples grid, the memorization grid) go to --output-dir/evaluate/.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "api" / "evaluate-default-model.json"  # the API prompt of the shipped workflow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the emoji folder (tools/build_emoji_dataset.py)")
    parser.add_argument("--output-dir", type=Path, default=Path("output"), help="where the report and grids go")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="searched for vqgan/ and unet/ "
                        "genart-emoji32 before the shipped models (e.g. output, after training your own)")
    parser.add_argument("--cache-dir", type=Path, help="keep extracted features here for the next run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from graph.run import load_pack

    pack = load_pack()
    from comfyui_genart.graph.api import make_settings
    from comfyui_genart.graph.cache import DiskCache, OutputCache
    from comfyui_genart.graph.executor import Executor

    data = args.data.resolve()
    prompt = json.loads(WORKFLOW.read_text())
    for node in prompt.values():
        if node["class_type"] == "GenArtLoadImageFolder":
            node["inputs"]["folder"] = data.name
    settings = make_settings(input_dir=data.parent, output_dir=args.output_dir, models_dirs=[args.models_dir],
                             progress=True)
    executor = Executor(pack.REGISTRY, settings, cache=OutputCache(),
                        disk_cache=DiskCache(args.cache_dir) if args.cache_dir else None)
    report = executor.run(prompt)
    shown = next(ui for node_id, ui in report.ui.items() if prompt[node_id]["class_type"] == "GenArtMetricsReport")
    print(shown["text"][0])
    print(f"{report.seconds:.1f} s")
    if args.json:
        figures: dict[str, dict[str, object]] = {}
        for m in shown["metrics"]:
            figures.setdefault(m["label"], {})[m["metric"]] = m["value"]
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
