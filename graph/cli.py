"""Command line: run, validate, list nodes, convert UI workflows to API format.

    python -m graph.run workflows/image-utilities.json --output-dir out
    python -m graph.run convert my_ui_workflow.json -o my_api_prompt.json --object-info object_info.json

Exit codes: 0 success, 1 a node failed at run time (or the run was interrupted), 2 the workflow is
invalid (nothing ran).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .api import make_settings, registry
from .errors import NodeExecutionError, WorkflowInvalid
from .safety import UnsafePathError
from .workflow_io import WorkflowFileError, apply_overrides, load_workflow, sweep_overrides

if TYPE_CHECKING:
    from .context import RunSettings

EXIT_OK, EXIT_RUNTIME, EXIT_INVALID = 0, 1, 2


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m graph.run",
        description="Run a GenArt/ComfyUI workflow headless. WORKFLOW is an API-format JSON "
                    "(ComfyUI's 'Export (API)'), a UI-format JSON (what ComfyUI saves) or a PNG saved with "
                    "its workflow inside. Convert UI workflows with: python -m graph.run convert --help",
        epilog="exit codes: 0 success, 1 runtime failure or interrupted, 2 invalid workflow (nothing ran)")
    p.add_argument("workflow", nargs="?", type=Path, help="workflow file (.json or .png)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="ID.INPUT=VALUE",
                   help="override an input, e.g. --set 3.seed=42 --set 5.filename_prefix=run1 (VALUE is JSON "
                        "or a plain string); repeatable")
    p.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="ID.INPUT=[V1,V2,...]",
                   help="run once per value, e.g. --sweep 5.seed=[0,1,2]; several sweeps run every combination; "
                        "unchanged upstream nodes (model loaders) run once; all runs are validated first")
    p.add_argument("--output-dir", type=Path, default=Path("output"), help="where saved images go (default ./output)")
    p.add_argument("--input-dir", type=Path, default=Path("input"),
                   help="where input files are looked up (default ./input)")
    p.add_argument("--temp-dir", type=Path, default=Path("temp"), help="where previews go (default ./temp)")
    p.add_argument("--models-dir", type=Path, action="append", default=None,
                   help="folder with model files; repeatable (default ./models)")
    p.add_argument("--allow-any-path", action="store_true",
                   help="let the workflow read absolute paths outside the input/models folders")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="compute dtype for models (default float32)")
    p.add_argument("--validate-only", action="store_true", help="check the workflow and exit (0 valid, 2 invalid)")
    p.add_argument("--list-nodes", action="store_true", help="print every node's schema as JSON and exit")
    p.add_argument("--report", type=Path, help="write the run report (per node: cached, seconds, peak memory, "
                                                "output shapes) or the validation errors as JSON")
    p.add_argument("--cache-dir", type=Path, help="persistent cache for expensive nodes' outputs (safetensors), "
                                                   "reused by later runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    batch = p.add_argument_group("batches (see README: Batches and clusters)")
    batch.add_argument("--for-each", dest="for_each", action="append", default=[], metavar="ID.INPUT=GLOB",
                       help="run once per file of the input folder matching GLOB, e.g. --for-each 1.image='*.png'; "
                            "with --sweep, every file x every value; outputs are named after the item, a manifest "
                            "(<output>/<workflow>.batch.jsonl) and a summary table (.batch.csv) record each one")
    batch.add_argument("--resume", action="store_true",
                       help="continue a batch: skip the items its manifest lists as done, retry the failed ones")
    batch.add_argument("--workers", type=_positive, metavar="N",
                       help="run the items in N local worker processes (models load once per process)")
    batch.add_argument("--ray", metavar="ADDRESS", help="run the items as Ray actors on the cluster at ADDRESS "
                       "('auto': the one Ray finds, else a local one; 'local'); --workers N sets how many "
                       "(default one per CPU); needs pip install 'comfyui-genart[ray]'")
    batch.add_argument("--threads", type=_positive, metavar="N",
                       help="torch threads per process (default: 1 in batch workers, torch's own otherwise)")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m graph.run convert",
        description="Convert a UI-format workflow (what ComfyUI saves; or a PNG holding one) to API format "
                    "(what ComfyUI's 'Export (API)' writes), without a browser.")
    p.add_argument("workflow", type=Path, help="UI-format workflow (.json) or PNG")
    p.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    p.add_argument("--object-info", type=Path, action="append", default=[],
                   help="JSON from a ComfyUI server's GET /object_info, for workflows using nodes other than "
                        "GenArt's; repeatable")
    return p


def _object_info(extra_files: list[Path]) -> dict[str, Any]:
    from .comfy import object_info

    info: dict[str, Any] = {}
    for path in extra_files:
        info.update(json.loads(path.read_text(encoding="utf-8")))
    info.update(object_info(registry()))
    return info


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def convert_main(argv: list[str]) -> int:
    from .ui_format import UIConversionError, ui_to_api

    args = _convert_parser().parse_args(argv)
    try:
        info = _object_info(args.object_info)
        prompt, workflow = load_workflow(args.workflow, info)
        if workflow is not None:
            prompt = ui_to_api(workflow, info)
    except (WorkflowFileError, UIConversionError, OSError, json.JSONDecodeError) as err:
        return _fail(str(err), EXIT_INVALID)
    text = json.dumps(prompt, indent=2)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return EXIT_OK


def _settings(args: argparse.Namespace) -> Any:
    return make_settings(input_dir=args.input_dir, output_dir=args.output_dir, temp_dir=args.temp_dir,
                         models_dirs=args.models_dir or [Path("models")], device=args.device, dtype=args.dtype,
                         allow_any_path=args.allow_any_path, progress=not args.quiet)


def _write_report(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def run_main(argv: list[str]) -> int:
    from .cache import DiskCache, OutputCache
    from .executor import Executor
    from .ui_format import UIConversionError

    parser = _run_parser()
    args = parser.parse_args(argv)
    if args.list_nodes:
        print(json.dumps([c.spec.json_schema() for _, c in registry().items()], indent=2))
        return EXIT_OK
    if args.workflow is None:
        parser.print_usage(sys.stderr)
        return _fail("give a WORKFLOW file (or --list-nodes)", EXIT_INVALID)
    if args.for_each or args.resume or args.workers or args.ray:
        from .batch import batch_main

        return batch_main(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runs: list[tuple[list[str], dict[str, Any], Any]] = []  # (sweep overrides, prompt, plan) per run
    run_name = ""
    try:
        settings = _settings(args)
        prompt, workflow = load_workflow(args.workflow, _object_info([]))
        combos = sweep_overrides(args.sweeps)
        # A sweep keeps outputs in memory between its runs, so what a value does not change runs once.
        executor = Executor(registry(), settings, cache=OutputCache() if len(combos) > 1 else None,
                            disk_cache=DiskCache(args.cache_dir) if args.cache_dir else None)
        for combo in combos:  # every run is checked before any runs
            run_name = f" (run with {' '.join(combo)})" if combo else ""
            run_prompt = apply_overrides(prompt, [*args.overrides, *combo])
            runs.append((combo, run_prompt, executor.validate(run_prompt)))
    except WorkflowInvalid as err:
        _write_report(args.report, err.to_json())
        return _fail(f"invalid workflow {args.workflow}{run_name}:\n{err.summary()}", EXIT_INVALID)
    except (WorkflowFileError, UIConversionError, UnsafePathError) as err:
        return _fail(str(err), EXIT_INVALID)
    if args.validate_only:
        planned = " + ".join(str(len(plan.order)) for _, _, plan in runs)
        sweep = f" in {len(runs)} runs" if len(runs) > 1 else ""
        print(f"{args.workflow}: valid; {planned} node(s) would run{sweep}")
        return EXIT_OK
    reports = []
    for number, (combo, run_prompt, plan) in enumerate(runs, 1):
        if combo:
            print(f"run {number}/{len(runs)}: {' '.join(combo)}", file=sys.stderr)
        try:
            report = executor.run(run_prompt, workflow, plan=plan)
        except NodeExecutionError as err:
            _write_report(args.report, {"error": err.to_json()})
            return _fail(str(err), EXIT_RUNTIME)
        except KeyboardInterrupt:
            return _fail("interrupted; no partial outputs were kept", EXIT_RUNTIME)
        reports.append({"overrides": combo, **report.to_json()} if combo else report.to_json())
        ran = len(report.ran)
        print(f"ran {ran} node(s), {len(report.nodes) - ran} from cache, in {report.seconds:.2f} s", file=sys.stderr)
        _print_ui(report.ui, run_prompt, settings)
    _write_report(args.report, {"runs": reports} if args.sweeps else reports[0])
    return EXIT_OK


# UI entries that name files a node wrote (ComfyUI's {"filename", "subfolder", "type"} records).
FILE_ENTRIES = ("images", "files", "codes", "models")


def _print_ui(ui_by_node: dict[str, dict[str, Any]], prompt: dict[str, Any], settings: RunSettings) -> None:
    """What ComfyUI would show: each written file's path on stdout (for scripts), each text a node reported
    (metric tables, training summaries) on stderr under the node's name."""
    for node_id, ui in ui_by_node.items():
        for text in ui.get("text", []):
            print(f"node {node_id} ({prompt[node_id]['class_type']}):\n{text}", file=sys.stderr)
        for kind in FILE_ENTRIES:
            for entry in ui.get(kind, []):
                root = settings.paths.output_dir if entry["type"] == "output" else settings.paths.temp_dir
                print(root / entry["subfolder"] / entry["filename"])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        return convert_main(argv[1:])
    return run_main(argv)
