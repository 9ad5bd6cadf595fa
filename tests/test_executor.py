"""Executor behaviour: reports, gradients inside inference mode, interruption, PNG round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


def test_executor_report_lists_nodes_with_shapes_and_timing(make_executor):
    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"width": 16, "height": 8, "batch_size": 3}},
              "2": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["1", 0]}}}
    report = make_executor().run(prompt)
    first = report.nodes[0]
    assert (first.node_id, first.class_type, first.status) == ("1", "GenArtPatternImage", "ran")
    assert first.output_shapes == [[3, 8, 16, 3]]
    assert first.seconds > 0 and first.peak_memory_bytes > 0
    assert report.to_json()["nodes"][1]["node_id"] == "2"
    assert len(report.ui["2"]["images"]) == 3


def test_executor_grad_node_runs_inside_inference_mode(make_executor):
    prompt = {"1": {"class_type": "GenArtTestTensor", "inputs": {"value": 0.25, "size": 2}},
              "2": {"class_type": "GenArtTestGrad", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "GenArtTestShowDevice", "inputs": {"image": ["2", 0]}}}
    ex = make_executor()
    ex.run(prompt)
    grads = [out for (outs, _), _ in ex.cache._entries.values() for out in outs
             if isinstance(out, torch.Tensor) and out.max() == 0.5]
    assert len(grads) == 1 and torch.equal(grads[0], torch.full((1, 2, 2, 3), 0.5))


def test_executor_interrupt_keeps_no_partial_outputs(make_executor, paths):
    from comfyui_genart.graph.context import Interrupted

    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"width": 8, "height": 8}},
              "2": {"class_type": "GenArtTestSlow", "inputs": {"image": ["1", 0], "steps": 10, "cancel_at": 4}},
              "3": {"class_type": "GenArtSaveImage", "inputs": {"images": ["2", 0]}}}
    ex = make_executor()
    with pytest.raises(Interrupted, match="node 2"):
        ex.run(prompt)
    assert not list(paths.output_dir.rglob("*"))
    assert len(ex.cache) == 1  # only the pattern node finished; the interrupted node left nothing
    ex.settings.cancel.clear()
    prompt["2"]["inputs"]["cancel_at"] = -1
    assert sorted(make_executor().run(prompt).ran) == ["1", "2", "3"]


def test_executor_linked_widget_value_is_validated(make_executor):
    from comfyui_genart.graph.errors import NodeExecutionError

    prompt = {"1": {"class_type": "GenArtTestNumber", "inputs": {"value": 90}},
              "2": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 0], "b": 50.0}},
              "3": {"class_type": "GenArtTestAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "GenArtTestSink", "inputs": {"value": ["3", 0]}}}
    with pytest.raises(NodeExecutionError, match=r"input 'b' received 140\.0 from node 2"):
        make_executor().run(prompt)


def test_executor_png_round_trip_reproduces_output_bit_for_bit(make_executor, paths, pack):
    from comfyui_genart.graph.comfy import object_info
    from comfyui_genart.graph.workflow_io import load_workflow

    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"pattern": "gradient", "width": 37,
                                                                   "height": 23, "batch_size": 2}},
              "2": {"class_type": "GenArtResizeImage", "inputs": {"image": ["1", 0], "width": 29, "height": 31}},
              "3": {"class_type": "GenArtSaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "rt"}}}
    make_executor().run(prompt, workflow={"version": 0.4, "nodes": [], "links": []})
    first = paths.output_dir / "rt_00001_.png"
    replay_prompt, replay_workflow = load_workflow(first, object_info(pack.REGISTRY))
    assert replay_prompt == prompt and replay_workflow == {"version": 0.4, "nodes": [], "links": []}
    make_executor(cache=False).run(replay_prompt, replay_workflow)
    for a, b in (("rt_00001_.png", "rt_00003_.png"), ("rt_00002_.png", "rt_00004_.png")):
        with Image.open(paths.output_dir / a) as x, Image.open(paths.output_dir / b) as y:
            assert np.array_equal(np.asarray(x), np.asarray(y))
            assert x.text == y.text


def test_executor_runs_a_10000_node_chain_without_recursion(make_executor):
    # ComfyUI rejects a 1,000-node chain at the default recursion limit; nothing here recurses.
    import sys

    prompt = {str(i): {"class_type": "GenArtTestAdd", "inputs": {"a": [str(i - 1), 0], "b": 0.0}}
              for i in range(2, 10_000)}
    prompt["1"] = {"class_type": "GenArtTestNumber", "inputs": {"value": 5.0}}
    prompt["10000"] = {"class_type": "GenArtTestSink", "inputs": {"value": ["9999", 0]}}
    assert sys.getrecursionlimit() < 10_000
    report = make_executor(cache=False).run(prompt)
    assert len(report.ran) == 10_000 and report.ui["10000"] == {"value": [5.0]}
