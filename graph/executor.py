"""The executor: runs a validated Plan in topological order with structural caching.

Only what the output nodes need runs: a node whose key is cached cuts off its whole ancestry. In a
one-shot run (no in-memory cache) an intermediate is dropped after its last consumer.
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from pydantic import ValidationError

from .cache import DiskCache, OutputCache, file_fingerprint, structural_key
from .context import Interrupted, RunContext, RunSettings
from .errors import NodeExecutionError
from .node import Node, NodeOutputs
from .registry import Registry
from .validate import Plan, PlannedNode, validate

# (outputs in declared order, ui payload)
NodeResult = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass
class NodeReport:
    node_id: str
    class_type: str
    status: str  # "ran", "cached" (memory) or "disk" (persistent cache)
    seconds: float
    peak_memory_bytes: int
    output_shapes: list[Any]


@dataclass
class RunReport:
    nodes: list[NodeReport] = field(default_factory=list)
    seconds: float = 0.0
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ran(self) -> list[str]:
        return [n.node_id for n in self.nodes if n.status == "ran"]

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "nodes": [asdict(n) for n in self.nodes], "ui": self.ui}


def invoke(cls: type[Node], inputs: dict[str, Any], ctx: RunContext, validated: bool = True) -> NodeResult:
    """Build one node from its inputs and run it, with autograd only for nodes that declare it."""
    node = cls.model_construct(**inputs) if validated else cls.model_validate(inputs)
    if cls.spec.needs_grad:
        # Leave inference mode (ComfyUI runs everything inside it); the node clones inference tensors.
        with torch.inference_mode(False), torch.enable_grad():
            out = node.run(ctx)
    else:
        out = node.run(ctx)
    if not isinstance(out, NodeOutputs):
        raise TypeError(f"{cls.__name__}.run returned {type(out).__name__}, expected {cls.__name__}.Outputs")
    return tuple(getattr(out, o.name) for o in cls.spec.outputs), ctx.ui


def describe(value: Any) -> Any:
    """A JSON-friendly shape of an output, for reports."""
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items() if isinstance(v, (torch.Tensor, dict))}
    return type(value).__name__


@dataclass
class _Hits:
    needed: set[str] = field(default_factory=set)
    results: dict[str, NodeResult] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)


class Executor:
    """Validates and runs API-format prompts against one registry.

    `cache` keeps outputs across runs in this process (pass None for a one-shot run that frees each
    intermediate after its last consumer); `disk_cache` persists expensive nodes' outputs.
    """

    def __init__(self, registry: Registry, settings: RunSettings | None = None,
                 cache: OutputCache | None = None, disk_cache: DiskCache | None = None) -> None:
        self.registry = registry
        self.settings = settings or RunSettings()
        self.cache = cache
        self.disk_cache = disk_cache

    def validate(self, prompt: dict[str, Any], outputs: list[str] | None = None) -> Plan:
        return validate(prompt, self.registry, self.settings, outputs)

    def run(self, prompt: dict[str, Any], workflow: dict[str, Any] | None = None,
            outputs: list[str] | None = None, plan: Plan | None = None) -> RunReport:
        """Validate (unless a plan is given) and execute; raises WorkflowInvalid or NodeExecutionError."""
        start = time.perf_counter()
        plan = plan or self.validate(prompt, outputs)
        keys = self._keys(plan)
        # Identical subgraphs under other ids: the first node of each key runs, the rest reuse it.
        first: dict[str, str] = {}
        alias: dict[str, str] = {}
        for node_id in plan.order:
            key = keys[node_id]
            if key is not None:
                alias_of = first.setdefault(key, node_id)
                if alias_of != node_id:
                    alias[node_id] = alias_of
        hits = self._lookup(plan, keys, alias)

        def deps(node_id: str) -> list[str]:
            if node_id in alias:
                return [alias[node_id]]
            if node_id in hits.results:
                return []
            return [src for src, _ in plan.nodes[node_id].links.values()]

        consumers: dict[str, int] = {}
        for node_id in hits.needed:
            for src in deps(node_id):
                consumers[src] = consumers.get(src, 0) + 1
        report = RunReport()
        values: dict[str, tuple[Any, ...]] = {}
        uis: dict[str, dict[str, Any]] = {}
        keep = set(plan.outputs)
        with torch.inference_mode():
            for node_id in plan.order:
                if node_id not in hits.needed:
                    continue
                pn = plan.nodes[node_id]
                t0 = time.perf_counter()
                peak = 0
                if node_id in alias:
                    result, status = (values[alias[node_id]], uis.get(alias[node_id], {})), "cached"
                elif node_id in hits.results:
                    result, status = hits.results[node_id], hits.status[node_id]
                else:
                    result, peak = self._run_node(pn, values, prompt, workflow)
                    status = "ran"
                    self._store(pn, keys[node_id], result)
                for src in deps(node_id):
                    consumers[src] -= 1
                    if consumers[src] == 0 and src not in keep:
                        del values[src]
                values[node_id] = result[0]
                report.nodes.append(NodeReport(pn.id, pn.spec.class_type, status, time.perf_counter() - t0, peak,
                                               [describe(v) for v in result[0]]))
                if result[1]:
                    uis[node_id] = report.ui[node_id] = result[1]
        report.seconds = time.perf_counter() - start
        return report

    def _keys(self, plan: Plan) -> dict[str, str | None]:
        keys: dict[str, str | None] = {}
        for node_id in plan.order:
            pn = plan.nodes[node_id]
            if not pn.spec.cacheable:
                keys[node_id] = None
                continue
            inputs = []
            for name, (src, index) in pn.links.items():
                src_key = keys[src]
                if src_key is None:
                    break
                inputs.append((name, src_key, index))
            else:
                fingerprint = "".join(
                    file_fingerprint(self.settings.paths.resolve_input(i.file.folder, pn.constants[i.name]))
                    for i in pn.spec.file_inputs if i.name in pn.constants and i.file is not None)
                keys[node_id] = structural_key(pn.spec.class_type, pn.spec.version, pn.constants, inputs, fingerprint)
                continue
            keys[node_id] = None
        return keys

    def _lookup(self, plan: Plan, keys: dict[str, str | None], alias: dict[str, str]) -> _Hits:
        """Walk back from the outputs; a node found in a cache needs none of its inputs.

        Hits are taken out of the caches now, so an eviction during the run cannot lose them.
        """
        hits = _Hits()
        stack = list(plan.outputs)
        while stack:
            node_id = stack.pop()
            if node_id in hits.needed:
                continue
            hits.needed.add(node_id)
            if node_id in alias:
                stack.append(alias[node_id])
                continue
            pn, key = plan.nodes[node_id], keys[node_id]
            found = self.cache.get(key) if key and self.cache is not None else None
            status = "cached"
            if found is None and key and self.disk_cache is not None and pn.spec.persist_outputs:
                stored = self.disk_cache.get(key, self.settings.device)
                found, status = ((stored, {}), "disk") if stored is not None else (None, status)
            if found is None:
                stack.extend(src for src, _ in pn.links.values())
            else:
                hits.results[node_id], hits.status[node_id] = found, status
                if self.cache is not None and key and status == "disk":
                    self.cache.put(key, found)
        return hits

    def _store(self, pn: PlannedNode, key: str | None, result: NodeResult) -> None:
        if not key:
            return
        if self.cache is not None:
            self.cache.put(key, result)
        if self.disk_cache is not None and pn.spec.persist_outputs:
            self.disk_cache.put(key, result[0])

    def _run_node(self, pn: PlannedNode, values: dict[str, tuple[Any, ...]], prompt: dict[str, Any],
                  workflow: dict[str, Any] | None) -> tuple[NodeResult, int]:
        inputs = dict(pn.constants)
        for name, (src, index) in pn.links.items():
            value = values[src][index]
            spec = pn.spec.inputs[name]
            if spec.is_widget and spec.adapter is not None:
                try:
                    value = spec.validate(value)
                except ValidationError as err:
                    raise NodeExecutionError(pn.id, pn.spec.class_type, ValueError(
                        f"input {name!r} received {value!r} from node {src}: {err.errors()[0]['msg']}")) from err
            inputs[name] = value
        ctx = RunContext(self.settings, pn.id, pn.spec.class_type, prompt, workflow)
        ctx.check_interrupted()
        cuda = self.settings.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.settings.device)
        try:
            result = invoke(pn.cls, inputs, ctx)
        except (KeyboardInterrupt, Interrupted, NodeExecutionError):
            raise
        except Exception as err:
            raise NodeExecutionError(pn.id, pn.spec.class_type, err) from err
        if cuda:
            peak = torch.cuda.max_memory_allocated(self.settings.device)
        else:
            # ru_maxrss: the process's peak so far (KiB on Linux, bytes on macOS).
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = rss if sys.platform == "darwin" else rss * 1024
        return result, peak
