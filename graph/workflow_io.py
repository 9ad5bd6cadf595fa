"""Reading workflow files: API JSON, UI JSON (converted from node schemas) or a PNG carrying them.

Loading parses JSON only: nothing in a workflow file is executed or unpickled.
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_WORKFLOW_BYTES = 64 << 20


class WorkflowFileError(ValueError):
    """The file is not a workflow we can read; the message says what it is and what was expected."""


def load_workflow(path: Path,
                  object_info: Mapping[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(API prompt, UI workflow or None) from a .json or .png file."""
    from .ui_format import ui_to_api

    if not path.is_file():
        raise WorkflowFileError(f"workflow file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_WORKFLOW_BYTES:
        raise WorkflowFileError(f"{path} is larger than {MAX_WORKFLOW_BYTES >> 20} MiB; not a workflow")
    with path.open("rb") as f:
        magic = f.read(8)
    if magic == b"\x89PNG\r\n\x1a\n":
        from .pngmeta import read_workflow_from_png

        prompt, workflow = read_workflow_from_png(path)
        if prompt is None and workflow is None:
            raise WorkflowFileError(f"{path} is a PNG without 'prompt' or 'workflow' text chunks; "
                                    "only images saved by ComfyUI or GenArt carry a workflow")
        if prompt is None:
            prompt = ui_to_api(workflow, object_info)  # type: ignore[arg-type]
        return prompt, workflow
    if path.suffix.lower() == ".png":
        raise WorkflowFileError(f"{path} is named .png but is not a PNG file (its first bytes are {magic!r})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WorkflowFileError(f"{path} is not valid JSON: {err}") from err
    return parse_workflow(data, object_info, str(path))


def parse_workflow(data: Any, object_info: Mapping[str, dict[str, Any]],
                   name: str = "the workflow") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(API prompt, UI workflow or None) from decoded JSON: an API prompt, a UI workflow (converted) or a
    POST /prompt body."""
    from .ui_format import is_ui_workflow, ui_to_api

    if not isinstance(data, dict):
        raise WorkflowFileError(f"{name}: a workflow is a JSON object, got {type(data).__name__}")
    if is_ui_workflow(data):
        return ui_to_api(data, object_info), data
    # ComfyUI's POST /prompt body wraps the prompt; accept it as well.
    if isinstance(data.get("prompt"), dict) and "class_type" not in data.get("prompt", {}):
        extra = data.get("extra_data", {}).get("extra_pnginfo", {}) if isinstance(data.get("extra_data"), dict) else {}
        return data["prompt"], extra.get("workflow") if isinstance(extra, dict) else None
    return data, None


# A sweep runs the workflow once per combination of values: bounded before anything runs.
MAX_SWEEP_RUNS = 256


def sweep_overrides(sweeps: list[str]) -> list[list[str]]:
    """`ID.INPUT=[v1, v2, ...]` items -> one list of `ID.INPUT=v` overrides per run, every combination
    (the first item varies slowest). No sweeps: one run with no overrides."""
    axes: list[list[str]] = []
    for item in sweeps:
        target, sep, raw = item.partition("=")
        try:
            values = json.loads(raw) if sep else None
        except json.JSONDecodeError:
            values = None
        if not isinstance(values, list) or not values:
            raise WorkflowFileError(f"--sweep {item!r}: expected ID.INPUT=[VALUE, ...], a non-empty JSON list, "
                                    "for example --sweep 5.seed=[0,1,2]")
        axes.append([f"{target}={json.dumps(v)}" for v in values])
    runs = math.prod(len(axis) for axis in axes)
    if runs > MAX_SWEEP_RUNS:
        raise WorkflowFileError(f"--sweep makes {runs} runs, more than the limit of {MAX_SWEEP_RUNS}; sweep fewer "
                                "values or split it into several commands")
    return [list(combo) for combo in itertools.product(*axes)]


def apply_overrides(prompt: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `ID.INPUT=VALUE` overrides (VALUE parsed as JSON, else taken as a string) to a copy."""
    out = {k: dict(v, inputs=dict(v.get("inputs", {}))) if isinstance(v, dict) else v for k, v in prompt.items()}
    for item in overrides:
        target, sep, raw = item.partition("=")
        node_id, dot, name = target.partition(".")
        if not sep or not dot or not node_id or not name:
            raise WorkflowFileError(f"--set {item!r}: expected ID.INPUT=VALUE, for example --set 3.seed=42")
        if node_id not in out:
            raise WorkflowFileError(f"--set {item!r}: there is no node {node_id!r}; nodes are {', '.join(out)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[node_id]["inputs"][name] = value
    return out
