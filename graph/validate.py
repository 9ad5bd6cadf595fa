"""Validation: every problem of an API-format prompt, collected before anything runs.

The result is a `Plan`: the nodes that feed output nodes, in topological order, with their constants
converted to the declared types. Problems come back in ComfyUI's error shape (`WorkflowInvalid`).
"""
from __future__ import annotations

import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from pydantic import ValidationError

from .context import RunContext, RunSettings
from .errors import NodeError, WorkflowInvalid, clip, short_repr
from .node import Node
from .registry import Registry
from .safety import UnsafePathError
from .spec import NodeSpec, describe_validation_error

Link = tuple[str, int]


@dataclass(slots=True)
class PlannedNode:
    id: str
    cls: type[Node]
    spec: NodeSpec
    constants: dict[str, Any]
    links: dict[str, Link]
    title: str | None = None
    # Linked inputs that are widgets (a primitive fed by another node): checked when the value arrives.
    linked_widgets: tuple[str, ...] = ()


@dataclass(slots=True)
class Plan:
    nodes: dict[str, PlannedNode]
    order: list[str]
    outputs: list[str]
    consumers: dict[str, int] = field(default_factory=dict)


# The longest message a node's own check may give (its value goes whole into received_value).
MAX_MESSAGE = 1000
# Link ids and output indices are 64-bit numbers at most; a wider int in a link's place is no link (and no int
# of ours ever has to be printed with more digits than Python allows).
_WIDE = 1 << 64


def is_link(value: Any) -> bool:
    """[source node id, output index]: a string or int id, an int index (bools are neither). The exact types JSON
    gives are tested first: this runs on every input."""
    if not isinstance(value, list) or len(value) != 2:
        return False
    src, index = value
    if type(index) is int and type(src) is str and -_WIDE < index < _WIDE:
        return True
    return (isinstance(src, str) or _is_int(src)) and _is_int(index)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -_WIDE < value < _WIDE


def _unwrap(value: Any) -> Any:
    """ComfyUI's frontend sends list constants as {"__value__": [...]}, so they can't pass for links."""
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def types_match(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule: equal names, '*' matches anything, comma-separated unions."""
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


class _Collector:
    def __init__(self, prompt: dict[str, Any]) -> None:
        self.prompt = prompt
        self.errors: dict[str, list[NodeError]] = {}

    def add(self, node_id: str, error: NodeError) -> None:
        self.errors.setdefault(node_id, []).append(error)


def validate(prompt: Any, registry: Registry, settings: RunSettings | None = None,
             outputs: list[str] | None = None) -> Plan:
    """Check `prompt` (API format) and return its Plan; raise WorkflowInvalid listing every problem.

    `outputs` restricts the run to those output nodes (default: every output node in the prompt).
    """
    settings = settings or RunSettings()
    if not isinstance(prompt, dict) or not prompt:
        raise WorkflowInvalid(_top("invalid_prompt", "Invalid prompt: expected a non-empty object "
                                   "{node_id: {class_type, inputs}}"), {})
    prompt, twice = _string_ids(prompt)
    found = _Collector(prompt)
    for node_id, keys in twice.items():
        found.add(node_id, NodeError("invalid_prompt", f"Node id {short_repr(node_id)} is given {len(keys)} times (as "
                                     f"{', '.join(short_repr(k) for k in keys)}); each node needs its own id"))
    classes: dict[str, type[Node]] = {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            found.add(str(node_id), NodeError("invalid_prompt", "Node entry must be an object with a "
                                              "'class_type' string and an 'inputs' object"))
            continue
        cls = registry.get(node["class_type"])
        if cls is None:
            found.add(str(node_id), NodeError(
                "missing_node_type", f"Node type {short_repr(node['class_type'])} does not exist; "
                "run with --list-nodes to see the available ones"))
            continue
        if not isinstance(node.get("inputs", {}), dict):
            found.add(str(node_id), NodeError("invalid_prompt", f"'inputs' must be an object {{name: value or link}}, "
                                              f"got {type(node.get('inputs')).__name__}"))
            continue
        if node_id in twice:
            continue
        classes[str(node_id)] = cls

    if outputs is not None:
        unknown = [o for o in outputs if o not in classes or not classes[o].spec.output_node]
        if unknown:
            raise WorkflowInvalid(_top("prompt_no_outputs", "Requested outputs are not output nodes",
                                       ", ".join(unknown)), _group(found.errors, prompt, {}))
        wanted = list(outputs)
    else:
        wanted = [i for i, c in classes.items() if c.spec.output_node]
    if not wanted:
        raise WorkflowInvalid(_top("prompt_no_outputs", "Prompt has no outputs",
                                   "add an output node such as a save or preview node"),
                              _group(found.errors, prompt, {}))

    relevant = _ancestors(prompt, wanted)
    planned: dict[str, PlannedNode] = {}
    edges: list[tuple[str, str]] = []
    consumers: dict[str, int] = {}
    for node_id in relevant:
        if node_id not in classes:
            continue
        pn = _check_node(node_id, prompt[node_id], classes[node_id], prompt, classes, settings, found)
        planned[node_id] = pn
        for src, _ in pn.links.values():
            if src in prompt:
                edges.append((src, node_id))
            consumers[src] = consumers.get(src, 0) + 1
    graph = nx.DiGraph()
    graph.add_nodes_from(i for i in relevant if i in prompt)
    graph.add_edges_from(edges)

    cycle_error = None
    try:
        order = list(nx.topological_sort(graph))
    except nx.NetworkXUnfeasible:
        cycle = [u for u, _ in nx.find_cycle(graph)]
        names = " -> ".join(f"{n} ({clip(prompt[n].get('class_type'))})" for n in [*cycle, cycle[0]])
        for n in cycle:
            found.add(n, NodeError("dependency_cycle", f"Node is on a dependency cycle: {names}"))
        cycle_error = _top("dependency_cycle", "Workflow contains a dependency cycle", names)
        order = []
    if found.errors:
        dependents = _dependent_outputs(graph, wanted, found.errors)
        raise WorkflowInvalid(cycle_error or _top("prompt_outputs_failed_validation",
                                                  "Prompt outputs failed validation"),
                              _group(found.errors, prompt, dependents))
    return Plan(planned, order, wanted, consumers)


def _string_ids(prompt: dict[Any, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The prompt keyed by string ids (a Python caller may use ints), and the ids given more than once that way
    (1 and "1"), each with the keys that gave it."""
    if all(type(k) is str for k in prompt):
        return prompt, {}
    out: dict[str, Any] = {}
    keys: dict[str, list[Any]] = {}
    for key, node in prompt.items():
        node_id = key if isinstance(key, str) else short_repr(key)
        out[node_id] = node
        keys.setdefault(node_id, []).append(key)
    return out, {node_id: given for node_id, given in keys.items() if len(given) > 1}


def _ancestors(prompt: dict[str, Any], wanted: list[str]) -> list[str]:
    """Output nodes and everything that feeds them, by one breadth-first walk over the links."""
    seen = set(wanted)
    queue = deque(wanted)
    while queue:
        node = prompt.get(queue.popleft())
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for value in inputs.values():
            if type(value) is list and is_link(value):
                src = str(value[0])
                if src not in seen:
                    seen.add(src)
                    queue.append(src)
    return list(seen)


def _check_node(node_id: str, node: dict[str, Any], cls: type[Node], prompt: dict[str, Any],
                classes: dict[str, type[Node]], settings: RunSettings, found: _Collector) -> PlannedNode:
    spec = cls.spec
    given = node.get("inputs", {})
    constants: dict[str, Any] = {}
    links: dict[str, Link] = {}
    linked_widgets: list[str] = []
    for name, raw in given.items():
        ins = spec.inputs.get(name)
        if ins is None:
            found.add(node_id, NodeError(
                "invalid_input_name", f"Unknown input {short_repr(name)}; {spec.class_type} takes "
                f"{', '.join(spec.inputs) or 'no inputs'}", name if isinstance(name, str) else short_repr(name), raw))
            continue
        if type(raw) is list and is_link(raw):
            src, index = str(raw[0]), raw[1]
            links[name] = (src, index)
            if not ins.is_socket:
                linked_widgets.append(name)
            src_cls = classes.get(src)
            # Fast path for the common case: a known source whose output type matches exactly.
            if src_cls is None or not 0 <= index < len(src_cls.spec.outputs) or \
                    src_cls.spec.outputs[index].type != ins.type:
                _check_link(node_id, name, ins.type, src, index, prompt, classes, found)
            continue
        value = _unwrap(raw) if type(raw) is dict else raw
        if ins.is_socket and ins.adapter is None:
            found.add(node_id, NodeError(
                "invalid_input_type", f"Input {name!r} is a {ins.type} socket: it must be linked to "
                "another node's output, not given a constant", name, raw))
            continue
        try:
            constants[name] = ins.validate(value)
        except ValidationError as err:
            kind, message, extra = describe_validation_error(err, ins)
            found.add(node_id, NodeError(kind, message, name, value,
                                         extra={"input_config": list(ins.comfy_entry()), **extra}))
    for name in spec.must_give:
        if name not in given:
            found.add(node_id, NodeError("required_input_missing", f"Required input is missing: {name}", name))
    for name, default in spec.defaults.items():
        if name not in given:
            constants[name] = default
    meta = node.get("_meta")
    planned = PlannedNode(node_id, cls, spec, constants, links, meta.get("title") if isinstance(meta, dict) else None,
                          tuple(linked_widgets))
    if (spec.file_inputs or spec.has_checks) and node_id not in found.errors:
        for error in check_files(planned, settings):
            found.add(node_id, error)
    return planned


def check_files(pn: PlannedNode, settings: RunSettings) -> list[NodeError]:
    """The checks that depend on the world outside the prompt: file paths, and each node's own
    `check_constants` (files that must exist, pixel budgets). Re-run when a validated plan is reused."""
    errors = []
    for ins in pn.spec.file_inputs:
        if ins.name in pn.constants and ins.file is not None:
            try:
                settings.paths.resolve_input(ins.file.folder, pn.constants[ins.name])
            except (OSError, ValueError, RuntimeError) as err:  # UnsafePathError, or a folder that cannot be read
                errors.append(NodeError("custom_validation_failed", clip(str(err), MAX_MESSAGE), ins.name,
                                        pn.constants[ins.name]))
    if pn.spec.has_checks and not errors:
        ctx = RunContext(settings, pn.id, pn.spec.class_type)
        try:
            problems = pn.cls.check_constants(pn.constants, ctx)
        except KeyError as err:
            if err.args and err.args[0] in pn.linked_widgets:
                # A check of a widget that another node feeds: its value is checked when it arrives (run time).
                return errors
            return [_exception(err)]
        except UnsafePathError as err:
            return [NodeError("custom_validation_failed", clip(str(err), MAX_MESSAGE))]
        except Exception as err:  # noqa: BLE001 - a node's check failed: ComfyUI's answer, not a traceback
            return [_exception(err)]
        for name, message in problems:  # a node may quote the value whole: the report quotes it short
            errors.append(NodeError("custom_validation_failed", clip(message, MAX_MESSAGE), name,
                                    pn.constants.get(name)))
    return errors


def _exception(err: BaseException) -> NodeError:
    """ComfyUI's entry for a node whose own validation raised (exception_during_validation)."""
    return NodeError("exception_during_validation", f"Exception when validating node: {type(err).__name__}: "
                     f"{clip(str(err), 400)}", details=clip(str(err), 2000),
                     extra={"exception_type": f"{type(err).__module__}.{type(err).__qualname__}",
                            "traceback": traceback.format_tb(err.__traceback__)})


def recheck(plan: Plan, prompt: dict[str, Any], settings: RunSettings) -> None:
    """Re-run `check_files` on a reused plan; raise WorkflowInvalid if the world changed under it."""
    found = _Collector(prompt)
    for pn in plan.nodes.values():
        if pn.spec.file_inputs or pn.spec.has_checks:
            for error in check_files(pn, settings):
                found.add(pn.id, error)
    if found.errors:
        raise WorkflowInvalid(_top("prompt_outputs_failed_validation", "Prompt outputs failed validation"),
                              _group(found.errors, prompt, {}))


def _check_link(node_id: str, name: str, input_type: str, src: str, index: int, prompt: dict[str, Any],
                classes: dict[str, type[Node]], found: _Collector) -> None:
    if src not in prompt:
        found.add(node_id, NodeError("bad_linked_input", f"Input {name!r} is linked to node {short_repr(src)}, "
                                     "which is not in the workflow", name, [src, index]))
        return
    src_cls = classes.get(src)
    if src_cls is None:
        return  # the source's own error already says why
    outs = src_cls.spec.outputs
    if not 0 <= index < len(outs):
        found.add(node_id, NodeError(
            "bad_linked_input", f"Input {name!r} is linked to output {index} of node {src} "
            f"({src_cls.spec.class_type}), which has {len(outs)} output(s)", name, [src, index]))
        return
    out_type = outs[index].type
    if not types_match(out_type, input_type):
        found.add(node_id, NodeError(
            "return_type_mismatch", f"Return type mismatch between linked nodes: {name}, "
            f"received_type({out_type}) mismatch input_type({input_type})", name, [src, index],
            extra={"received_type": out_type, "input_type": input_type, "linked_node": [src, index]}))


def _dependent_outputs(graph: nx.DiGraph, wanted: list[str],
                       errors: dict[str, list[NodeError]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node_id in errors:
        if node_id in graph:
            reach = nx.descendants(graph, node_id) | {node_id}
            out[node_id] = [o for o in wanted if o in reach]
    return out


def _top(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _group(errors: dict[str, list[NodeError]], prompt: dict[str, Any],
           dependents: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    grouped = {}
    for node_id, errs in errors.items():
        node = prompt.get(node_id)
        class_type = node.get("class_type") if isinstance(node, dict) else None
        class_type = class_type if class_type is None or isinstance(class_type, str) else short_repr(class_type)
        grouped[node_id] = {"errors": [e.to_json() for e in errs],
                            "dependent_outputs": dependents.get(node_id, []),
                            "class_type": class_type}
    return grouped
