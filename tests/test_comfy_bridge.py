"""ComfyUI's sampling semantics, prompt encoding, the bridges and the headless core-node stand-ins, on tiny SD-shaped
models (no ComfyUI needed; tests/test_comfyui_live.py compares with a real ComfyUI)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_models import SD_UNET, SD_VAE
from tiny_models import tiny_clip

from comfyui_genart.core import comfy_bridge
from comfyui_genart.core.comfy_text import token_weights, tokenize_with_weights
from comfyui_genart.core.formats.sd1_export import sd1_state
from comfyui_genart.core.handles import Conditioning
from comfyui_genart.core.ksampling import DiscreteSchedule, comfy_sigmas

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A tiny SD 1.x-shaped checkpoint (LDM layout) under models/checkpoints, its config folder standing in for
    the shipped SD 1.5 one, and the diffusers models it was written from."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = tmp_path_factory.mktemp("tiny-sd")
    config = root / "models" / "configs" / "stable-diffusion-v1-5"
    torch.manual_seed(10)
    unet, vae = UNet2DConditionModel(**SD_UNET).eval(), AutoencoderKL(**SD_VAE).eval()
    tokenizer, clip = tiny_clip(root / "vocab")
    unet.save_config(config / "unet")
    vae.save_config(config / "vae")
    clip.config.save_pretrained(config / "text_encoder")
    tokenizer.save_pretrained(config / "tokenizer")
    shutil.copytree(REPO / "models/configs/stable-diffusion-v1-5/scheduler", config / "scheduler")
    from safetensors.torch import save_file

    (root / "models" / "checkpoints").mkdir(parents=True)
    state = sd1_state(unet, vae, clip)
    save_file({k: v.clone() for k, v in state.items()}, str(root / "models/checkpoints/tiny-sd.safetensors"))
    return SimpleNamespace(root=root, configs=root / "models" / "configs", unet=unet, vae=vae, clip=clip,
                           tokenizer=tokenizer, state=state)


@pytest.fixture()
def sd_paths(tiny_sd, tmp_path, monkeypatch):
    from comfyui_genart.graph.safety import Paths
    from comfyui_genart.nodes import comfy_standins

    monkeypatch.setattr(comfy_standins, "SHIPPED_CONFIGS", tiny_sd.configs)
    for sub in ("input", "output", "temp"):
        (tmp_path / sub).mkdir()
    return Paths(input_dir=tmp_path / "input", output_dir=tmp_path / "output", temp_dir=tmp_path / "temp",
                 models_dirs=[tiny_sd.root / "models"])


def _run(paths, prompt, keep=()):
    from comfyui_genart.graph.api import run_workflow
    from comfyui_genart.graph.context import RunSettings

    return run_workflow(prompt, settings=RunSettings(paths=paths), keep=keep)


def _txt2img(sampler="euler", scheduler="normal", steps=3, cfg=7.0, denoise=1.0, size=64):
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.3) cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 7, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": denoise}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t2i"}},
    }


# ---------------------------------------------------------------------------------------------------
# Schedules and sigma lists


def test_ksampling_schedule_equals_diffusers_training_sigmas():
    from diffusers import EulerDiscreteScheduler

    s = DiscreteSchedule.from_betas(0.00085, 0.012)
    ref = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    expected = ((1 - ref.alphas_cumprod) / ref.alphas_cumprod) ** 0.5
    torch.testing.assert_close(s.sigmas, expected.float(), atol=2e-6, rtol=1e-5)
    assert s.timestep(s.sigmas[[0, 500, 999]]).tolist() == [0, 500, 999]
    assert float(s.sigma(torch.tensor(999.0))) == pytest.approx(float(s.sigma_max), rel=1e-6)  # exp(log(sigma))
    assert s.diffusers_config["beta_schedule"] == "scaled_linear"


def test_ksampling_sigma_lists_follow_comfyui():
    s = DiscreteSchedule.from_betas(0.00085, 0.012)
    normal = comfy_sigmas(s, "normal", 4)
    assert normal.shape == (5,) and normal[-1] == 0 and float(normal[0]) == pytest.approx(float(s.sigma_max), rel=1e-6)
    assert torch.all(normal[:-1] > normal[1:])
    karras = comfy_sigmas(s, "karras", 4)
    rho = 7.0
    hi, lo = s.sigma_max.item() ** (1 / rho), s.sigma_min.item() ** (1 / rho)
    expected = [(hi + r * (lo - hi)) ** rho for r in (0, 1 / 3, 2 / 3, 1)]
    torch.testing.assert_close(karras[:-1], torch.tensor(expected), atol=1e-5, rtol=1e-5)
    # denoise < 1: the last steps + 1 sigmas of an int(steps / denoise)-step list (ComfyUI), not diffusers' strength.
    assert torch.equal(comfy_sigmas(s, "normal", 4, denoise=0.5), comfy_sigmas(s, "normal", 8)[-5:])
    assert comfy_sigmas(s, "normal", 4, denoise=0.0).numel() == 0
    with pytest.raises(ValueError, match="'scheduler' = 'beta' is not supported here"):
        comfy_sigmas(s, "beta", 4)


# ---------------------------------------------------------------------------------------------------
# Prompts


def test_comfy_text_parses_weights_as_comfyui():
    assert token_weights("a (b:1.5) (c) ((d))") == [("a ", 1.0), ("b", 1.5), (" ", 1.0), ("c", 1.1), (" ", 1.0),
                                                      ("d", pytest.approx(1.21))]
    assert token_weights("x (y:oops)") == [("x ", 1.0), ("y:oops", pytest.approx(1.1))]


def test_comfy_text_chunks_of_77_padded_with_the_end_token(tiny_sd):
    tok = tiny_sd.tokenizer
    (chunk,) = tokenize_with_weights(tok, "a photo of a \\(red\\) cat")
    assert len(chunk) == 77 and chunk[0] == (tok.bos_token_id, 1.0)
    ids = tok("a photo of a (red) cat", padding="max_length", max_length=77).input_ids
    assert [t for t, _ in chunk] == ids  # as the diffusers pipeline tokenizes it (padded with the end token)
    long = tokenize_with_weights(tok, " ".join(["cat"] * 100))
    assert [len(c) for c in long] == [77, 77]
    assert [t for t, _ in long[0]].count(tok.convert_tokens_to_ids("cat</w>")) == 75


# ---------------------------------------------------------------------------------------------------
# Headless stand-ins


def test_standins_run_the_default_workflow_shape_headless(sd_paths):
    report = _run(sd_paths, _txt2img(), keep=["3", "6"])
    latent = report.outputs["3"]["LATENT"]["samples"]
    assert latent.shape == (1, 4, 8, 8) and torch.isfinite(latent).all()
    (cond, options), = report.outputs["6"]["CONDITIONING"]
    assert cond.shape == (1, 77, 32) and options["pooled_output"].shape == (1, 32)
    (record,) = report.ui["9"]["images"]
    assert (sd_paths.output_dir / record["filename"]).is_file()


def test_standin_ksampler_one_euler_step_is_the_denoised_prediction(sd_paths, tiny_sd):
    """One euler step from the schedule's maximum: noise * sqrt(1 + sigma^2) in, x / sqrt(sigma^2 + 1) and the
    nearest integer timestep to the UNet, cfg on x - eps * sigma, out / 0.18215: checked against the UNet by hand."""
    from comfyui_genart.core.noise import prepare_noise

    prompt = _txt2img(steps=1, cfg=3.0)
    report = _run(sd_paths, prompt, keep=["3", "6", "7"])
    s = DiscreteSchedule.from_betas(0.00085, 0.012)
    sigma = s.sigma_max
    noise = prepare_noise((1, 4, 8, 8), 7)
    x = noise * torch.sqrt(1.0 + sigma ** 2)
    cond, uncond = report.outputs["6"]["CONDITIONING"][0][0], report.outputs["7"]["CONDITIONING"][0][0]
    with torch.no_grad():
        out = tiny_sd.unet(torch.cat([x, x]) / (sigma ** 2 + 1) ** 0.5, torch.tensor([999.0, 999.0]),
                           encoder_hidden_states=torch.cat([uncond, cond])).sample
    den_uncond, den_cond = (torch.cat([x, x]) - out * sigma).chunk(2)
    expected = (den_uncond + (den_cond - den_uncond) * 3.0) / 0.18215
    torch.testing.assert_close(report.outputs["3"]["LATENT"]["samples"], expected, atol=1e-4, rtol=1e-5)


def test_standin_ksampler_samplers(sd_paths):
    runs = {name: _run(sd_paths, _txt2img(sampler=name, scheduler="karras"), keep=["3"]).outputs["3"]["LATENT"]
            ["samples"] for name in ("euler", "ddim", "euler_ancestral", "dpmpp_2m")}
    assert torch.equal(runs["euler"], runs["ddim"])  # ComfyUI runs ddim as euler (its own noise only when inpainting)
    assert not torch.allclose(runs["euler"], runs["euler_ancestral"])
    assert not torch.allclose(runs["euler"], runs["dpmpp_2m"])
    again = _run(sd_paths, _txt2img(sampler="euler_ancestral", scheduler="karras"), keep=["3"])
    assert torch.equal(again.outputs["3"]["LATENT"]["samples"], runs["euler_ancestral"])


def test_standin_img2img_keeps_the_image_at_low_denoise(sd_paths):
    from PIL import Image

    Image.new("RGB", (67, 64), (200, 40, 90)).save(sd_paths.input_dir / "in.png")
    prompt = _txt2img(denoise=0.3)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    prompt["5"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    report = _run(sd_paths, prompt, keep=["5", "3"])
    start, end = report.outputs["5"]["LATENT"]["samples"], report.outputs["3"]["LATENT"]["samples"]
    assert start.shape == (1, 4, 16, 16)  # 67 pixels centre-cropped to 64 as ComfyUI does (the tiny VAE is f=4)
    prompt["3"]["inputs"]["denoise"] = 1.0
    full = _run(sd_paths, prompt, keep=["3"]).outputs["3"]["LATENT"]["samples"]
    assert (end - start).abs().mean() < (full - start).abs().mean()


def test_standin_scale_to_total_pixels_keeps_the_aspect_as_comfyui():
    """ImageScaleToTotalPixels (the img2img template's): sqrt(int(MP * 2^20) / (w * h)) per side, rounded; lanczos
    goes through 8-bit images as ComfyUI's does, the others are plain interpolation (no antialias, no clamp)."""
    import torch.nn.functional as F

    from comfyui_genart.nodes.comfy_standins import ComfyImageScaleToTotalPixels

    x = torch.rand(1, 48, 96, 3)

    def scale(method: str) -> torch.Tensor:
        node = ComfyImageScaleToTotalPixels(image=x, upscale_method=method, megapixels=0.01)
        return node.run(None).IMAGE

    assert scale("bicubic").shape == (1, 72, 145, 3)  # 10485 pixels asked: 145 x 72 = 10440
    expected = F.interpolate(x.permute(0, 3, 1, 2), size=(72, 145), mode="bicubic").permute(0, 2, 3, 1)
    assert torch.equal(scale("bicubic"), expected)
    lanczos = scale("lanczos")
    assert torch.equal(lanczos, torch.round(lanczos * 255) / 255) and lanczos.shape == (1, 72, 145, 3)


def test_protect_your_checkpoint_workflow_runs_headless_on_an_sd_checkpoint(sd_paths):
    """The shipped protect-your-checkpoint workflow (ComfyUI's Load Checkpoint -> bridge -> encoder PGD, then the
    same img2img edit of the clean and the protected image) runs headless with the stand-ins, shrunk onto the tiny
    SD checkpoint: the perturbation stays within eps, the protected image moves the checkpoint's own VAE latent,
    and the report measures both edits."""
    import json

    from comfyui_genart.graph.api import run_workflow
    from comfyui_genart.graph.context import RunSettings

    shutil.copy(REPO / "input" / "genart-example-emoji.png", sd_paths.input_dir)
    prompt = json.loads((REPO / "workflows" / "api" / "protect-your-checkpoint.json").read_text())
    prompt["1"]["inputs"]["ckpt_name"] = "tiny-sd.safetensors"
    prompt["2"]["inputs"]["image"] = "genart-example-emoji.png"  # ComfyUI's input/example.png in the workflow
    prompt["3"]["inputs"].update(width=32, height=32)
    prompt["5"]["inputs"]["steps"] = 5
    for sampler in ("10", "11"):
        prompt[sampler]["inputs"]["steps"] = 4
    report = run_workflow(prompt, settings=RunSettings(paths=sd_paths), keep=["3", "5", "21"])
    clean, protected = report.outputs["3"]["image"], report.outputs["5"]["image"]
    eps = prompt["5"]["inputs"]["eps"]
    assert clean.shape == protected.shape == (1, 32, 32, 3)
    assert 0 < float((protected - clean).abs().max()) <= eps + 1e-6
    assert float(report.outputs["21"]["distance"]) > 0
    assert "edit of protected vs clean" in report.outputs["24"]["table"]
    (grid,) = report.ui["18"]["images"]
    assert (sd_paths.output_dir / grid["subfolder"] / grid["filename"]).is_file()


# ---------------------------------------------------------------------------------------------------
# Bridges


class ModelSamplingDiscrete(torch.nn.Module):
    pass


class EPS:
    pass


class V_PREDICTION(EPS):  # ComfyUI's class name, which the bridge reads
    pass


class _Sampling(ModelSamplingDiscrete, EPS):
    def __init__(self, schedule):
        super().__init__()
        self.sigmas, self.linear_start, self.linear_end, self.num_timesteps = schedule.sigmas, 0.00085, 0.012, 1000


class _VSampling(_Sampling, V_PREDICTION):
    pass


class _Weights(torch.nn.Module):
    """ComfyUI's module as the bridge sees it: a state dict in the LDM layout."""

    def __init__(self, state):
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):
        return dict(self._state)

    def parameters(self, recurse=True):
        yield from self._state.values()


def _comfy_model(tiny_sd, family="SD15", sampling=_Sampling, **patcher):
    unet_config = {"in_channels": 4, "out_channels": 4, "model_channels": 16, "channel_mult": [1, 2, 2],
                   "num_res_blocks": [2, 2, 2], "transformer_depth": [1, 1, 1, 1, 0, 0], "context_dim": 32,
                   "num_heads": 8, "num_head_channels": -1, "use_linear_in_transformer": False}
    config = type(family, (), {"unet_config": unet_config, "sampling_settings": {}})()
    prefix = "model.diffusion_model."
    unet = {k[len(prefix):]: v for k, v in tiny_sd.state.items() if k.startswith(prefix)}
    base = SimpleNamespace(model_config=config, model_sampling=sampling(DiscreteSchedule.from_betas(0.00085, 0.012)),
                           latent_format=SimpleNamespace(scale_factor=0.18215), diffusion_model=_Weights(unet))
    return SimpleNamespace(model=base, patches=patcher.get("patches", {}), object_patches={},
                           model_options={"transformer_options": {}})


def test_bridge_model_shares_weights_and_equals_the_own_loader(tiny_sd):
    from comfyui_genart.core.formats.sd1_checkpoint import load_sd1_checkpoint

    comfy = _comfy_model(tiny_sd)
    model = comfy_bridge.diffusion_model(comfy, tiny_sd.configs / "stable-diffusion-v1-5")
    shared = {t.data_ptr() for t in comfy.model.diffusion_model.parameters()}
    assert all(p.data_ptr() in shared for p in model.denoiser.model.parameters()), "weights were copied"
    assert (model.denoiser.latent_scale, model.denoiser.prediction_type) == (0.18215, "epsilon")
    own = load_sd1_checkpoint(tiny_sd.root / "models/checkpoints/tiny-sd.safetensors", "tiny",
                              tiny_sd.configs / "stable-diffusion-v1-5", False, torch.device("cpu"), torch.float32)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    c = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model.denoiser.model(x, 321, encoder_hidden_states=c).sample,
                           own.unet(x, 321, encoder_hidden_states=c).sample)
    assert comfy_bridge.diffusion_model(model) is model  # headless objects pass through


def test_bridge_model_reads_v_prediction_and_refuses_others(tiny_sd):
    v = comfy_bridge.diffusion_model(_comfy_model(tiny_sd, sampling=_VSampling), tiny_sd.configs /
                                     "stable-diffusion-v1-5")
    assert v.schedule.prediction_type == "v_prediction" == v.schedule.diffusers_config["prediction_type"]
    with pytest.raises(ValueError, match=r"is a SDXL model; the bridge converts Stable Diffusion 1.x and 2.x"):
        comfy_bridge.diffusion_model(_comfy_model(tiny_sd, family="SDXL"))
    with pytest.raises(ValueError, match=r"carries weight patches \(LoRA\)"):
        comfy_bridge.diffusion_model(_comfy_model(tiny_sd, patches={"k": [1]}))


def test_bridge_conditioning_repeats_to_the_lcm_of_lengths():
    a, b = torch.randn(1, 154, 8), torch.randn(1, 77, 8)
    cond = comfy_bridge.conditioning([[a, {"pooled_output": None}]], [[b, {}]])
    assert isinstance(cond, Conditioning) and cond.cond.shape == cond.uncond.shape == (1, 154, 8)
    assert torch.equal(cond.uncond[:, 77:], b)
    with pytest.raises(ValueError, match="holds 2 conditionings"):
        comfy_bridge.conditioning([[a, {}], [a, {}]], None)
    with pytest.raises(ValueError, match=r"carries \['area'\]"):
        comfy_bridge.conditioning([[a, {"area": (8, 8, 0, 0)}]], None)


def test_bridge_nodes_headless_equal_genart_sample_latent_path(sd_paths):
    """Load Checkpoint -> GenArt Denoiser From MODEL -> GenArt Sample Latent equals the GenArt loader's denoiser
    with the same scheduler, bit for bit (headless the MODEL is the same diffusers UNet)."""
    base = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "20": {"class_type": "GenArtDenoiserFromModel", "inputs": {"model": ["4", 0], "kind": "DDIM"}},
        "21": {"class_type": "GenArtConditioningFromComfy", "inputs": {"positive": ["6", 0], "negative": ["7", 0]}},
        "22": {"class_type": "GenArtEmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                             "channels": 4, "downscale_factor": 8}},
        "23": {"class_type": "GenArtSampleLatent", "inputs": {
            "denoiser": ["20", 0], "scheduler": ["20", 1], "latent": ["22", 0], "conditioning": ["21", 0],
            "seed": 3, "steps": 4, "cfg": 5.0, "denoise": 1.0, "start_step": 0, "end_step": -1, "add_noise": True,
            "return_trajectory_every": 0}},
        "24": {"class_type": "GenArtAutoencoderFromVAE", "inputs": {"vae": ["4", 2]}},
        "25": {"class_type": "GenArtDecodeKL", "inputs": {"autoencoder": ["24", 0], "latent": ["23", 0]}},
        "26": {"class_type": "PreviewImage", "inputs": {"images": ["25", 0]}},
    }
    own = {**base, "30": {"class_type": "GenArtLoadSD15Checkpoint", "inputs": {
        "ckpt_name": "tiny-sd.safetensors", "config": "stable-diffusion-v1-5", "use_ema": False, "device": "auto",
        "dtype": "auto"}}}
    own["23"] = {**base["23"], "inputs": {**base["23"]["inputs"], "denoiser": ["30", 1]}}
    a = _run(sd_paths, base, keep=["23", "20"])
    b = _run(sd_paths, own, keep=["23"])
    assert a.outputs["20"]["scheduler"].class_name == "DDIMScheduler"
    assert a.outputs["20"]["scheduler"].config["steps_offset"] == 1
    assert torch.equal(a.outputs["23"]["latent"]["samples"], b.outputs["23"]["latent"]["samples"])
    assert math.isfinite(float(a.outputs["23"]["latent"]["samples"].abs().mean()))
