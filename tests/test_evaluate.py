"""Evaluation nodes: image sets stream and stay deterministic, features are cached per dataset files, the metric
nodes label their rows, memorization finds a planted copy, and the shipped evaluate workflow runs."""
from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import REPO, emoji_like_folder, evaluation_prompt


@pytest.fixture()
def shipped():
    """The shipped default model's handles, as the loaders make them."""
    from diffusers import UNet2DModel, VQModel

    from comfyui_genart.core.handles import DenoiserHandle, SchedulerHandle

    vq = VQModel.from_pretrained(REPO / "models/vqgan/genart-emoji32").eval()
    unet = UNet2DModel.from_pretrained(REPO / "models/unet/genart-emoji32").eval()
    latent_scale = json.loads((REPO / "models/unet/genart-emoji32/genart_training.json").read_text())["latent_scale"]
    scheduler = SchedulerHandle("DDIMScheduler", {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                                                  "prediction_type": "v_prediction", "clip_sample": False})
    return vq, DenoiserHandle(unet, latent_scale, "unet/genart-emoji32", "v_prediction"), scheduler


@torch.inference_mode()
def test_sampled_set_draws_one_noise_stream_whatever_the_chunk(shipped):
    from comfyui_genart.core.image_sets import SampledImages

    vq, denoiser, scheduler = shipped
    sets = [SampledImages(denoiser, scheduler, vq, 5, 3, 7, (4, 16, 16), "s", chunk) for chunk in (2, 5)]
    made = [torch.cat(list(s.chunks())) for s in sets]
    assert made[0].shape == (5, 3, 32, 32) and made[0].dtype == torch.float32
    # Item i's noise is the i-th draw of one seeded stream: the same images, up to the batch size's rounding.
    assert torch.allclose(made[0], made[1], atol=1e-5)
    assert (made[0][0] - made[0][1]).abs().max() > 0.05, "items have their own noise"
    # A second read hands out what was made (bit for bit) instead of sampling again.
    calls = []
    hook = denoiser.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        assert torch.equal(torch.cat(list(sets[0].chunks())), made[0])
        assert torch.equal(sets[0].take([4, 1, 4]), made[0][[4, 1, 4]])
    finally:
        hook.remove()
    assert not calls


@torch.inference_mode()
def test_random_code_set_is_chunk_independent(shipped):
    from comfyui_genart.core.image_sets import RandomCodeImages

    vq = shipped[0]
    a, b = (RandomCodeImages(vq, 5, 4, 4, 3, "r", chunk_size=c) for c in (2, 5))
    assert torch.allclose(torch.cat(list(a.chunks())), torch.cat(list(b.chunks())), atol=1e-5)


def test_dataset_set_counts_and_subsets(tmp_path):
    from comfyui_genart.core.dataset import open_image_folder
    from comfyui_genart.core.image_sets import dataset_images

    data = open_image_folder(emoji_like_folder(tmp_path / "d", count=12, size=16), 16, 0.3)
    whole = dataset_images(data, "train", 0, 0, "d")
    assert whole.count == len(data.train) and whole.label == f"d train ({len(data.train)})"
    sub = dataset_images(data, "train", 3, 5, "d")
    assert sub.count == 3 and "random 3 of" in sub.label and sub.names == dataset_images(data, "train", 3, 5, "d").names
    assert sub.names != dataset_images(data, "train", 3, 6, "d").names
    assert torch.equal(torch.cat(list(sub.chunks())), torch.stack([data.load(n) for n in sub.names]))
    with pytest.raises(ValueError, match=f"has {len(data.train)} images; use at most"):
        dataset_images(data, "train", 99, 0, "d")


def test_evaluate_workflow_reports_every_figure(pack, paths):
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    emoji_like_folder(paths.input_dir / "data", count=24, size=32)
    report = Executor(pack.REGISTRY, RunSettings(paths=paths)).run(evaluation_prompt())
    saved = json.loads(next((paths.output_dir / "evaluate").glob("default-model_*.json")).read_text())
    table = saved["table"]
    rows = " | ".join(table)
    assert "[VQ encoder vqgan/genart-emoji32 (128-d)]" in rows, "the extractor is named in the labels"
    assert "samples of unet/genart-emoji32 (8, DDIMScheduler 2 steps, seed 0)" in rows, "so are the sets and sizes"
    figures = {m: v for cells in table.values() for m, v in cells.items()}
    for metric in ("psnr", "ssim", "codebook_usage", "frechet_distance", "kid", "kid_std", "precision", "recall",
                   "density", "coverage", "nn_distance", "nn_ratio", "near_copies"):
        assert isinstance(figures.get(metric), float), metric
    fd = {label.split(":")[0]: cells["frechet_distance"] for label, cells in table.items()
          if "frechet_distance" in cells}
    assert fd["floor"] < fd["ceiling"], "two real sets are closer than random codes are to real data"
    grid_node = next(i for i, n in evaluation_prompt().items() if n["class_type"] == "GenArtMemorization")
    assert {n.node_id: n.status for n in report.nodes}[grid_node] == "ran"
    samples = next((paths.output_dir / "evaluate").glob("samples_*.png"))
    memorization = next((paths.output_dir / "evaluate").glob("memorization_*.png"))
    from PIL import Image

    with Image.open(samples) as im:
        assert im.size == (4 * 34 + 2, 34 + 2)
    with Image.open(memorization) as im:
        assert im.size == (3 * 34 + 2, 3 * 34 + 2), "3 rows of sample | nearest | second nearest"


def test_reference_features_are_computed_once_per_dataset_files(pack, paths, tmp_path):
    from comfyui_genart.graph.cache import DiskCache, OutputCache
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    folder = emoji_like_folder(paths.input_dir / "data", count=24, size=32)
    prompt = {k: v for k, v in evaluation_prompt().items()
              if v["class_type"] in ("GenArtLoadImageFolder", "GenArtLoadVQModel", "GenArtDatasetImageSet",
                                     "GenArtVQEncoderFeatures", "GenArtExtractFeatures")}
    prompt = {k: v for k, v in prompt.items() if all(link[0] in prompt for link in v["inputs"].values()
                                                      if isinstance(link, list))}
    extract = sorted(i for i, n in prompt.items() if n["class_type"] == "GenArtExtractFeatures")
    prompt["90"] = {"class_type": "GenArtFrechetDistance", "inputs": {"real": [extract[0], 0],
                                                                      "generated": [extract[1], 0]}}
    prompt["91"] = {"class_type": "GenArtMetricsReport", "inputs": {"metrics_1": ["90", 0]}}
    extract = extract[:2]
    settings = RunSettings(paths=paths)
    disk = DiskCache(tmp_path / "cache")
    first = Executor(pack.REGISTRY, settings, cache=OutputCache(), disk_cache=disk).run(prompt, keep="all")
    assert all(status(first)[i] == "ran" for i in extract)
    # A new process (a fresh in-process cache) with the same --cache-dir: read from disk, the same numbers.
    second = Executor(pack.REGISTRY, settings, cache=OutputCache(), disk_cache=disk).run(prompt, keep="all")
    assert all(status(second)[i] == "disk" for i in extract)
    for i in extract:
        a, b = first.outputs[i]["feature_set"], second.outputs[i]["feature_set"]
        assert torch.equal(a.features, b.features) and (a.label, a.extractor) == (b.label, b.extractor)
    # A changed file in the dataset: the features are extracted again.
    touched = folder / "e00.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    third = Executor(pack.REGISTRY, settings, cache=OutputCache(), disk_cache=disk).run(prompt)
    assert all(status(third)[i] == "ran" for i in extract)


def status(report):
    return {n.node_id: n.status for n in report.nodes}


@torch.inference_mode()
def test_memorization_finds_planted_copies(shipped, tmp_path):
    from comfyui_genart.core.dataset import open_image_folder
    from comfyui_genart.core.features import VQEncoderFeatures, extract_features
    from comfyui_genart.core.image_sets import TensorImages, dataset_images
    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes.evaluate import Memorization

    data = open_image_folder(emoji_like_folder(tmp_path / "d", count=24, size=32), 32, 0.0)
    training = dataset_images(data, "train", 0, 0, "d")
    # 'Generated': three training images shifted by a pixel (near copies, not byte copies) and two noise images.
    copies = torch.stack([data.load(n) for n in data.train[4:7]]).roll(1, dims=-1)
    noise = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    generated = TensorImages(torch.cat([copies, noise]), "planted (5)")
    extractor = VQEncoderFeatures(shipped[0], "vq")
    node = Memorization(training=extract_features(extractor, training),
                        generated=extract_features(extractor, generated),
                        training_images=training, generated_images=generated, show=3)
    out = node.run(RunContext(RunSettings()))
    nearest = next(m for m in out.metrics.measurements if m.metric == "nn_ratio").items
    assert max(nearest[:3]) < min(nearest[3:]), "the copies stand out from the noise"
    assert out.lowest_ratio == pytest.approx(min(nearest))
    assert out.grid.shape == (1, 3 * 34 + 2, 3 * 34 + 2, 3)
    # Row 1 pairs the most suspicious sample with its nearest training image: one of the originals.
    first_pair = out.grid[0, 2:34, 36:68].permute(2, 0, 1)
    assert any(torch.allclose(first_pair, data.load(n), atol=1e-6) for n in data.train[4:7])
    with pytest.raises(ValueError, match="connect the image set they came from"):
        Memorization(training=node.training, generated=node.generated, training_images=generated,
                     generated_images=generated).run(RunContext(RunSettings()))


def test_metric_nodes_refuse_features_of_different_extractors(shipped):
    from comfyui_genart.core.features import FeatureSet
    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes.evaluate import FrechetDistance

    a = FeatureSet(torch.randn(10, 4, dtype=torch.float64), "a (10)", "VQ encoder x (4-d)")
    b = FeatureSet(torch.randn(10, 4, dtype=torch.float64), "b (10)", "FID Inception pool3 (f.pth)")
    with pytest.raises(ValueError, match="different extractors"):
        FrechetDistance(real=a, generated=b).run(RunContext(RunSettings()))


def test_inception_node_without_the_weights_names_the_folder(pack, paths):
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.errors import WorkflowInvalid
    from comfyui_genart.graph.executor import Executor

    prompt = {"1": {"class_type": "GenArtInceptionFeatures", "inputs": {}},
              "2": {"class_type": "GenArtPatternImage", "inputs": {"width": 32, "height": 32}},
              "3": {"class_type": "GenArtImageBatchSet", "inputs": {"image": ["2", 0]}},
              "4": {"class_type": "GenArtExtractFeatures", "inputs": {"features": ["1", 0], "image_set": ["3", 0]}},
              "5": {"class_type": "GenArtFrechetDistance", "inputs": {"real": ["4", 0], "generated": ["4", 0]}},
              "6": {"class_type": "GenArtMetricsReport", "inputs": {"metrics_1": ["5", 0]}}}
    with pytest.raises(WorkflowInvalid) as err:
        Executor(pack.REGISTRY, RunSettings(paths=paths)).run(prompt)
    text = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in text and str(paths.models_dirs[0] / "inception") in text
