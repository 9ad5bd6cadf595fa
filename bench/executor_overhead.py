"""Per-node overhead of the engine on chains of trivial nodes, against references measured in the same run.

    python bench/executor_overhead.py [--sizes 10 1000 10000] [--repeat 5]

For each chain length N it times, best of --repeat:
  plain     N plain Python calls of the node functions (the floor);
  nx-loop   a minimal networkx executor (topological sort + dict of results), about 30 lines;
  validate  our validation alone;
  cold      a first run on a fresh executor (validation included);
  cached    a re-run of the same workflow on the same executor (validation included; nothing runs).
and prints microseconds per node above `plain`, and each time as a ratio to `plain` and to `nx-loop`.
Targets (2-core CPU): cold < 20 us/node, cached < 5 us/node, flat from 10 to 10000 nodes.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import networkx as nx
from pydantic import Field

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graph.run import load_pack

load_pack()
from comfyui_genart.graph.cache import OutputCache  # noqa: E402
from comfyui_genart.graph.context import RunContext  # noqa: E402
from comfyui_genart.graph.executor import Executor  # noqa: E402
from comfyui_genart.graph.node import Node, NodeOutputs  # noqa: E402
from comfyui_genart.graph.registry import Registry  # noqa: E402
from comfyui_genart.graph.types import IntSocket  # noqa: E402


def start(value: int) -> int:
    return value


def inc(x: int, step: int) -> int:
    return x + step


class Start(Node):
    """A constant."""

    CLASS_TYPE = "GenArtBenchStart"
    CATEGORY = "GenArt/bench"

    class Outputs(NodeOutputs):
        value: IntSocket = Field(description="the constant")

    value: int = Field(0, ge=0, le=10**9, description="the constant")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(value=start(self.value))


class Inc(Node):
    """x + step."""

    CLASS_TYPE = "GenArtBenchInc"
    CATEGORY = "GenArt/bench"

    class Outputs(NodeOutputs):
        value: IntSocket = Field(description="x + step")

    x: IntSocket = Field(description="input")
    step: int = Field(1, ge=0, le=10, description="increment")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(value=inc(self.x, self.step))


class End(Node):
    """Reports the value."""

    CLASS_TYPE = "GenArtBenchEnd"
    CATEGORY = "GenArt/bench"
    OUTPUT_NODE = True

    class Outputs(NodeOutputs):
        pass

    x: IntSocket = Field(description="input")

    def run(self, ctx: RunContext) -> Outputs:
        ctx.ui["value"] = [self.x]
        return self.Outputs()


def chain(n: int) -> dict:
    prompt = {"1": {"class_type": "GenArtBenchStart", "inputs": {"value": 0}}}
    for i in range(2, n):
        prompt[str(i)] = {"class_type": "GenArtBenchInc", "inputs": {"x": [str(i - 1), 0], "step": 1}}
    prompt[str(n)] = {"class_type": "GenArtBenchEnd", "inputs": {"x": [str(n - 1), 0]}}
    return prompt


def plain(n: int) -> int:
    x = start(0)
    for _ in range(n - 2):
        x = inc(x, 1)
    return x


def nx_loop(prompt: dict) -> int:
    """The smallest honest executor: graph, topological order, call, keep results."""
    functions: dict[str, Callable[..., int]] = {"GenArtBenchStart": start, "GenArtBenchInc": inc,
                                                "GenArtBenchEnd": lambda x: x}
    g = nx.DiGraph()
    for node_id, node in prompt.items():
        g.add_node(node_id)
        for value in node["inputs"].values():
            if isinstance(value, list):
                g.add_edge(value[0], node_id)
    results: dict[str, int] = {}
    for node_id in nx.topological_sort(g):
        node = prompt[node_id]
        kwargs = {k: results[v[0]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        results[node_id] = functions[node["class_type"]](**kwargs)
    return results[str(len(prompt))]


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    registry = Registry()
    for cls in (Start, Inc, End):
        registry.register(cls)
    print(f"{'nodes':>6} {'what':>9} {'total ms':>9} {'us/node':>8} {'over plain':>10} {'x plain':>8} {'x nx-loop':>9}")
    for n in args.sizes:
        prompt = chain(n)
        t_plain = best(lambda n=n: plain(n), args.repeat)
        t_nx = best(lambda p=prompt: nx_loop(p), args.repeat)
        ex = Executor(registry, cache=OutputCache())
        t_validate = best(lambda p=prompt, e=ex: e.validate(p), args.repeat)
        colds = []
        for _ in range(args.repeat):
            fresh = Executor(registry, cache=OutputCache())
            t0 = time.perf_counter()
            report = fresh.run(prompt)
            colds.append(time.perf_counter() - t0)
            assert report.ui[str(n)]["value"] == [n - 2] and len(report.ran) == n
        t_cold = min(colds)
        t_cached = best(lambda p=prompt, e=fresh: e.run(p), args.repeat)
        assert fresh.run(prompt).ran == []
        for what, t in (("plain", t_plain), ("nx-loop", t_nx), ("validate", t_validate), ("cold", t_cold),
                        ("cached", t_cached)):
            over = (t - t_plain) / n * 1e6
            print(f"{n:>6} {what:>9} {t * 1e3:>9.2f} {t / n * 1e6:>8.2f} {over:>10.2f} {t / t_plain:>8.1f} "
                  f"{t / t_nx:>9.2f}")


if __name__ == "__main__":
    main()
