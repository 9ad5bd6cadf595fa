"""Structural cache: re-runs, partial re-runs, shared subgraphs, persistence, file fingerprints."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from conftest import REPO


def chain(b: float = 1.0) -> dict:
    return {
        "1": {"class_type": "GenArtTestNumber", "inputs": {"value": 2.0}},
        "2": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 0], "b": 1.0}},
        "3": {"class_type": "GenArtTestAdd", "inputs": {"a": ["2", 0], "b": b}},
        "4": {"class_type": "GenArtTestSink", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "GenArtTestSink", "inputs": {"value": ["2", 0]}},
    }


def test_cache_rerun_same_workflow_runs_nothing(make_executor):
    ex = make_executor()
    first = ex.run(chain())
    assert sorted(first.ran) == ["1", "2", "3", "4", "5"]
    second = ex.run(chain())
    assert second.ran == []
    assert second.ui["4"] == {"value": [4.0]}  # cached output nodes still report their UI


def test_cache_downstream_change_reruns_only_node_and_descendants(make_executor):
    ex = make_executor()
    ex.run(chain())
    again = ex.run(chain(b=10.0))
    assert sorted(again.ran) == ["3", "4"]
    assert again.ui["4"] == {"value": [13.0]}


def test_cache_identical_subgraphs_under_other_ids_share_one_execution(make_executor):
    ex = make_executor()
    prompt = {
        "10": {"class_type": "GenArtTestNumber", "inputs": {"value": 3.0}},
        "11": {"class_type": "GenArtTestAdd", "inputs": {"a": ["10", 0], "b": 2.0}},
        "12": {"class_type": "GenArtTestSink", "inputs": {"value": ["11", 0]}},
        "20": {"class_type": "GenArtTestNumber", "inputs": {"value": 3.0}},
        "21": {"class_type": "GenArtTestAdd", "inputs": {"b": 2.0, "a": ["20", 0]}},
        "22": {"class_type": "GenArtTestSink", "inputs": {"value": ["21", 0]}},
    }
    report = ex.run(prompt)
    statuses = {n.node_id: n.status for n in report.nodes}
    assert sum(s == "ran" for s in statuses.values()) == 3
    assert report.ui["12"] == report.ui["22"] == {"value": [5.0]}
    # Renumbered copy of a cached workflow: nothing runs.
    renumbered = {str(int(k) + 100): {**v, "inputs": {n: [str(int(x[0]) + 100), x[1]] if isinstance(x, list) else x
                                                     for n, x in v["inputs"].items()}} for k, v in prompt.items()}
    assert ex.run(renumbered).ran == []


def test_cache_identical_subgraphs_share_one_execution_in_a_one_shot_run(make_executor):
    # One-shot runs free intermediates after their last reader; an alias counts as a reader, so the
    # shared result is still there when the copy's consumer comes after the original's.
    ex = make_executor(cache=False)
    prompt = {
        "1": {"class_type": "GenArtTestNumber", "inputs": {"value": 3.0}},
        "2": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 0], "b": 2.0}},
        "3": {"class_type": "GenArtTestSink", "inputs": {"value": ["2", 0]}},
        "5": {"class_type": "GenArtTestNumber", "inputs": {"value": 3.0}},
        "6": {"class_type": "GenArtTestAdd", "inputs": {"a": ["5", 0], "b": 2.0}},
        "7": {"class_type": "GenArtTestAdd", "inputs": {"a": ["6", 0], "b": 4.0}},
        "8": {"class_type": "GenArtTestSink", "inputs": {"value": ["7", 0]}},
    }
    report = ex.run(prompt)
    # One of the two Number -> Add pairs runs; the other Add reuses it and its Number is never needed.
    assert len(report.ran) == 5 and [n.node_id for n in report.nodes if n.status == "cached"] in (["2"], ["6"])
    assert report.ui["3"] == {"value": [5.0]} and report.ui["8"] == {"value": [9.0]}


def test_cache_default_value_and_explicit_default_share_key(make_executor):
    ex = make_executor()
    ex.run({"1": {"class_type": "GenArtTestNumber", "inputs": {}},
            "2": {"class_type": "GenArtTestSink", "inputs": {"value": ["1", 0]}}})
    report = ex.run({"1": {"class_type": "GenArtTestNumber", "inputs": {"value": 1.0}},
                     "2": {"class_type": "GenArtTestSink", "inputs": {"value": ["1", 0]}}})
    assert report.ran == []


def test_cache_uncacheable_node_and_descendants_rerun(make_executor):
    ex = make_executor()
    prompt = {"1": {"class_type": "GenArtTestRandom", "inputs": {}},
              "2": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "GenArtTestSink", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "GenArtTestNumber", "inputs": {}},
              "5": {"class_type": "GenArtTestSink", "inputs": {"value": ["4", 0]}}}
    ex.run(prompt)
    assert sorted(ex.run(prompt).ran) == ["1", "2", "3"]


def test_cache_changed_input_file_invalidates(make_executor, paths):
    ex = make_executor()
    (paths.input_dir / "a.txt").write_text("four")
    prompt = {"1": {"class_type": "GenArtTestReadText", "inputs": {"name": "a.txt"}},
              "2": {"class_type": "GenArtTestLength", "inputs": {"text": ["1", 0]}},
              "3": {"class_type": "GenArtTestSink", "inputs": {"value": ["2", 0]}}}
    assert ex.run(prompt).ui["3"] == {"value": [4.0]}
    assert ex.run(prompt).ran == []
    (paths.input_dir / "a.txt").write_text("seven!!")
    again = ex.run(prompt)
    assert sorted(again.ran) == ["1", "2", "3"]
    assert again.ui["3"] == {"value": [7.0]}


def test_cache_lru_budget_evicts_oldest(pack):
    from comfyui_genart.graph.cache import OutputCache

    cache = OutputCache(budget_bytes=3 * 4 * 100)
    for i in range(4):
        cache.put(f"k{i}", (torch.zeros(100),))  # 400 bytes each
    assert "k0" not in cache and all(f"k{i}" in cache for i in (1, 2, 3))
    cache.get("k1")  # now most recent
    cache.put("k4", (torch.zeros(100),))
    assert "k2" not in cache and "k1" in cache
    assert cache.used == 3 * 400


def test_cache_one_shot_run_frees_intermediates_after_last_consumer(make_executor, monkeypatch):
    from comfyui_genart.graph import executor as executor_module

    ex = make_executor(cache=False)
    seen_sizes = []
    original = executor_module.Executor._run_node

    def spy(self, pn, values, prompt, workflow, cuda):
        seen_sizes.append((pn.id, sorted(values)))
        return original(self, pn, values, prompt, workflow, cuda)

    monkeypatch.setattr(executor_module.Executor, "_run_node", spy)
    prompt = {str(i): {"class_type": "GenArtTestAdd", "inputs": {"a": [str(i - 1), 0]}} for i in range(2, 8)}
    prompt["1"] = {"class_type": "GenArtTestNumber", "inputs": {}}
    prompt["9"] = {"class_type": "GenArtTestSink", "inputs": {"value": ["7", 0]}}
    ex.run(prompt)
    # While node i runs, only its input is alive: every earlier intermediate was dropped.
    assert all(len(alive) <= 1 for _, alive in seen_sizes), seen_sizes


def test_cache_outputs_stay_on_their_device(make_executor):
    # The "meta" device stands in for a GPU: any copy to the CPU would show in the cached entry.
    ex = make_executor(device=torch.device("meta"))
    prompt = {"1": {"class_type": "GenArtTestTensor", "inputs": {}},
              "2": {"class_type": "GenArtTestShowDevice", "inputs": {"image": ["1", 0]}}}
    assert ex.run(prompt).ui["2"] == {"device": ["meta"]}
    tensors = [out for (outputs, _), _ in ex.cache._entries.values() for out in outputs]
    assert [t.device.type for t in tensors] == ["meta"]
    assert ex.run(prompt).ran == []


def test_cache_persistent_cache_reused_by_second_process(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        import comfyui_genart as pack
        from pathlib import Path
        from toy_nodes import build_registry
        from comfyui_genart.graph.cache import DiskCache
        from comfyui_genart.graph.context import RunSettings
        from comfyui_genart.graph.executor import Executor
        from comfyui_genart.graph.safety import Paths
        root = Path({str(tmp_path)!r})
        ex = Executor(build_registry(pack), RunSettings(paths=Paths(output_dir=root / "out", temp_dir=root / "tmp")),
                      cache=None, disk_cache=DiskCache(root / "cache"))
        prompt = {{"1": {{"class_type": "GenArtTestTensor", "inputs": {{"value": 0.25, "size": 3}}}},
                  "2": {{"class_type": "GenArtPreviewImage", "inputs": {{"images": ["1", 0]}}}}}}
        report = ex.run(prompt)
        print(json.dumps({{n.node_id: n.status for n in report.nodes}}))
    """)
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(i)}) for i in range(2)]
    first, second = (r.stdout.strip().splitlines()[-1] for r in runs)
    assert first == '{"1": "ran", "2": "ran"}'
    assert second == '{"1": "disk", "2": "ran"}'
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


def test_cache_nbytes_counts_tensors_inside_objects_once(pack):
    from dataclasses import dataclass

    from comfyui_genart.graph.cache import nbytes

    @dataclass
    class State:
        sample: torch.Tensor
        history: list

    t = torch.zeros(10)  # 40 bytes
    state = State(sample=t, history=[torch.zeros(5), t])  # t is shared: counted once
    module = torch.nn.Linear(3, 2)  # 8 parameters = 32 bytes
    assert nbytes(({"samples": torch.zeros(4), "state": state}, module, 3, "x")) == 16 + 40 + 20 + 32


def test_cache_persistent_cache_keeps_attacks_and_samplers_per_dtype(pack, paths, tmp_path):
    """--cache-dir on the library's expensive nodes: an attack and a sampler (whose latent and trajectory
    share memory) are read back bit for bit by a new executor; another dtype does not reuse them."""
    from comfyui_genart.graph.cache import DiskCache
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    shipped = {"model_name": "genart-emoji32", "device": "auto", "dtype": "auto"}
    prompt = {
        "1": {"class_type": "GenArtLoadImage", "inputs": {"image": "genart-example-emoji.png"}},
        "2": {"class_type": "GenArtLoadVQModel", "inputs": shipped},
        "3": {"class_type": "GenArtLoadDenoiser", "inputs": {**shipped, "latent_scale": 0.87034}},
        "4": {"class_type": "GenArtLoadScheduler", "inputs": {"kind": "DDIM", "beta_schedule": "squaredcos_cap_v2",
                                                              "prediction_type": "v_prediction"}},
        "5": {"class_type": "GenArtAttackEncoderPGD", "inputs": {"image": ["1", 0], "vqmodel": ["2", 0], "steps": 3}},
        "6": {"class_type": "GenArtEncodeVQ", "inputs": {"vqmodel": ["2", 0], "image": ["5", 0]}},
        "7": {"class_type": "GenArtSampleLatent", "inputs": {"denoiser": ["3", 0], "scheduler": ["4", 0],
                                                             "latent": ["6", 0], "steps": 4, "denoise": 0.5,
                                                             "return_trajectory_every": 1}},
        "8": {"class_type": "GenArtDecodeVQ", "inputs": {"vqmodel": ["2", 0], "latent": ["7", 0]}},
        "9": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["8", 0]}},
    }

    def run(dtype: torch.dtype):
        settings = RunSettings(paths=paths, dtype=dtype)
        ex = Executor(pack.REGISTRY, settings, cache=None, disk_cache=DiskCache(tmp_path / "cache"))
        report = ex.run(prompt)
        status = {n.node_id: n.status for n in report.nodes}
        (saved,) = report.ui["9"]["images"]
        return status, (paths.temp_dir / saved["subfolder"] / saved["filename"]).read_bytes()

    first, image = run(torch.float32)
    assert first["5"] == first["7"] == "ran"
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    again, image_again = run(torch.float32)
    assert again["7"] == "disk" and "5" not in again, "the sampler's stored output stands in for the attack too"
    assert image_again == image
    other, _ = run(torch.bfloat16)
    assert other["5"] == other["7"] == "ran", "a bfloat16 run must not reuse float32 results"
