"""GAN nodes on the shipped generator: the noise controls (strength 0 ignores the noise seed bit for bit, one
block's noise changes the image but not what z draws), block_strengths errors, interpolation ends equal to
Generate's images, items independent of the batch and chunk, the loader and Save Model round trip, and the
gan-vs-diffusion workflow shrunk to a test folder."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import REPO, emoji_like_folder

SHIPPED = REPO / "models/gan/genart-emoji32"


def executor(paths):
    from comfyui_genart.graph.cache import OutputCache
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor
    from comfyui_genart.nodes import REGISTRY

    return Executor(REGISTRY, RunSettings(paths=paths), cache=OutputCache())


LOAD = {"class_type": "GenArtLoadGAN", "inputs": {"model_name": "genart-emoji32"}}


def images(paths, class_type, **inputs):
    """The IMAGE of one GAN node fed by the shipped generator (run through the engine, cached across calls)."""
    prompt = {"1": LOAD, "2": {"class_type": class_type, "inputs": {"gan": ["1", 0], **inputs}},
              "3": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["2", 0]}}}
    report = executor(paths).run(prompt, keep="all")
    return report.outputs["2"]["image"]


@pytest.fixture(scope="module")
def gan():
    from comfyui_genart.core.gan_models import GANGenerator

    torch.set_num_threads(1)
    return GANGenerator.from_pretrained(SHIPPED, local_files_only=True).eval()


def test_gan_strength_zero_ignores_the_noise_seed_bit_for_bit(paths):
    a = images(paths, "GenArtGenerateGAN", batch_size=4, noise_strength=0.0, noise_seed=0)
    b = images(paths, "GenArtGenerateGAN", batch_size=4, noise_strength=0.0, noise_seed=123)
    assert a.shape == (4, 32, 32, 3) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    # Zero factors on every block: the same; and no noise drawn at all: the same again.
    c = images(paths, "GenArtGenerateGAN", batch_size=4, block_strengths="0, 0, 0, 0", noise_seed=5)
    d = images(paths, "GenArtGenerateGAN", batch_size=4, noise_kind="none", noise_seed=9)
    assert torch.equal(a, c) and torch.equal(a, d)
    # With noise on, the seed matters; the seed of z still fixes what is drawn.
    e, f = (images(paths, "GenArtGenerateGAN", batch_size=4, noise_seed=s) for s in (0, 1))
    assert not torch.equal(e, f)


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "laplace"])
def test_gan_one_block_of_noise_changes_the_image_not_its_content(gan, kind):
    """Noise on one block only changes the image (more with a larger strength) far less than another z does.
    On the shipped model (64 seeds, psi 1, gaussian): mean |change| per block ~0.0011, 0.0025, 0.0011, 0.0002
    at strength 1 and ~0.030, 0.062, 0.029, 0.007 at 30; another z changes it by ~0.26."""
    from comfyui_genart.core.gan_sampling import NoiseSettings, generate

    with torch.inference_mode():
        silent = generate(gan, 0, 16, NoiseSettings(0.0, kind, 0))
        other_z = float((generate(gan, 100, 16, NoiseSettings(0.0, kind, 0)) - silent).abs().mean())
        for block in range(gan.num_blocks):
            changes = []
            for strength in (1.0, 30.0):
                strengths = [strength if i == block else 0.0 for i in range(gan.num_blocks)]
                noisy = generate(gan, 0, 16, NoiseSettings(strengths, kind, 0))
                changes.append(float((noisy - silent).abs().mean()))
            assert 0 < changes[0] < changes[1], (block, changes)
            assert changes[1] < 0.4 * other_z, f"block {block} at strength 30 draws another image: {changes}"
    assert other_z > 0.15


def test_gan_items_do_not_depend_on_the_batch_and_same_z_repeats_item_0(paths):
    four = images(paths, "GenArtGenerateGAN", seed=3, batch_size=4, noise_seed=2)
    one = images(paths, "GenArtGenerateGAN", seed=3, batch_size=1, noise_seed=2)
    assert torch.equal(four[:1], one)
    assert (four[0] - four[1]).abs().mean() > 0.05, "items have their own z"
    same = images(paths, "GenArtGenerateGAN", seed=3, batch_size=3, noise_seed=2, same_z=True)
    assert torch.equal(same[:1], one), "item 0 is the same image"
    assert 0 < (same[1] - same[0]).abs().mean() < 0.02, "the other items change only by their layer noise"
    quiet = images(paths, "GenArtGenerateGAN", seed=3, batch_size=3, noise_strength=0.0, same_z=True)
    assert torch.equal(quiet[0], quiet[1]) and torch.equal(quiet[0], quiet[2])


def test_gan_block_strengths_errors_are_clear(paths):
    from comfyui_genart.core.gan_sampling import block_strengths, parse_block_strengths
    from comfyui_genart.graph.errors import NodeExecutionError, WorkflowInvalid

    assert parse_block_strengths("") is None and parse_block_strengths("  ") is None
    assert parse_block_strengths("1, 0.5,0 2") == [1.0, 0.5, 0.0, 2.0]
    assert block_strengths(2.0, "1, 0, 0.5, 0", 4) == [2.0, 0.0, 1.0, 0.0]
    assert block_strengths(0.5, "", 4) == [0.5] * 4
    with pytest.raises(ValueError, match=r"block_strengths '1, x, 0, 1': 'x' is not a number; give one number per"):
        parse_block_strengths("1, x, 0, 1")
    with pytest.raises(ValueError, match=r"'-1' is not allowed; each block's factor is a finite number >= 0"):
        parse_block_strengths("1, -1, 0, 1")
    with pytest.raises(ValueError, match="'nan' is not allowed"):
        parse_block_strengths("1, nan, 0, 1")
    # Syntax is checked before anything runs, with ComfyUI's error shape.
    bad = {"gan": ["1", 0], "block_strengths": "1;a"}
    prompt = {"1": LOAD, "2": {"class_type": "GenArtGenerateGAN", "inputs": bad},
              "3": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["2", 0]}}}
    with pytest.raises(WorkflowInvalid) as info:
        executor(paths).validate(prompt)
    (err,) = info.value.to_json()["node_errors"]["2"]["errors"]
    assert err["extra_info"]["input_name"] == "block_strengths"
    assert "'a' is not a number" in err["message"] + str(err.get("details"))
    # The count is known once the model is: a run-time error that says how many blocks there are.
    with pytest.raises(NodeExecutionError, match=r"gives 3 values but the generator has 4 blocks \(4x4 up to 32x32\); "
                       r"give exactly 4, e\.g\. '1, 1, 1, 1'"):
        images(paths, "GenArtInterpolateGAN", block_strengths="1, 0, 1")


@pytest.mark.parametrize("slerp", [True, False])
def test_gan_interpolation_ends_are_generates_images(paths, slerp):
    settings = {"truncation_psi": 0.8, "noise_strength": 5.0, "block_strengths": "0, 1, 1, 0", "noise_seed": 4}
    frames = images(paths, "GenArtInterpolateGAN", seed_a=11, seed_b=12, frames=5, slerp=slerp, **settings)
    assert frames.shape == (5, 32, 32, 3)
    for end, seed in ((frames[0], 11), (frames[-1], 12)):
        assert torch.equal(end, images(paths, "GenArtGenerateGAN", seed=seed, batch_size=1, **settings)[0])
    steps = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))
    assert (steps > 0).all() and steps.max() < (frames[-1] - frames[0]).abs().mean()


def test_gan_slerp_and_lerp_differ_between_the_ends():
    from comfyui_genart.core.gan_sampling import interpolated_latents, item_latents

    s, lin = (interpolated_latents(1, 2, 3, 128, spherical) for spherical in (True, False))
    assert torch.equal(s[0], item_latents(1, 1, 128)[0]) and torch.equal(s[2], item_latents(2, 1, 128)[0])
    assert torch.equal(s[[0, 2]], lin[[0, 2]])
    assert s[1].norm() > lin[1].norm(), "slerp keeps the norm; the straight line cuts inside the sphere"
    with pytest.raises(ValueError, match="frames must be at least 2"):
        interpolated_latents(1, 2, 1, 128)


def test_gan_loader_and_save_model_round_trip_bit_exactly(paths, gan):
    from safetensors import safe_open

    from comfyui_genart.core.gan_sampling import NoiseSettings, generate

    prompt = {"1": LOAD, "2": {"class_type": "GenArtSaveModel", "inputs": {"gan": ["1", 0], "filename_prefix": "rt/g"}}}
    report = executor(paths).run(prompt, keep="all")
    loaded = report.outputs["1"]["gan"]
    assert loaded.source == "gan/genart-emoji32" and not loaded.model.training
    assert not any(p.requires_grad or p.is_inference() for p in loaded.model.parameters())
    (saved,) = report.ui["2"]["models"]
    assert (saved["filename"], saved["kind"], saved["class_name"]) == ("g_gan_00001_.safetensors", "gan",
                                                                       "GANGenerator")
    file = paths.output_dir / "rt" / saved["filename"]
    with safe_open(str(file), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["_class_name"] == "GANGenerator"
    (paths.models_dirs[0] / "gan").mkdir()
    shutil.copy(file, paths.models_dirs[0] / "gan" / "saved.safetensors")
    again = executor(paths).run({"1": {"class_type": "GenArtLoadGAN", "inputs": {"model_name": "saved.safetensors"}},
                                 "2": {"class_type": "GenArtSaveModel", "inputs": {"gan": ["1", 0]}}}, keep="all")
    model = again.outputs["1"]["gan"].model
    reference = gan.state_dict()
    assert list(model.state_dict()) == list(reference)
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, reference[key]), key
    noise = NoiseSettings(1.0, "gaussian", 3, 0.9)
    with torch.inference_mode():
        assert torch.equal(generate(model, 5, 3, noise), generate(loaded.model, 5, 3, noise))


def test_gan_loader_names_the_right_loader_for_another_model(paths):
    from comfyui_genart.graph.errors import WorkflowInvalid

    folder = paths.models_dirs[0] / "gan" / "a-vqgan"
    folder.mkdir(parents=True)
    shutil.copy(REPO / "models/vqgan/genart-emoji32/config.json", folder / "config.json")
    prompt = {"1": {"class_type": "GenArtLoadGAN", "inputs": {"model_name": "a-vqgan"}},
              "2": {"class_type": "GenArtSaveModel", "inputs": {"gan": ["1", 0]}}}
    with pytest.raises(WorkflowInvalid) as info:
        executor(paths).validate(prompt)
    text = json.dumps(info.value.to_json())
    assert "holds a model of class VQModel; GenArtLoadGAN loads GANGenerator: load it with GenArtLoadVQModel" in text


@torch.inference_mode()
def test_gan_image_set_is_chunk_size_independent(gan):
    from comfyui_genart.core.gan_sampling import NoiseSettings, generate
    from comfyui_genart.core.image_sets import GANImages

    noise = NoiseSettings([1.0, 2.0, 0.0, 1.0], "laplace", 7, 0.9)
    sets = [GANImages(gan, 5, 3, noise, "g", chunk_size=c) for c in (2, 5)]
    made = [torch.cat(list(s.chunks())) for s in sets]
    assert made[0].shape == (5, 3, 32, 32) and made[0].dtype == torch.float32
    assert torch.equal(made[0], made[1])
    assert torch.equal(made[0], generate(gan, 3, 5, noise)), "the same items as Generate's batch"
    assert torch.equal(sets[0].take([4, 0]), made[0][[4, 0]])


def test_gan_image_set_node_labels_its_noise(paths):
    prompt = {"1": LOAD, "2": {"class_type": "GenArtGANImageSet", "inputs": {"gan": ["1", 0], "count": 3}},
              "3": {"class_type": "GenArtGANImageSet", "inputs": {"gan": ["1", 0], "count": 3, "noise_strength": 30.0,
                                                                  "block_strengths": "0, 1, 0, 0", "noise_seed": 2}},
              "4": {"class_type": "GenArtImageSetImages", "inputs": {"image_set": ["2", 0], "count": 3}},
              "5": {"class_type": "GenArtImageSetImages", "inputs": {"image_set": ["3", 0], "count": 3}},
              "6": {"class_type": "GenArtBatchImages", "inputs": {"image_a": ["4", 0], "image_b": ["5", 0]}},
              "7": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["6", 0]}}}
    report = executor(paths).run(prompt, keep="all")
    plain, noisy = report.outputs["2"]["image_set"], report.outputs["3"]["image_set"]
    assert plain.label == "samples of gan/genart-emoji32 (3, psi 1, seed 0)"
    assert noisy.label == "samples of gan/genart-emoji32 (3, psi 1, seed 0, noise gaussian x30 [0, 1, 0, 0] seed 2)"
    generated = images(paths, "GenArtGenerateGAN", batch_size=3, noise_strength=30.0, block_strengths="0, 1, 0, 0",
                       noise_seed=2)
    assert torch.equal(report.outputs["5"]["image"], generated), "the set's items are Generate GAN's"


def gan_vs_diffusion_prompt(folder="data"):
    """The shipped gan-vs-diffusion workflow, shrunk: a test folder of 24 images, a few samples and steps."""
    prompt = json.loads((REPO / "workflows/api/gan-vs-diffusion.json").read_text())
    changes = {"GenArtLoadImageFolder": {"folder": folder, "holdout_fraction": 0.3},
               "GenArtSampleImageSet": {"count": 8, "steps": 2, "batch": 3},
               "GenArtGANImageSet": {"count": 8, "batch": 3},
               "GenArtRandomCodesImageSet": {"count": 8},
               "GenArtImageSetImages": {"count": 4},
               "GenArtKernelDistance": {"subsets": 5, "subset_size": 3}}
    for node in prompt.values():
        node["inputs"].update(changes.get(node["class_type"], {}))
        if node["class_type"] == "GenArtDatasetImageSet" and node["inputs"]["count"]:
            node["inputs"]["count"] = 6
    return prompt


def test_gan_vs_diffusion_workflow_reports_both_models(pack, paths):
    from PIL import Image

    emoji_like_folder(paths.input_dir / "data", count=24, size=32)
    report = executor(paths).run(gan_vs_diffusion_prompt())
    saved = json.loads(next((paths.output_dir / "gan-vs-diffusion").glob("report_*.json")).read_text())
    table = saved["table"]
    rows = {label.split(":")[0]: cells for label, cells in table.items()}
    labels = " | ".join(table)
    assert "samples of gan/genart-emoji32 (8, psi 1, seed 0)" in labels
    assert "samples of unet/genart-emoji32 (8, DDIMScheduler 2 steps, seed 0)" in labels
    fd = {label.split(":")[0]: cells["frechet_distance"] for label, cells in table.items()
          if "frechet_distance" in cells}
    assert sorted(fd) == ["ceiling", "diffusion", "floor", "gan", "gan psi 0.7"]
    for model in ("diffusion", "gan", "gan psi 0.7", "floor"):
        figures = {m: v for label, cells in table.items() if label.split(":")[0] == model for m, v in cells.items()}
        for metric in ("frechet_distance", "kid", "kid_std", "precision", "recall", "density", "coverage"):
            assert isinstance(figures.get(metric), float), (model, metric)
    assert set(rows) >= {"diffusion", "gan", "gan psi 0.7", "floor", "ceiling"} and report.ui
    grids = next((paths.output_dir / "gan-vs-diffusion").glob("samples_*.png"))
    with Image.open(grids) as im:
        one = 4 * 34 + 2  # a grid of 4 samples: 4 columns of 32 + 2 padding, one row
        assert im.size == (2 * one + 3 * 8, 34 + 2 + 2 * 8), "the two grids side by side"
