"""ComfyUI UI-format workflows (what the frontend saves) converted to API-format prompts.

ComfyUI only does this in its JavaScript frontend ("Export (API)", graphToPrompt); this is a headless
reimplementation driven by the node schemas that GET /object_info returns. It covers the frontend's
rules: positional widgets_values with helper slots (control_after_generate, upload buttons), links in
array or object form, muted and bypassed nodes, the frontend-only nodes (Reroute, PrimitiveNode, Note,
MarkdownNote) and subgraphs, flattened to execution ids "<instance>:<inner>".
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["UIConversionError", "UnknownNodeTypeError", "is_ui_workflow", "ui_to_api"]

MUTED, BYPASSED = 2, 4
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
VIRTUAL_TYPES = NOTE_TYPES | {"Reroute", "PrimitiveNode"}
# Input types the frontend draws as widgets; any other type is a socket. WEBCAM and LOAD_3D* are the
# frontend-only widgets of ComfyUI's webcam and 3D loader nodes.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN",
                          "WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION"})
THREE_D_TYPES = frozenset({"LOAD_3D", "LOAD_3D_ANIMATION"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
SEED_NAMES = frozenset({"seed", "noise_seed"})
# The ids of a subgraph definition's input and output pseudo-nodes when the file does not say.
DEFAULT_INPUT_NODE, DEFAULT_OUTPUT_NODE = "-10", "-20"


class UIConversionError(ValueError):
    """A UI workflow that cannot be converted; the message names the node id, type and what is wrong."""


class UnknownNodeTypeError(UIConversionError):
    """Active nodes whose type is neither in object_info nor a frontend-only node (missing custom
    nodes, nodes of a newer ComfyUI, API nodes)."""

    def __init__(self, nodes: list[tuple[str, str]]) -> None:
        self.class_types = sorted({class_type for _, class_type in nodes})
        listed = ", ".join(f"node {node_id} ({class_type})" for node_id, class_type in nodes)
        super().__init__(f"unknown node types: {listed} (not in this pack, its headless stand-ins or an "
                         "--object-info given: a custom node pack that is not installed, or a newer ComfyUI's node)")


def is_ui_workflow(data: object) -> bool:
    """True for a UI-format workflow (an API-format prompt is a dict of node ids instead)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list)


def ui_to_api(workflow: dict, object_info: Mapping[str, dict]) -> dict[str, dict]:
    """The API-format prompt that ComfyUI's "Export (API)" writes for `workflow`.

    `object_info` maps class_type to its GET /object_info entry; it decides which inputs are widgets
    and in which order widgets_values lists them.
    """
    if not is_ui_workflow(workflow):
        raise UIConversionError("not a UI-format workflow: expected a dict with 'nodes' and 'links' lists")
    try:
        return _Converter(workflow, object_info).convert()
    except RecursionError:
        raise UIConversionError("the workflow nests too deep to convert (chains of reroutes or subgraphs inside "
                                "subgraphs hundreds of levels deep)") from None


@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int


@dataclass(frozen=True)
class _Graph:
    """The root graph or one subgraph definition."""

    name: str
    nodes: dict[str, dict[str, Any]]
    links: dict[str, _Link]
    inputs: list[dict[str, Any]]  # a subgraph's inputs; empty for the root graph
    input_node: str
    output_node: str


@dataclass(frozen=True)
class _Scope:
    """One place a graph runs: the root, or one subgraph instance (nested ones have longer paths)."""

    graph: _Graph
    path: tuple[str, ...]
    parent: _Scope | None = None
    instance: dict[str, Any] | None = None

    def exec_id(self, node_id: str) -> str:
        return ":".join((*self.path, node_id))


@dataclass(frozen=True)
class _Widget:
    name: str
    required: bool
    before: int  # helper slots saved before the value (the 3D loader's three buttons)
    after: int  # helper slots saved after it (control_after_generate, upload button)
    default: Any = None  # what the frontend shows before anything is saved; None: no default


@dataclass(frozen=True)
class _Const:
    """An input resolved to a constant (a PrimitiveNode's or a subgraph instance's widget value)."""

    value: Any


_Resolved = list[Any] | _Const | None  # [exec_id, output_index], a constant, or nothing connected


class _Converter:
    def __init__(self, workflow: dict, object_info: Mapping[str, dict]) -> None:
        self.object_info = object_info
        self.root = _parse_graph(workflow, "workflow")
        self.subgraphs: dict[str, _Graph] = {}
        self._collect_definitions(workflow)
        self._widget_cache: dict[str, list[_Widget]] = {}

    def _collect_definitions(self, container: dict[str, Any]) -> None:
        definitions = container.get("definitions")
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
        if subgraphs is not None and not isinstance(subgraphs, list):
            raise UIConversionError(f"definitions.subgraphs must be a list, got {type(subgraphs).__name__}")
        for definition in subgraphs or []:
            if not isinstance(definition, dict) or "id" not in definition:
                raise UIConversionError("definitions.subgraphs holds an entry without an id")
            sub_id = _id(definition["id"], "definitions.subgraphs: a subgraph id")
            if sub_id not in self.subgraphs:
                self.subgraphs[sub_id] = _parse_graph(definition, f"subgraph {sub_id}")
                self._collect_definitions(definition)

    def convert(self) -> dict[str, dict]:
        active = list(self._walk(_Scope(self.root, ())))
        unknown = [(scope.exec_id(node_id), node["type"]) for scope, node_id, node in active
                   if node["type"] not in self.object_info]
        if unknown:
            raise UnknownNodeTypeError(unknown)
        prompt = {scope.exec_id(node_id): self._convert_node(scope, node_id, node) for scope, node_id, node in active}
        # Inputs fed by muted nodes (or nodes inside muted subgraphs) are dropped, as the frontend does.
        for entry in prompt.values():
            inputs = entry["inputs"]
            for name in [n for n, v in inputs.items() if isinstance(v, list) and v[0] not in prompt]:
                del inputs[name]
        return prompt

    def _walk(self, scope: _Scope) -> Iterator[tuple[_Scope, str, dict[str, Any]]]:
        """Every node that runs, in the saved execution order, subgraph instances expanded."""
        for node_id, node in sorted(scope.graph.nodes.items(), key=lambda item: _order(item[1])):
            if node.get("mode") in (MUTED, BYPASSED) or node["type"] in VIRTUAL_TYPES:
                continue
            if node["type"] in self.subgraphs:
                yield from self._walk(self._child(scope, node_id, node))
            else:
                yield scope, node_id, node

    def _child(self, scope: _Scope, node_id: str, node: dict[str, Any]) -> _Scope:
        graph = self.subgraphs[node["type"]]
        outer: _Scope | None = scope
        while outer is not None:
            if outer.graph is graph:
                raise UIConversionError(f"node {scope.exec_id(node_id)} ({node['type']}): subgraph contains itself")
            outer = outer.parent
        return _Scope(graph, (*scope.path, node_id), scope, node)

    # -- one node ---------------------------------------------------------------------------------

    def _convert_node(self, scope: _Scope, node_id: str, node: dict[str, Any]) -> dict[str, Any]:
        class_type = node["type"]
        schema = self.object_info[class_type]
        where = f"node {scope.exec_id(node_id)} ({class_type})"
        widgets = self._widgets(class_type)
        inputs = {name: _wrap(value) for name, value in _widget_values(node, widgets, where).items()}
        linked = set()
        for slot in _ui_inputs(node, where):
            if slot.get("link") is None:
                continue
            name = slot["name"]
            linked.add(name)
            resolved = self._resolve_link(scope, slot["link"], slot.get("type"), set(), f"{where} input '{name}'")
            if isinstance(resolved, _Const):
                inputs[name] = _wrap(resolved.value)
            elif resolved is not None:
                inputs[name] = resolved
        missing = [w.name for w in widgets if w.required and w.name not in inputs and w.name not in linked]
        if missing:
            raise UIConversionError(
                f"{where}: widgets_values {_clipped(node.get('widgets_values'))} has no value for required widget(s) "
                f"{', '.join(missing)}; widget order: {', '.join(_layout(widgets))}")
        title = node.get("title") if isinstance(node.get("title"), str) else None
        title = title or schema.get("display_name") or class_type
        return {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}

    def _widgets(self, class_type: str) -> list[_Widget]:
        """The node's widgets in the order widgets_values lists them."""
        if class_type not in self._widget_cache:
            self._widget_cache[class_type] = list(_schema_widgets(self.object_info[class_type]))
        return self._widget_cache[class_type]

    # -- following links --------------------------------------------------------------------------

    def _resolve_link(self, scope: _Scope, link_id: Any, want_type: Any, visited: set[tuple[str, int]],
                      where: str) -> _Resolved:
        """What feeds the input that link `link_id` (in `scope`'s graph) ends at."""
        link = scope.graph.links.get(_link_key(link_id))  # type: ignore[arg-type]
        if link is None:
            raise UIConversionError(f"{where}: link {_clipped(link_id)} is not in {scope.graph.name}'s links")
        if link.origin_id == scope.graph.input_node and scope.instance is not None:
            return self._resolve_subgraph_input(scope, link.origin_slot, visited, where)
        origin = scope.graph.nodes.get(link.origin_id)
        if origin is None:
            raise UIConversionError(f"{where}: link {link_id} comes from node {scope.exec_id(link.origin_id)}, "
                                    "which is not in the workflow")
        return self._resolve_output(scope, link.origin_id, origin, link.origin_slot, want_type, visited)

    def _resolve_output(self, scope: _Scope, node_id: str, node: dict[str, Any], slot: int, want_type: Any,
                        visited: set[tuple[str, int]]) -> _Resolved:
        exec_id = scope.exec_id(node_id)
        where = f"node {exec_id} ({node['type']})"
        if (exec_id, slot) in visited:
            raise UIConversionError(f"{where}: links loop back through output {slot}")
        visited.add((exec_id, slot))
        node_type = node["type"]
        # Frontend-only nodes never run, so their mode does not matter.
        if node_type == "Reroute":
            inputs = _ui_inputs(node, where)
            if not inputs or inputs[0].get("link") is None:
                return None
            return self._resolve_link(scope, inputs[0]["link"], want_type, visited, f"{where} input 0")
        if node_type == "PrimitiveNode":
            values = node.get("widgets_values")
            return _Const(values[0]) if isinstance(values, list) and values else None
        if node_type in NOTE_TYPES:
            return None
        if node.get("mode") == BYPASSED:
            inputs = self._node_inputs(scope, node_id, node)
            outputs = node.get("outputs") if isinstance(node.get("outputs"), list) else []
            output = outputs[slot] if 0 <= slot < len(outputs) else None
            output_type = output.get("type") if isinstance(output, dict) else None
            index = _bypass_input(inputs, slot, output_type, want_type)
            if index is None or inputs[index].get("link") is None:
                return None
            return self._resolve_link(scope, inputs[index]["link"], inputs[index].get("type"), visited,
                                      f"{where} input {index}")
        if node_type in self.subgraphs and node.get("mode") != MUTED:
            return self._resolve_subgraph_output(self._child(scope, node_id, node), slot, want_type, visited, where)
        return [exec_id, slot]

    def _node_inputs(self, scope: _Scope, node_id: str, node: dict[str, Any]) -> list[dict[str, Any]]:
        """The node's input slots; a subgraph instance has one per subgraph input (its saved list may
        leave out unlinked widget inputs)."""
        saved = _ui_inputs(node, f"node {scope.exec_id(node_id)} ({node['type']})")
        graph = self.subgraphs.get(node["type"])
        if graph is None:
            return saved
        by_name = {slot.get("name"): slot for slot in saved}
        return [by_name.get(sub_input.get("name"), {"type": sub_input.get("type"), "link": None})
                for sub_input in graph.inputs]

    def _resolve_subgraph_input(self, scope: _Scope, index: int, visited: set[tuple[str, int]],
                                where: str) -> _Resolved:
        """An inner link that starts at the subgraph's input node: follow the instance's input outside,
        or take the instance's (promoted) widget value for it."""
        assert scope.parent is not None and scope.instance is not None
        instance_id = scope.path[-1]
        if not 0 <= index < len(scope.graph.inputs):
            raise UIConversionError(f"{where}: subgraph {scope.graph.name} has no input {index}")
        slot = self._node_inputs(scope.parent, instance_id, scope.instance)[index]
        if slot.get("link") is not None:
            return self._resolve_link(scope.parent, slot["link"], slot.get("type"), visited,
                                      f"node {scope.parent.exec_id(instance_id)} ({scope.instance['type']}) "
                                      f"input '{scope.graph.inputs[index].get('name')}'")
        values = self._promoted_values(scope)
        name = scope.graph.inputs[index].get("name")
        return _Const(values[name]) if name in values else None

    def _promoted_values(self, scope: _Scope) -> dict[str, Any]:
        """The instance's widget values by subgraph input name. An unlinked subgraph input that feeds a
        widget inside becomes a widget on the instance; widgets_values lists those in input order."""
        assert scope.instance is not None
        named = scope.instance.get("widgets_values_named")
        if isinstance(named, dict):
            return named
        values = scope.instance.get("widgets_values")
        if isinstance(values, dict):
            return values
        if not isinstance(values, list):
            return {}
        promoted = [(_clipped(sub_input.get("name")) if not isinstance(sub_input.get("name"), str)
                     else sub_input["name"], controls)
                    for index, sub_input in enumerate(scope.graph.inputs)
                    if (controls := self._promoted_widget(scope.graph, index)) is not None]
        # Older frontends also saved the control_after_generate value of a promoted seed widget.
        skip_controls = len(values) > len(promoted)
        result, position = {}, 0
        for name, controls in promoted:
            if position < len(values):
                result[name] = values[position]
            position += 1 + (controls if skip_controls else 0)
        return result

    def _promoted_widget(self, graph: _Graph, index: int) -> int | None:
        """None if subgraph input `index` feeds no widget inside, else how many helper slots that widget has."""
        for link_id, link in graph.links.items():
            target = graph.nodes.get(link.target_id)
            if link.origin_id != graph.input_node or link.origin_slot != index or target is None:
                continue
            slot = next((s for s in _ui_inputs(target, graph.name) if _link_key(s.get("link")) == link_id), None)
            if slot is None or "widget" not in slot:
                continue
            known = self._widgets(target["type"]) if target["type"] in self.object_info else []
            return next((w.after for w in known if w.name == slot["name"]), 0)
        return None

    def _resolve_subgraph_output(self, scope: _Scope, slot: int, want_type: Any, visited: set[tuple[str, int]],
                                 where: str) -> _Resolved:
        """Output `slot` of a subgraph instance: whatever feeds the subgraph's output node inside."""
        graph = scope.graph
        link = next((link for link in graph.links.values()
                     if link.target_id == graph.output_node and link.target_slot == slot), None)
        if link is None:
            return None
        if link.origin_id == graph.input_node:
            return self._resolve_subgraph_input(scope, link.origin_slot, visited, where)
        origin = graph.nodes.get(link.origin_id)
        if origin is None:
            raise UIConversionError(f"{where}: output {slot} of subgraph {graph.name} comes from node "
                                    f"{scope.exec_id(link.origin_id)}, which is not in the subgraph")
        return self._resolve_output(scope, link.origin_id, origin, link.origin_slot, want_type, visited)


# -- parsing ----------------------------------------------------------------------------------------


def _parse_graph(data: dict[str, Any], name: str) -> _Graph:
    nodes: dict[str, dict[str, Any]] = {}
    for node in _list(data, "nodes", name):
        if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
            raise UIConversionError(f"{name}: a node without an id or type: {_clipped(node)}")
        node_id = _id(node["id"], f"{name}: node ({node['type']}) id")
        if node_id in nodes:
            raise UIConversionError(f"{name}: node id {node_id} is used twice")
        nodes[node_id] = node
    links = dict(_parse_link(raw, name) for raw in _list(data, "links", name) if raw is not None)
    inputs = data.get("inputs") or []
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise UIConversionError(f"{name}: 'inputs' must be a list of subgraph inputs")
    return _Graph(name, nodes, links, inputs, _io_node_id(data.get("inputNode"), DEFAULT_INPUT_NODE),
                  _io_node_id(data.get("outputNode"), DEFAULT_OUTPUT_NODE))


def _list(data: dict[str, Any], key: str, name: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise UIConversionError(f"{name}: {key!r} must be a list, got {type(value).__name__}")
    return value


def _clipped(value: Any) -> str:
    """A piece of the file for a message: its repr, cut to 200 characters."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "..."


def _id(value: Any, what: str) -> str:
    """A node or link id as text: the frontend writes numbers (and text for subgraph ids)."""
    key = _link_key(value)
    if key is not None:
        return key
    raise UIConversionError(f"{what} must be a whole number or a string, got {_clipped(value)}")


def _link_key(value: Any) -> str | None:
    """The key a link (or node) id is found under; None for a value that is no id."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool) and abs(value) < 1 << 64):
        return str(value)
    return None


def _slot(value: Any) -> int:
    """A slot index: a whole number (a whole float or a numeric string from hand-edited files pass too)."""
    if isinstance(value, bool):
        raise ValueError(f"slot {value!r} is a boolean, not a slot index")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 20:
        value = int(value)
    if not isinstance(value, int) or abs(value) >= 1 << 31:
        raise ValueError(f"slot {_clipped(value)} is not a slot index (a whole number)")
    return value


def _parse_link(raw: Any, name: str) -> tuple[str, _Link]:
    """A link as [id, origin_id, origin_slot, target_id, target_slot, type] (version 0.4) or an object
    (version 1 and subgraph definitions)."""
    try:
        if isinstance(raw, dict):
            fields = (raw["id"], raw["origin_id"], raw["origin_slot"], raw["target_id"], raw["target_slot"])
        elif isinstance(raw, list):
            fields = tuple(raw[:5])
            if len(fields) < 5:
                raise ValueError(f"{len(raw)} fields; a link is [id, origin_id, origin_slot, target_id, target_slot, "
                                 "type]")
        else:
            raise TypeError(f"a link is a list or an object, not {type(raw).__name__}")
        link_id, origin_id, origin_slot, target_id, target_slot = fields
        return _id(link_id, "link id"), _Link(_id(origin_id, "origin_id"), _slot(origin_slot),
                                              _id(target_id, "target_id"), _slot(target_slot))
    except (KeyError, TypeError, ValueError) as e:  # UIConversionError is a ValueError
        raise UIConversionError(f"{name}: malformed link {_clipped(raw)} ({e})") from None


def _io_node_id(io_node: Any, default: str) -> str:
    return _link_key(io_node["id"]) or default if isinstance(io_node, dict) and "id" in io_node else default


def _ui_inputs(node: dict[str, Any] | None, where: str) -> list[dict[str, Any]]:
    inputs = (node or {}).get("inputs") or []
    if not isinstance(inputs, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in inputs):
        raise UIConversionError(f"{where}: 'inputs' must be a list of slots, each with a name (text)")
    return inputs


def _order(node: dict[str, Any]) -> int:
    order = node.get("order")
    return order if isinstance(order, int) else 0


# -- widgets ----------------------------------------------------------------------------------------


def _schema_widgets(schema: Mapping[str, Any]) -> Iterator[_Widget]:
    sections = schema.get("input") or {}
    order = schema.get("input_order") or {}
    for section in ("required", "optional"):
        entries = sections.get(section) or {}
        for name in order.get(section) or list(entries):
            entry = entries.get(name)
            if not isinstance(entry, (list, tuple)) or not entry:
                continue
            kind, options = _input_kind(entry)
            if kind not in WIDGET_TYPES or options.get("forceInput"):
                continue
            before, after = helper_slots(name, kind, options)
            yield _Widget(name, section == "required", before, after, _default(entry, kind, options))


def _input_kind(entry: list | tuple) -> tuple[str, dict[str, Any]]:
    """("COMBO" for any choice list, else the type name, or the widget a multi-type input draws; options)."""
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    kind = "COMBO" if isinstance(entry[0], list) else str(entry[0])
    return str(options.get("widgetType", kind)), options


def _default(entry: list | tuple, kind: str, options: Mapping[str, Any]) -> Any:
    """The schema default; a combo without one starts at its first choice, as in the frontend."""
    if "default" in options:
        return options["default"]
    choices = entry[0] if isinstance(entry[0], list) else options.get("options")
    return choices[0] if kind == "COMBO" and isinstance(choices, list) and choices else None


def helper_slots(name: str, kind: str, options: Mapping[str, Any]) -> tuple[int, int]:
    """Extra widgets_values the frontend saves around this widget: (before, after)."""
    if kind in THREE_D_TYPES:
        return 3, 0  # "upload 3d model", "upload extra resources" and "clear" buttons
    control = options.get("control_after_generate", kind == "INT" and name in SEED_NAMES)
    if kind == "COMBO":
        upload = any(options.get(key) for key in UPLOAD_OPTIONS)
        return 0, (2 if control else 0) + (1 if upload else 0)  # control mode + filter; upload button
    return 0, 1 if control and kind in ("INT", "FLOAT") else 0


def _layout(widgets: list[_Widget]) -> Iterator[str]:
    """The widgets_values positions, for error messages."""
    for w in widgets:
        yield from ["(button)"] * w.before
        yield w.name
        yield from ["(control)"] * w.after


def _widget_values(node: dict[str, Any], widgets: list[_Widget], where: str) -> dict[str, Any]:
    """Widget name -> saved value; widgets without a saved value are left out. A node saved without
    widgets_values at all shows the schema defaults in the frontend, so it gets those."""
    raw = node.get("widgets_values")
    if raw is None:
        return {w.name: w.default for w in widgets if w.default is not None}
    if isinstance(raw, dict):  # some packs save named values
        return {w.name: raw[w.name] for w in widgets if w.name in raw}
    if not isinstance(raw, list):
        raise UIConversionError(f"{where}: widgets_values must be a list or an object, got {type(raw).__name__}")
    values, position = {}, 0
    for w in widgets:
        position += w.before
        if position < len(raw):
            values[w.name] = raw[position]
        position += 1 + w.after
    return values


def _wrap(value: Any) -> Any:
    """A list constant is boxed: in API format a bare list is a link."""
    return {"__value__": value} if isinstance(value, list) else value


# -- bypass ---------------------------------------------------------------------------------------


def _bypass_input(inputs: list[dict[str, Any]], slot: int, output_type: Any, want_type: Any) -> int | None:
    """The input a bypassed node passes to its output `slot`: the same index if its type fits, else the
    first input of exactly the wanted type, else the first compatible one."""
    if not inputs:
        return None
    if want_type in (None, "", "*"):
        return slot if slot < len(inputs) else 0
    if slot < len(inputs):
        same = inputs[slot].get("type")
        if _compatible(same, output_type) and _compatible(same, want_type):
            return slot
    for index, candidate in enumerate(inputs):
        if candidate.get("type") == want_type:
            return index
    for index, candidate in enumerate(inputs):
        if _compatible(candidate.get("type"), output_type) and _compatible(candidate.get("type"), want_type):
            return index
    return None


def _compatible(a: Any, b: Any) -> bool:
    """LiteGraph's type check: '*' or '' matches anything, 'A,B' matches A or B, case-insensitively."""
    if a in (None, "", "*", 0) or b in (None, "", "*", 0) or a == b:
        return True
    left, right = str(a).lower().split(","), str(b).lower().split(",")
    return any(x in right for x in left)
