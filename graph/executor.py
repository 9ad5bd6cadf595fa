"""The executor: runs a validated Plan in topological order with structural caching.

Only what the output nodes need runs: a node whose key is cached cuts off its whole ancestry. In a
one-shot run (no in-memory cache) an intermediate is dropped after its last consumer.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import resource
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from pydantic import ValidationError

from .cache import DiskCache, OutputCache, file_fingerprint, nbytes, structural_key
from .context import Interrupted, RunContext, RunSettings
from .errors import NodeExecutionError, short_repr
from .node import Node, NodeOutputs
from .registry import Registry
from .validate import Plan, PlannedNode, recheck, validate

# (outputs in declared order, ui payload)
NodeResult = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(slots=True)
class NodeReport:
    node_id: str
    class_type: str
    status: str  # "ran", "cached" (memory) or "disk" (persistent cache)
    seconds: float
    # CUDA: the node's own peak allocation; CPU: the process's peak resident memory so far.
    peak_memory_bytes: int
    output_shapes: list[Any]


@dataclass
class RunReport:
    """What a run did (per node: ran or cached, seconds, memory, shapes), what output nodes showed (`ui`,
    as ComfyUI's UI gets it), and the values: `outputs[node_id][output_name]` for the output nodes and the
    nodes asked for with `keep`."""

    nodes: list[NodeReport] = field(default_factory=list)
    seconds: float = 0.0
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ran(self) -> list[str]:
        return [n.node_id for n in self.nodes if n.status == "ran"]

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "nodes": [asdict(n) for n in self.nodes], "ui": self.ui}


def _construct(cls: type[Node], inputs: dict[str, Any]) -> Node:
    """A node from inputs that validation already converted and completed with defaults.

    Equivalent to pydantic's model_construct without its per-field default handling, which
    dominates the engine's cost on small nodes.
    """
    node = cls.__new__(cls)
    _set(node, "__dict__", inputs)
    _set(node, "__pydantic_fields_set__", set(inputs))
    _set(node, "__pydantic_extra__", None)
    _set(node, "__pydantic_private__", None)
    return node


_set = object.__setattr__


def invoke(cls: type[Node], inputs: dict[str, Any], ctx: RunContext, validated: bool = True) -> NodeResult:
    """Build one node from its inputs and run it, with autograd only for nodes that declare it."""
    node = _construct(cls, inputs) if validated else cls.model_validate(inputs)
    if cls.spec.needs_grad:
        # Leave inference mode (ComfyUI runs everything inside it); the node clones inference tensors.
        with torch.inference_mode(False), torch.enable_grad():
            out = node.run(ctx)
    else:
        out = node.run(ctx)
    if not isinstance(out, NodeOutputs):
        raise TypeError(f"{cls.__name__}.run returned {type(out).__name__}, expected {cls.__name__}.Outputs")
    fields, names = out.__dict__, cls.spec.output_names
    return tuple(fields.values()) if tuple(fields) == names else tuple(fields[n] for n in names), ctx.ui


def describe(value: Any) -> Any:
    """A JSON-friendly shape of an output, for reports."""
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items() if isinstance(v, (torch.Tensor, dict))}
    return type(value).__name__


def _process_peak_rss() -> int:
    """The process's peak resident memory so far, in bytes (on the CPU there is no per-node peak)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # KiB on Linux, bytes on macOS


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the engine plans a run.

    Planning allocates several long-lived containers per node, and the collector's repeated scans
    of them doubled validation time on 10,000-node graphs. No node code runs in this phase except
    the small `check_constants` hooks; reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()



def _aliases(plan: Plan, keys: dict[str, str | None]) -> dict[str, str]:
    """Identical subgraphs under other ids: the first node of each key runs, the others reuse it."""
    first: dict[str, str] = {}
    alias: dict[str, str] = {}
    for node_id in plan.order:
        key = keys[node_id]
        if key is not None:
            alias_of = first.setdefault(key, node_id)
            if alias_of != node_id:
                alias[node_id] = alias_of
    return alias


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
        # Files in the persistent cache outlive this process: what a node computes also depends on the run's
        # dtype and device kind (loaders set to "auto" follow them) and on torch, so they join its key.
        self._disk_salt = f"{self.settings.dtype}|{self.settings.device.type}|torch {torch.__version__}"
        self._plans: dict[str, tuple[Plan, dict[str, str | None], dict[str, str]]] = {}
        # Process peak RSS, re-read only after nodes that ran over a millisecond (reading costs ~1 us).
        self._peak_rss = _process_peak_rss()

    def validate(self, prompt: dict[str, Any], outputs: list[str] | None = None) -> Plan:
        return validate(prompt, self.registry, self.settings, outputs)

    def run(self, prompt: dict[str, Any], workflow: dict[str, Any] | None = None,
            outputs: list[str] | None = None, plan: Plan | None = None,
            keep: Iterable[str] | Literal["all"] = ()) -> RunReport:
        """Validate (unless a plan is given) and execute; raises WorkflowInvalid or NodeExecutionError.

        `outputs`: the output nodes to run (default: all of them). `keep`: ids of other nodes whose values the
        report should carry in `outputs` (an intermediate is otherwise freed after its last reader), or "all".
        """
        start = time.perf_counter()
        with _gc_paused():
            if plan is None:
                plan, keys = self._planned(prompt, outputs)
            else:
                keys = self._keys(plan)
            alias = _aliases(plan, keys)
            hits = self._lookup(plan, keys, alias)

        # What each needed node reads when its turn comes: its inputs, the node it aliases, or nothing.
        consumers = self._consumers(plan, hits, alias)
        cuda = self.settings.device.type == "cuda"
        report = RunReport()
        values: dict[str, tuple[Any, ...]] = {}
        uis: dict[str, dict[str, Any]] = {}
        kept = set(plan.order) if keep == "all" else {*plan.outputs, *keep}
        with torch.inference_mode():
            for node_id in plan.order:
                if node_id not in hits.needed:
                    continue
                pn = plan.nodes[node_id]
                t0 = time.perf_counter()
                peak = 0
                if node_id in alias:
                    source = alias[node_id]
                    result, status = (values[source], uis.get(source, {})), "cached"
                    self._release(source, consumers, values, kept)
                elif node_id in hits.results:
                    result, status = hits.results[node_id], hits.status[node_id]
                else:
                    result, peak = self._run_node(pn, values, prompt, workflow, cuda)
                    status = "ran"
                    self._store(pn, keys[node_id], result)
                    for src, _ in pn.links.values():
                        self._release(src, consumers, values, kept)
                values[node_id] = result[0]
                report.nodes.append(NodeReport(node_id, pn.spec.class_type, status, time.perf_counter() - t0, peak,
                                               [describe(v) for v in result[0]]))
                if result[1]:
                    uis[node_id] = report.ui[node_id] = result[1]
        report.outputs = {node_id: dict(zip(plan.nodes[node_id].spec.output_names, values[node_id], strict=True))
                          for node_id in plan.order if node_id in kept and node_id in values}
        report.seconds = time.perf_counter() - start
        return report

    @staticmethod
    def _consumers(plan: Plan, hits: _Hits, alias: dict[str, str]) -> dict[str, int]:
        """How many needed nodes read each node's outputs in this run (the node it aliases counts once)."""
        if not alias and not hits.results:
            return dict(plan.consumers)  # nothing cached: every planned node runs and reads its links
        consumers: dict[str, int] = {}
        for node_id in hits.needed:
            if node_id in alias:
                sources: list[str] = [alias[node_id]]
            elif node_id in hits.results:
                continue
            else:
                sources = [src for src, _ in plan.nodes[node_id].links.values()]
            for src in sources:
                consumers[src] = consumers.get(src, 0) + 1
        return consumers

    @staticmethod
    def _release(src: str, consumers: dict[str, int], values: dict[str, tuple[Any, ...]], keep: set[str]) -> None:
        """One reader of `src` is done; drop its outputs after the last one unless it is an output node."""
        left = consumers[src] - 1
        consumers[src] = left
        if left == 0 and src not in keep:
            del values[src]

    def _planned(self, prompt: dict[str, Any], outputs: list[str] | None) -> tuple[Plan, dict[str, str | None]]:
        """Validated plan and cache keys, reused when the same prompt comes again.

        A reused plan still re-runs the checks that look at files (`recheck`), and its keys are
        recomputed when an input file's fingerprint changed.
        """
        try:
            memo_key = json.dumps([prompt, outputs], check_circular=False)
        except (TypeError, ValueError, RecursionError):
            memo_key = None  # not JSON (a Python caller passed objects): validate every time
        memo = self._plans.get(memo_key) if memo_key is not None else None
        if memo is not None:
            plan, keys, fingerprints = memo
            recheck(plan, prompt, self.settings)
            if self._fingerprints(plan) != fingerprints:
                keys = self._keys(plan)
                self._plans[memo_key] = (plan, keys, self._fingerprints(plan))  # type: ignore[index]
            return plan, keys
        plan = self.validate(prompt, outputs)
        keys = self._keys(plan)
        if memo_key is not None:
            if len(self._plans) >= 16:
                self._plans.pop(next(iter(self._plans)))
            self._plans[memo_key] = (plan, keys, self._fingerprints(plan))
        return plan, keys

    def _fingerprints(self, plan: Plan) -> dict[str, str]:
        return {pn.id: self._fingerprint(pn) for pn in plan.nodes.values() if pn.spec.file_inputs}

    def _fingerprint(self, pn: PlannedNode) -> str:
        return "".join(file_fingerprint(self.settings.paths.resolve_input(i.file.folder, pn.constants[i.name]))
                       for i in pn.spec.file_inputs if i.name in pn.constants and i.file is not None)

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
                fingerprint = self._fingerprint(pn) if pn.spec.file_inputs else ""
                keys[node_id] = structural_key(pn.spec.class_type, pn.spec.version, pn.constants, inputs, fingerprint)
                continue
            keys[node_id] = None
        return keys

    def _lookup(self, plan: Plan, keys: dict[str, str | None], alias: dict[str, str]) -> _Hits:
        """Walk back from the outputs; a node found in a cache needs none of its inputs.

        Hits are taken out of the caches now, so an eviction during the run cannot lose them.
        """
        hits = _Hits()
        if not alias and not self.cache and not self.disk_cache:
            hits.needed.update(plan.nodes)  # nothing can be found: every planned node runs
            return hits
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
                stored = self.disk_cache.get(self._disk_key(key), self.settings.device)
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
            self.cache.put(key, result, nbytes(result[0]))
        if self.disk_cache is not None and pn.spec.persist_outputs:
            self.disk_cache.put(self._disk_key(key), result[0])

    def _disk_key(self, key: str) -> str:
        return hashlib.sha256(f"{self._disk_salt}\x00{key}".encode()).hexdigest()

    def _run_node(self, pn: PlannedNode, values: dict[str, tuple[Any, ...]], prompt: dict[str, Any],
                  workflow: dict[str, Any] | None, cuda: bool) -> tuple[NodeResult, int]:
        inputs = dict(pn.constants)
        for name, (src, index) in pn.links.items():
            inputs[name] = values[src][index]
        for name in pn.linked_widgets:  # a widget fed by another node: its value is checked like a constant
            try:
                inputs[name] = pn.spec.inputs[name].validate(inputs[name])
            except ValidationError as err:
                raise NodeExecutionError(pn.id, pn.spec.class_type, ValueError(
                    f"input {name!r} received {short_repr(inputs[name])} from node {pn.links[name][0]}: "
                    f"{err.errors()[0]['msg']}")) from err
        ctx = RunContext(self.settings, pn.id, pn.spec.class_type, prompt, workflow, {})
        ctx.check_interrupted()
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.settings.device)
        started = time.perf_counter()
        try:
            result = invoke(pn.cls, inputs, ctx)
        except (KeyboardInterrupt, Interrupted, NodeExecutionError):
            raise
        except Exception as err:
            raise NodeExecutionError(pn.id, pn.spec.class_type, err) from err
        if cuda:
            return result, torch.cuda.max_memory_allocated(self.settings.device)
        if time.perf_counter() - started > 1e-3:
            self._peak_rss = _process_peak_rss()
        return result, self._peak_rss
