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

    try:
        if not path.is_file():
            raise WorkflowFileError(f"workflow file {str(path)!r} does not exist" +
                                    (" (it is a folder)" if path.is_dir() else ""))
        if path.stat().st_size > MAX_WORKFLOW_BYTES:
            raise WorkflowFileError(f"{path} is larger than {MAX_WORKFLOW_BYTES >> 20} MiB; not a workflow")
        raw = path.read_bytes()
    except (OSError, ValueError) as err:  # no permission, a name the file system refuses (a NUL byte)
        if isinstance(err, WorkflowFileError):
            raise
        raise WorkflowFileError(f"workflow file {str(path)!r} cannot be read: {err}") from err
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        prompt, workflow = _png_workflow(path)
        if prompt is None:
            prompt = ui_to_api(workflow, object_info)  # type: ignore[arg-type]
        return prompt, workflow
    if path.suffix.lower() == ".png":
        raise WorkflowFileError(f"{path} is named .png but is not a PNG file (its first bytes are {raw[:8]!r})")
    data = decode_json(raw, str(path))
    return parse_workflow(data, object_info, str(path))


def decode_json(raw: bytes | str, name: str) -> Any:
    """The JSON in a workflow file or PNG chunk (UTF-8, with or without a byte order mark); WorkflowFileError
    for anything else, including numbers too long for Python and nesting too deep.

    A JSON object may repeat a key, and Python keeps the last value silently: a prompt whose node ids repeat
    would lose nodes. So the top object, and the prompt a POST /prompt body wraps, may not repeat keys."""
    repeated: dict[int, list[str]] = {}
    keep: list[Any] = []  # objects with repeated keys stay alive, so their ids are not reused during the parse

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            seen: set[str] = set()
            repeated[id(out)] = [k for k, _ in items if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
            keep.append(out)
        return out

    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        data = json.loads(text, object_pairs_hook=pairs)
    except UnicodeDecodeError as err:
        raise WorkflowFileError(f"{name} is not valid JSON: it is not UTF-8 text ({err})") from None
    except json.JSONDecodeError as err:
        raise WorkflowFileError(f"{name} is not valid JSON: {err}") from None
    except ValueError as err:  # an integer of more than 4300 digits
        raise WorkflowFileError(f"{name} is not a workflow: {err}") from None
    except RecursionError:
        raise WorkflowFileError(f"{name} nests JSON arrays or objects too deep to be a workflow") from None
    if repeated and isinstance(data, dict):
        for where, obj in (("", data), ("'prompt' ", data.get("prompt"))):
            keys = repeated.get(id(obj))
            if keys:
                listed = ", ".join(repr(k)[:60] for k in dict.fromkeys(keys[:10]))
                raise WorkflowFileError(f"{name}: the {where}object gives the key(s) {listed} more than once; JSON "
                                        "keeps only the last of each, so nodes or settings would be lost silently")
    return data


def _png_workflow(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(prompt, workflow) from a PNG's text chunks: each JSON, an object; the workflow only if there is no prompt."""
    from .pngmeta import read_png_texts

    try:
        texts = read_png_texts(path)
    except Exception as err:  # PIL: truncated or corrupt chunks, decompression bombs, zlib errors
        raise WorkflowFileError(f"{path} is a PNG that cannot be read: {err}") from err
    found: dict[str, Any] = {}
    for key in ("prompt", "workflow"):
        if key in texts:
            value = decode_json(texts[key], f"the {key!r} text chunk of {path}")
            if not isinstance(value, dict):
                raise WorkflowFileError(f"the {key!r} text chunk of {path} holds a JSON {type(value).__name__}; "
                                        "a workflow is a JSON object")
            found[key] = value
    if not found:
        raise WorkflowFileError(f"{path} is a PNG without 'prompt' or 'workflow' text chunks; "
                                "only images saved by ComfyUI or GenArt carry a workflow")
    return found.get("prompt"), found.get("workflow")  # type: ignore[return-value]


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
        extra_data = data.get("extra_data")
        extra = extra_data.get("extra_pnginfo") if isinstance(extra_data, dict) else None
        workflow = extra.get("workflow") if isinstance(extra, dict) else None
        return data["prompt"], workflow if isinstance(workflow, dict) else None
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
    """Apply `ID.INPUT=VALUE` overrides (VALUE parsed as JSON, else taken as a string) to a copy. Nodes that are
    not well formed are copied as they are; validation says what is wrong with them."""
    out = {k: dict(v, inputs=dict(v["inputs"])) if isinstance(v, dict) and isinstance(v.get("inputs"), dict)
           else dict(v, inputs={}) if isinstance(v, dict) and "inputs" not in v else v for k, v in prompt.items()}
    for item in overrides:
        target, sep, raw = item.partition("=")
        node_id, dot, name = target.partition(".")
        if not sep or not dot or not node_id or not name:
            raise WorkflowFileError(f"--set {item!r}: expected ID.INPUT=VALUE, for example --set 3.seed=42")
        if node_id not in out:
            raise WorkflowFileError(f"--set {item!r}: there is no node {node_id!r}; nodes are "
                                    f"{', '.join(map(str, out))}")
        if not isinstance(out[node_id], dict) or not isinstance(out[node_id]["inputs"], dict):
            raise WorkflowFileError(f"--set {item!r}: node {node_id!r} is not an object with an 'inputs' object")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[node_id]["inputs"][name] = value
    return out
