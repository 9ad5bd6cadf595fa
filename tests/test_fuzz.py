"""Workflow files come from strangers: mutated copies of the shipped workflows load and validate to a typed error
in ComfyUI's shape (or validate), and cheap ones run to success or a typed node error. Never a raw traceback.

Property-based (hypothesis), reproducible: `derandomize=True` draws the same cases on every run. CI runs about
2,000 cases in all; a developer runs the long fuzz with an environment variable:

    GENART_FUZZ_CASES=100000 pytest tests/test_fuzz.py -s     # 100,000 API and 20,000 UI mutations

and with GENART_FUZZ_COLLECT=1 every crash site is listed at the end instead of stopping (and shrinking) at
the first one.
"""
from __future__ import annotations

import collections
import copy
import json
import math
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, emoji_like_folder

LONG = int(os.environ.get("GENART_FUZZ_CASES", "0"))
COLLECT = os.environ.get("GENART_FUZZ_COLLECT") == "1"
API_CASES = LONG or 1200
UI_CASES = LONG // 5 or 600
FILE_CASES = LONG // 50 or 150
RUN_CASES = LONG // 500 or 50

API_FILES = sorted((REPO / "workflows" / "api").glob("*.json"))
UI_FILES = [*sorted((REPO / "workflows").glob("*.json")), REPO / "tests" / "data" / "ui_v1_subgraph.json"]


def fuzz_settings(cases: int) -> Any:
    return settings(max_examples=cases, derandomize=True, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


# -- what a stranger's file may hold ---------------------------------------------------------------------------

TRICKY_STRINGS = [
    "", " ", ".", "..", "./", "../x.png", "sub/../../x.png", "a/../b.png", "/etc/passwd", "/", "//x",
    "C:\\Windows\\win.ini", "C:x", "\\\\server\\share\\x", "\\x", "..\\..\\x.png", "a\x00b.png", "\x00",
    "genart-example-emoji.png\x00.txt", "x" * 256, "x" * 255 + ".png", "a/" * 2100 + "x", "x" * 5000,
    "é😀 名前.png", "\ud800", "\udcff.png", "x\udc80y", "~/.ssh/id_rsa", "~", "NUL", "CON", "aux.png",
    "genart-example-emoji.png", "./genart-example-emoji.png", "genart-example-emoji.png/", "emoji32",
    "emoji32/e00.png", "emoji32/groups.json", "genart-emoji32", "genart-emoji32/config.json",
    "genart-emoji32/diffusion_pytorch_model.safetensors", "stable-diffusion-v1-5", "MODEL_CARD.md", "tiny-vq",
    "tiny-kl", "tiny-unet", "tiny-cond-unet", "tiny-clip", "missing.png", "missing/", "%s%n%x", "{}", "[1, 0]",
    "nan", "inf", "-inf", "1e999", "0x10", "1_000", " 3 ", "true", "null", "\n", "a\nb", "\t", "\u202e", "\ufeff",
    "runs/cat", "runs/", "a b", "bad|char", "x" * 10**6,
]
WIDE_INTS = [0, -1, 1, 2, 7, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70, -2**63 - 1, -2**70, 10**30,
             10**400, 10**4000]
ODD_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.5, 1.5, 1e308, 5e-324, 1e-7, 3.0, -1.0, 255.0]


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(WIDE_INTS), st.floats(), st.sampled_from(ODD_FLOATS),
    st.text(max_size=12), st.sampled_from(TRICKY_STRINGS),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
)
odd_values = st.one_of(
    scalars, scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=6), scalars, max_size=3),
    st.lists(scalars, max_size=3).map(lambda v: {"__value__": v}),
    st.sampled_from([10, 200, 900]).map(nested),
)
ids = st.one_of(st.sampled_from(["1", "2", "3", "999", "", "0", "-1", "1.0", " 1", "x" * 300]),
                st.integers(-2, 60).map(str), st.integers(-2, 60), st.booleans(), st.none(),
                st.sampled_from([1.5, math.inf, math.nan, 10**4000, 2**70]), st.just([1]), st.just({"id": 1}))
ODD_INDICES = [2**31, 2**63, 2**70, 10**4000, 1.0, 0.5, math.inf, -math.inf, math.nan, True, False, "0", None, [0]]
indices = st.one_of(st.integers(-3, 8), st.sampled_from(ODD_INDICES), st.sampled_from(ODD_INDICES))
links = st.one_of(
    st.tuples(ids, indices).map(list),
    st.lists(ids, max_size=1), st.tuples(ids, indices, indices).map(list), st.just([]),
    ids,
)
keys = st.one_of(st.sampled_from(["seed", "image", "images", "width", "value", "__value__", "", "x" * 300, "class_type",
                                  "inputs", "_meta", "genart_prompt", "a\x00b", "\ud800"]), st.text(max_size=8))

numbers = st.one_of(st.sampled_from(WIDE_INTS), st.sampled_from(ODD_FLOATS), st.booleans(), st.floats(),
                    st.sampled_from(["1e999", "nan", "-inf", " 3 ", "0x10", "3.5"]))
API_OPS = ["set", "set", "set", "set_text", "set_text", "set_number", "set_number", "link", "link", "retype",
           "retype", "drop_input", "add_input", "inputs_odd", "class_type", "node_odd", "drop_node", "dup_node", "meta",
           "int_key", "relink", "relink", "no_inputs", "top"]
api_mutation = st.tuples(st.sampled_from(API_OPS), st.integers(0, 1 << 16), st.integers(0, 1 << 16), odd_values,
                         links, keys, ids, st.sampled_from(TRICKY_STRINGS), numbers)


def retyped(value: Any, pick: int) -> Any:
    """The same value as another type: what a hand-edited or foreign file often does."""
    options: list[Any] = [str(value) if not isinstance(value, int) or abs(value) < 1 << 64 else "9" * 30,
                          {"__value__": value}, [value], None]
    if isinstance(value, bool):
        options += [int(value), float(value), "true" if value else "false"]
    elif isinstance(value, (int, float)):
        nearby = value + 0.5 if isinstance(value, float) else float(value) if abs(value) < 1 << 1000 else -value
        options += [not value, nearby, -value, value * 2**64, float("nan"), float("inf")]
    elif isinstance(value, str):
        options += [len(value), value * 50, value + "\x00", "../" + value, "/" + value, value.upper(), True]
    return options[pick % len(options)]


def mutate_api(prompt: dict[str, Any], mutations: list[tuple], class_types: list[str]) -> Any:
    for op, a, b, value, link, key, node_key, text, number in mutations:
        if not isinstance(prompt, dict):
            return prompt
        if op == "top":
            return value if a % 4 else {}
        node_ids = list(prompt)
        if not node_ids:
            prompt[node_key if isinstance(node_key, (str, int)) else "1"] = {"class_type": class_types[a %
                                                                             len(class_types)], "inputs": {}}
            continue
        node_id = node_ids[a % len(node_ids)]
        node = prompt[node_id]
        if op == "node_odd":
            prompt[node_id] = value
        elif op == "drop_node":
            del prompt[node_id]
        elif op == "dup_node":
            new_key = node_key if isinstance(node_key, (str, int)) and not isinstance(node_key, bool) else "dup"
            prompt[new_key] = copy.deepcopy(node)
        elif op == "int_key":
            if isinstance(node_id, str) and node_id.lstrip("-").isdigit():
                prompt[int(node_id)] = copy.deepcopy(node) if b % 2 else prompt.pop(node_id)
        elif not isinstance(node, dict):
            continue
        elif op == "class_type":
            node["class_type"] = class_types[b % len(class_types)] if b % 3 else value
        elif op == "meta":
            node["_meta"] = value
        elif op == "no_inputs":
            node.pop("inputs", None)
        elif op == "inputs_odd":
            node["inputs"] = value
        elif not isinstance(node.get("inputs"), dict):
            continue
        else:
            inputs = node["inputs"]
            names = list(inputs)
            if op in ("set_text", "set_number"):  # onto an input of that kind when the node has one
                kind = str if op == "set_text" else (int, float)
                names = [n for n in names if isinstance(inputs[n], kind)] or names
            name = names[b % len(names)] if names else key
            if op == "set":
                inputs[name] = value
            elif op == "set_text":
                inputs[name] = text
            elif op == "set_number":
                inputs[name] = number
            elif op == "link":
                inputs[name] = link
            elif op == "retype" and name in inputs:
                inputs[name] = retyped(inputs[name], b // 7)
            elif op == "drop_input":
                inputs.pop(name, None)
            elif op == "add_input":
                inputs[key] = value
            elif op == "relink":
                inputs[name] = [node_ids[b % len(node_ids)], b % 3]
    return prompt


UI_OPS = ["node_field", "node_field", "widget", "widget", "widget", "widgets_len", "slot_link", "slot_link",
          "slot_link", "slot_field", "slot_field", "slots_odd", "output_field", "output_field", "drop_node",
          "dup_node", "node_odd", "node_type", "node_type", "mode", "mode", "link_field", "link_field", "link_field",
          "link_field", "link_odd", "drop_link", "dup_link", "top_field", "subgraph", "subgraph"]
NODE_FIELDS = ["id", "type", "mode", "widgets_values", "inputs", "outputs", "order", "title", "flags", "properties",
               "widgets_values_named"]
TOP_FIELDS = ["links", "nodes", "definitions", "version", "extra", "last_link_id", "prompt", "groups"]
ui_mutation = st.tuples(st.sampled_from(UI_OPS), st.integers(0, 1 << 16), st.integers(0, 1 << 16), odd_values, ids,
                        st.sampled_from(NODE_FIELDS), st.sampled_from(TOP_FIELDS), indices,
                        st.one_of(st.sampled_from(TRICKY_STRINGS), numbers))
VIRTUAL = ["Reroute", "PrimitiveNode", "Note", "MarkdownNote", "GenArtPatternImage", "GenArtSaveImage",
           "UnknownCustomNode", ""]


def _graphs(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """The root graph and every subgraph definition: each has nodes and links to mutate."""
    out = [workflow]
    definitions = workflow.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    if isinstance(subgraphs, list):
        out += [g for g in subgraphs if isinstance(g, dict)]
    return out


def mutate_ui(workflow: dict[str, Any], mutations: list[tuple]) -> Any:
    for op, a, b, value, some_id, field, top_field, index_value, widget_value in mutations:
        if not isinstance(workflow, dict):
            return workflow
        if op == "top_field":
            workflow[top_field] = value
            continue
        graphs = _graphs(workflow)
        graph = graphs[a % len(graphs)]
        if op == "subgraph":
            if graph is not workflow:
                graph[["inputs", "outputs", "inputNode", "outputNode", "id"][b % 5]] = value
            continue
        nodes, links = graph.get("nodes"), graph.get("links")
        if op.startswith("link") or op in ("drop_link", "dup_link"):
            if not isinstance(links, list) or not links:
                continue
            index = b % len(links)
            link = links[index]
            if op == "link_odd":
                links[index] = value
            elif op == "drop_link":
                del links[index]
            elif op == "dup_link":
                links.append(copy.deepcopy(link))
            elif isinstance(link, list) and link:
                position = a % (len(link) + 1)
                if position == len(link):
                    del link[(a // 7) % len(link):]
                else:  # ids at 0, 1, 3; slots at 2, 4
                    link[position] = value if b % 3 == 0 else index_value if position in (2, 4) else some_id
            elif isinstance(link, dict):
                name = ["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"][a % 6]
                if b % 5 == 0:
                    link.pop(name, None)
                else:
                    link[name] = value if b % 3 == 0 else index_value if "slot" in name else some_id
            continue
        if not isinstance(nodes, list) or not nodes:
            continue
        index = b % len(nodes)
        node = nodes[index]
        if op == "node_odd":
            nodes[index] = value
            continue
        if op == "drop_node":
            del nodes[index]
            continue
        if op == "dup_node":
            nodes.append(copy.deepcopy(node))
            continue
        if not isinstance(node, dict):
            continue
        if op == "node_field":
            node[field] = some_id if field == "id" and a % 2 else value
        elif op == "node_type":
            node["type"] = VIRTUAL[a % len(VIRTUAL)]
        elif op == "mode":
            node["mode"] = [0, 2, 4, 4, 1, 3, None, "4"][a % 8]
        elif op in ("widget", "widgets_len"):
            values = node.get("widgets_values")
            if not isinstance(values, list):
                node["widgets_values"] = value
            elif op == "widgets_len":
                del values[a % (len(values) + 1):]
                if b % 2:
                    values.append(value)
            elif values:
                choice = b % 4
                values[a % len(values)] = (value if choice == 0 else widget_value if choice < 3
                                           else retyped(values[a % len(values)], b // 4))
        elif op in ("slot_link", "slot_field", "slots_odd", "output_field"):
            slots = node.get("outputs" if op == "output_field" else "inputs")
            if op == "slots_odd" or not isinstance(slots, list) or not slots:
                node["inputs"] = value
                continue
            slot = slots[a % len(slots)]
            if not isinstance(slot, dict):
                continue
            if op == "slot_link":
                slot["link"] = [some_id, index_value, value][b % 3]
            elif op == "slot_field":
                slot[["name", "type", "widget", "link"][a % 4]] = value
            else:
                slot[["links", "type", "name", "slot_index"][a % 4]] = value
    return workflow


# -- the engine under test --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(pack, tmp_path_factory):
    """Folders with the example image, an image folder named as the evaluation workflow expects and the tiny test
    models (so every shipped workflow validates before mutation), the registry and its object_info."""
    import torch
    from tiny_models import write_all

    from comfyui_genart.graph.api import make_settings
    from comfyui_genart.graph.comfy import object_info
    from comfyui_genart.graph.executor import Executor

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fuzz")
    emoji_like_folder(root / "input" / "emoji32", count=24)
    write_all(root / "models")
    settings_ = make_settings(input_dir=root / "input", output_dir=root / "output", temp_dir=root / "temp",
                              models_dirs=[root / "models"], device="cpu")
    info = object_info(pack.REGISTRY)
    return {"root": root, "settings": settings_, "info": info, "executor": Executor(pack.REGISTRY, settings_),
            "class_types": sorted(info), "registry": pack.REGISTRY}


class Tally:
    """Outcomes per test (printed with -s) and, with GENART_FUZZ_COLLECT=1, every untyped crash site."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.crashes: dict[str, tuple[int, str]] = {}

    def crash(self, err: BaseException, case: str) -> None:
        frames = traceback.extract_tb(err.__traceback__)
        ours = [f for f in frames if f.filename.startswith(str(REPO))] or frames
        site = f"{type(err).__name__} at {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else repr(err)
        count, example = self.crashes.get(site, (0, case))
        self.crashes[site] = (count + 1, example)
        self.outcomes["UNTYPED " + type(err).__name__] += 1
        if not COLLECT:
            raise err

    def report(self) -> None:
        total = sum(self.outcomes.values())
        print(f"\n{self.name}: {total} cases: {dict(sorted(self.outcomes.items()))}")
        for site, (count, example) in self.crashes.items():
            print(f"  {count} x {site}\n    e.g. {example[:600]}")


def check_typed(err: BaseException) -> str:
    """The outcome name of a typed error, after checking that its report renders (summary, JSON body)."""
    from comfyui_genart.graph.errors import WorkflowInvalid

    if isinstance(err, WorkflowInvalid):
        text = err.summary()
        json.dumps(err.to_json(), default=str)
        assert len(text) < 200_000, "an error summary should quote long values, not print them whole"
        kinds = sorted({e["type"] for entry in err.node_errors.values() for e in entry["errors"]})
        kinds = kinds or [err.error["type"]]
        # A node's own check that raised is reported in ComfyUI's shape, but it is a bug in that check.
        assert "exception_during_validation" not in kinds, text
        return "invalid:" + ",".join(kinds[:2])
    str(err)
    return type(err).__name__


def load_and_validate(engine: dict[str, Any], data: Any) -> str:
    """What the CLI does before running anything, in process: parse (converting UI format), apply overrides,
    validate."""
    from comfyui_genart.graph.workflow_io import apply_overrides, parse_workflow

    prompt, _ = parse_workflow(data, engine["info"])
    prompt = apply_overrides(prompt, [])
    engine["executor"].validate(prompt)
    return "valid"


def _typed_errors() -> tuple[type[BaseException], ...]:
    from comfyui_genart.graph.errors import WorkflowInvalid
    from comfyui_genart.graph.ui_format import UIConversionError
    from comfyui_genart.graph.workflow_io import WorkflowFileError

    return WorkflowInvalid, WorkflowFileError, UIConversionError


def _case_text(data: Any) -> str:
    try:
        return json.dumps(data, default=repr)[:2000]
    except (ValueError, RecursionError):
        return repr(data)[:2000]


def _run_case(tally: Tally, attempt: Any, data: Any, describe: Any) -> None:
    """Count the outcome of one case; an untyped exception (or a typed error whose report is broken) is a crash."""
    try:
        try:
            outcome = attempt()
        except _typed_errors() as err:
            outcome = check_typed(err)
    except Exception as err:  # noqa: BLE001 - the point of the test
        tally.crash(err, describe(data))
        return
    tally.outcomes[outcome] += 1


API_SEEDS = {p.stem: p.read_text() for p in API_FILES}
UI_SEEDS = {p.stem: p.read_text() for p in UI_FILES}


@pytest.fixture(scope="module")
def tallies() -> dict[str, Tally]:
    return {"api": Tally(f"API prompts ({API_CASES} asked)"), "ui": Tally(f"UI workflows ({UI_CASES} asked)"),
            "files": Tally(f"workflow files ({FILE_CASES} asked)"), "run": Tally(f"runs ({RUN_CASES} asked)")}


@fuzz_settings(API_CASES)
@given(seed=st.sampled_from(sorted(API_SEEDS)), mutations=st.lists(api_mutation, min_size=1, max_size=4))
def test_fuzz_api_prompts_validate_or_give_typed_errors(engine, tallies, seed, mutations):
    prompt = mutate_api(json.loads(API_SEEDS[seed]), mutations, engine["class_types"])
    _run_case(tallies["api"], lambda: load_and_validate(engine, prompt), prompt, lambda d: f"{seed}: {_case_text(d)}")


@fuzz_settings(UI_CASES)
@given(seed=st.sampled_from(sorted(UI_SEEDS)), mutations=st.lists(ui_mutation, min_size=1, max_size=4))
def test_fuzz_ui_workflows_convert_and_validate_or_give_typed_errors(engine, tallies, seed, mutations):
    workflow = mutate_ui(json.loads(UI_SEEDS[seed]), mutations)
    _run_case(tallies["ui"], lambda: load_and_validate(engine, workflow), workflow,
              lambda d: f"{seed}: {_case_text(d)}")


# -- files: bytes that are almost a workflow -----------------------------------------------------------------------

FILE_OPS = ["truncate", "flip", "insert", "delete", "wrap_deep", "bom", "dup_key", "huge_int", "png", "png_chunk",
            "utf16", "empty"]
file_mutation = st.tuples(st.sampled_from(FILE_OPS), st.integers(0, 1 << 20), st.integers(0, 255),
                          st.sampled_from([b"\x00", b"\xff\xfe", b'"', b"{", b"]", b",", b"NaN", b"1e999", b"\\ud800",
                                           b"\\u0000", b"-", b"[" * 5000, b"9" * 5000]))


def mutate_bytes(raw: bytes, op: str, at: int, byte: int, chunk: bytes) -> tuple[bytes, str]:
    """(file content, suffix) for one mutation of a workflow file."""
    at = at % (len(raw) + 1)
    if op == "truncate":
        return raw[:at], ".json"
    if op == "flip":
        return raw[:at] + bytes([byte]) + raw[at + 1:], ".json"
    if op == "insert":
        return raw[:at] + chunk + raw[at:], ".json"
    if op == "delete":
        return raw[:at] + raw[at + 1 + byte:], ".json"
    if op == "wrap_deep":
        return b"[" * (byte * 40) + raw + b"]" * (byte * 40), ".json"
    if op == "bom":
        return b"\xef\xbb\xbf" + raw, ".json"
    if op == "dup_key":  # the first key again, in front: JSON keeps the last, so this is a silent loss
        first = next(iter(json.loads(raw)))
        return b"{" + json.dumps(first).encode() + b": {}, " + raw.lstrip()[1:], ".json"
    if op == "huge_int":
        return raw.replace(b"96", b"9" * (4000 + byte * 10), 1).replace(b"0.5", b"1e999", 1), ".json"
    if op == "utf16":
        return raw.decode().encode("utf-16"), ".json"
    if op == "empty":
        return b"", [".json", ".png"][byte % 2]
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    text = raw.decode("utf-8", "replace")
    key = "workflow" if '"nodes"' in text else "prompt"
    info.add_text(key, text[:at] if op == "png_chunk" else text)
    if byte % 3 == 0:
        info.add_text("prompt" if key == "workflow" else "workflow", ["[]", "null", "{", "3", '"x"'][byte % 5])
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG", pnginfo=info)
    data = buf.getvalue()
    if op == "png" and byte % 2:  # a corrupt chunk somewhere past the header
        cut = 8 + at % max(1, len(data) - 8)
        data = data[:cut] + bytes([byte]) + data[cut + 1:]
    return data, ".png"


@fuzz_settings(FILE_CASES)
@given(seed=st.sampled_from(sorted(API_SEEDS) + [f"ui:{k}" for k in sorted(UI_SEEDS)]), mutation=file_mutation)
def test_fuzz_workflow_files_load_or_give_typed_errors(engine, tallies, seed, mutation):
    from comfyui_genart.graph.workflow_io import apply_overrides, load_workflow

    raw = (UI_SEEDS[seed[3:]] if seed.startswith("ui:") else API_SEEDS[seed]).encode()
    content, suffix = mutate_bytes(raw, *mutation)
    path = engine["root"] / f"case{suffix}"
    path.write_bytes(content)

    def attempt() -> str:
        prompt, _ = load_workflow(path, engine["info"])
        engine["executor"].validate(apply_overrides(prompt, []))
        return "valid"

    _run_case(tallies["files"], attempt, None, lambda _: f"{seed} {mutation[0]} {content[:300]!r}")


# -- running: cheap workflows with mutated constants ----------------------------------------------------------------

RUN_SEED = json.loads((REPO / "workflows" / "api" / "image-utilities.json").read_text())
RUN_STRINGS = ["checkerboard", "gradient", "solid", "nearest", "bilinear", "bicubic", "area", "lanczos", "runs/cat",
               "a/b/c", "../x", "x" * 300, "a\x00b", "", " ", "bad|char", "dir/", "é"]
run_change = st.tuples(st.sampled_from(["1", "2", "3", "4"]), st.integers(0, 50), st.integers(0, 9),
                       st.integers(-3, 130), st.floats(-0.5, 1.5), st.sampled_from(RUN_STRINGS),
                       scalars.filter(lambda v: not isinstance(v, int) or abs(v) < 200))


def changed(value: Any, kind: int, number: int, real: float, text: str, odd: Any) -> Any:
    """A constant changed mostly within its type (so the run goes on to the nodes), sometimes to anything."""
    if kind == 0:
        return odd
    if isinstance(value, bool):
        return bool(number % 2)
    if isinstance(value, int):
        return number
    if isinstance(value, float):
        return real
    return text


@fuzz_settings(RUN_CASES)
@given(changes=st.lists(run_change, min_size=1, max_size=4))
def test_fuzz_running_image_utilities_gives_outputs_or_typed_errors(engine, tallies, changes):
    from comfyui_genart.graph.errors import NodeExecutionError
    from comfyui_genart.graph.executor import Executor

    prompt = copy.deepcopy(RUN_SEED)
    for node_id, pick, *how in changes:
        inputs = prompt[node_id]["inputs"]
        names = [n for n, v in inputs.items() if not isinstance(v, list)]
        name = names[pick % len(names)]
        inputs[name] = changed(inputs[name], *how)
    executor = Executor(engine["registry"], engine["settings"])

    def attempt() -> str:
        try:
            executor.run(prompt)
        except NodeExecutionError as err:
            json.dumps(err.to_json(), default=str)
            # A node that fails on an odd value says why; a KeyError or AttributeError is a bug in the node.
            assert not isinstance(err.cause, (KeyError, AttributeError, NameError, UnboundLocalError)), err
            return f"node error: {type(err.cause).__name__}"
        return "ran"

    _run_case(tallies["run"], attempt, prompt, _case_text)


def test_fuzz_tallies(tallies):
    """The counts of every fuzz above (pytest -s prints them), and with GENART_FUZZ_COLLECT=1 every crash site
    they found."""
    ran = [t for t in tallies.values() if t.outcomes]
    if not ran:
        pytest.skip("no fuzz test ran")
    for tally in ran:
        tally.report()
    crashes = [f"{t.name}: {site}" for t in ran for site in t.crashes]
    assert not crashes, f"{len(crashes)} untyped crash site(s): {crashes}"
