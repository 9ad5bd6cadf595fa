"""API prompt -> UI-format workflow (version 0.4), laid out left to right by depth.

The reverse of `ui_format.ui_to_api`: it writes what ComfyUI's frontend saves (positional
widgets_values with their helper slots, link ids consistent between `links`, node inputs and outputs),
so workflows can be written as plain API prompts in Python and shipped as drag-and-droppable files.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from .ui_format import helper_slots
from .validate import is_link


def _entries(info: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, TYPE, options) of every input, required then optional, in the server's order."""
    out = []
    for section in ("required", "optional"):
        entries = info["input"].get(section, {})
        order = info.get("input_order", {}).get(section, list(entries))
        for name in order:
            entry = entries[name]
            out.append((name, entry[0], entry[1] if len(entry) > 1 else {}))
    return out


def _is_widget(typ: Any, opts: dict[str, Any]) -> bool:
    widget_type = isinstance(typ, list) or typ in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
    return widget_type and not opts.get("forceInput")


def helper_values(name: str, typ: Any, opts: dict[str, Any]) -> list[Any]:
    """Values of the helper slots the frontend stores right after a widget's own value; how many
    there are is the reader's rule (ui_format.helper_slots), so writer and reader cannot disagree.
    Controls are written "fixed" (reproducible; the frontend's own default is "randomize")."""
    kind = "COMBO" if isinstance(typ, list) else typ
    _, after = helper_slots(name, kind, opts)
    if kind != "COMBO":
        return ["fixed"] * after
    return (["fixed", ""] if after >= 2 else []) + (["image"] if after % 2 else [])


def api_to_ui(prompt: Mapping[str, Any], object_info: Mapping[str, dict[str, Any]],
              titles: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A version 0.4 UI workflow equivalent to `prompt` (node ids must be integers as strings)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(prompt)
    graph.add_edges_from((str(v[0]), n) for n in prompt for v in prompt[n]["inputs"].values() if is_link(v))
    depth: dict[str, int] = {}
    for node_id in nx.topological_sort(graph):
        depth[node_id] = 1 + max((depth[p] for p in graph.predecessors(node_id)), default=-1)
    nodes: dict[str, dict[str, Any]] = {}
    column_bottom: dict[int, int] = {}  # nodes stack down their column by their height, never overlapping
    for order, node_id in enumerate(sorted(prompt, key=lambda n: (depth[n], int(n)))):
        node = prompt[node_id]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        tall = 0  # what the frontend draws below the widgets: text boxes, image previews
        for name, typ, opts in _entries(info):
            tall += 80 if typ == "STRING" and opts.get("multiline") else 220 if opts.get("image_upload") else 0
            value = node["inputs"].get(name)
            if _is_widget(typ, opts):
                if value is None or is_link(value):
                    value = opts.get("default", typ[0] if isinstance(typ, list) and typ else None)
                widgets += [value, *helper_values(name, typ, opts)]
                if is_link(node["inputs"].get(name)):
                    inputs.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO",
                                   "widget": {"name": name}, "link": None})
            else:
                inputs.append({"name": name, "type": typ, "link": None})
        names = info.get("output_name", info["output"])
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (n, t) in enumerate(zip(names, info["output"], strict=True))]
        sockets = sum(1 for inp in inputs if "widget" not in inp)
        height = 40 + 24 * (max(sockets, len(outputs)) + len(widgets)) + tall
        top = column_bottom.get(depth[node_id], 40)
        column_bottom[depth[node_id]] = top + height + 60  # the next title bar starts below this node
        ui: dict[str, Any] = {
            "id": int(node_id), "type": node["class_type"],
            "pos": [40 + 340 * depth[node_id], top],
            "size": [300, height],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        }
        title = (titles or {}).get(node_id) or (node.get("_meta") or {}).get("title")
        if title and title != info.get("display_name"):
            ui["title"] = title
        nodes[node_id] = ui
    links: list[list[Any]] = []
    for node_id in prompt:
        for name, value in prompt[node_id]["inputs"].items():
            if not is_link(value):
                continue
            src, slot = str(value[0]), value[1]
            target = nodes[node_id]
            target_slot = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == name)
            link_id = len(links) + 1
            out = nodes[src]["outputs"][slot]
            links.append([link_id, int(src), slot, int(node_id), target_slot, out["type"]])
            target["inputs"][target_slot]["link"] = link_id
            out["links"].append(link_id)
    return {
        "last_node_id": max(int(n) for n in prompt), "last_link_id": len(links),
        "nodes": [nodes[n] for n in sorted(nodes, key=lambda n: int(n))], "links": links,
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }
