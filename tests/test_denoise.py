"""Denoising: text conditioning, the step node and the sampler, against diffusers' pipelines and each other.

Tiny models from configs, 16x16 latents, a few steps. Pipelines and our nodes run the same seeded
models, scheduler configs, steps and guidance; outputs must agree to 1e-5 (they agree bit for bit on
the CPU), and N chained step nodes must equal one N-step sampler bit for bit.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from conftest import REPO

# Stable Diffusion's schedule, with the settings StableDiffusionPipeline would otherwise patch in.
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1)
# name -> (diffusers class, extra config): the stateless and stateful schedulers the nodes promise to support.
SCHEDULERS = {
    "DDPM": ("DDPMScheduler", {"clip_sample": False}),
    "DDIM": ("DDIMScheduler", {"clip_sample": False}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "EulerAncestral": ("EulerAncestralDiscreteScheduler", {}),
    "DPMSolver++2M": ("DPMSolverMultistepScheduler", {}),
    "DPMSolver++2M-SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {"clip_sample": False}),
}
PROMPT, NEGATIVE = "a photo of a red cat", "blue dog"
TOLERANCE = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and OpenMP threads spinning on a busy 2-core machine made
    this module 5-10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lib(pack):
    from types import SimpleNamespace

    from comfyui_genart.core import denoising, handles
    from comfyui_genart.core import noise as core_noise
    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes import conditioning, decode, denoise, noise, sample

    return SimpleNamespace(ctx=RunContext(RunSettings(), "1", "test"), handles=handles, denoise=denoise,
                           denoising=denoising, sample=sample, conditioning=conditioning, decode=decode, noise=noise,
                           core_noise=core_noise)


@pytest.fixture(scope="module")
def models():
    from types import SimpleNamespace

    from tiny_models import tiny_clip, tiny_cond_unet, tiny_kl, tiny_unet, tiny_vq

    tokenizer, text_encoder = tiny_clip()
    return SimpleNamespace(unet=tiny_unet(), cond_unet=tiny_cond_unet(), kl=tiny_kl(), vq=tiny_vq(),
                           tokenizer=tokenizer, text_encoder=text_encoder)


def scheduler(lib, name, **extra):
    class_name, config = SCHEDULERS[name]
    return lib.handles.SchedulerHandle(class_name, {**SD_BETAS, **config, **extra})


def conditioning(lib, models, prompt=PROMPT, negative=NEGATIVE):
    encoder = lib.handles.TextEncoderHandle(models.tokenizer, models.text_encoder)
    node = lib.conditioning.EncodeText(text_encoder=encoder, prompt=prompt, negative_prompt=negative)
    return node.run(lib.ctx).conditioning


def sample(lib, denoiser, sched, latent, **inputs):
    node = lib.sample.SampleLatent(denoiser=denoiser, scheduler=sched, latent=latent, **inputs)
    return node.run(lib.ctx)


def step(lib, denoiser, sched, latent, **inputs):
    return lib.denoise.DenoiseStep(denoiser=denoiser, scheduler=sched, latent=latent, **inputs).run(lib.ctx).latent


def zeros(batch=2):
    return {"samples": torch.zeros(batch, 4, 16, 16)}


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------
# Noise and text conditioning


@pytest.mark.parametrize("shape, seed, batch_index", [((2, 4, 16, 16), 3, None), ((3, 4, 5, 5), 11, [2, 0, 2]),
                                                      ((1, 2, 2, 2), 7, [4])])
def test_seeded_noise_equals_prepare_noise_and_continues_its_stream(lib, shape, seed, batch_index):
    noise, generator = lib.core_noise.prepare_noise_and_generator(shape, seed, batch_index)
    assert torch.equal(noise, lib.core_noise.prepare_noise(shape, seed, batch_index))
    # The stream continues where the draws stopped: the next draw is not a repeat of the first one.
    after = torch.randn(noise.shape, generator=generator)
    assert not torch.equal(after, noise)


def test_encode_text_equals_pipeline_encode_prompt(lib, models):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    ours = conditioning(lib, models)
    tokenizer = copy.deepcopy(models.tokenizer)
    tokenizer.model_max_length = 77  # the bare tiny tokenizer sets no limit; the pipeline needs one
    pipe = StableDiffusionPipeline(vae=models.kl, text_encoder=models.text_encoder, tokenizer=tokenizer,
                                   unet=models.cond_unet, scheduler=DDIMScheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    with torch.inference_mode():
        cond, uncond = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, True, NEGATIVE)
    assert ours.cond.shape == (1, 77, 32)
    assert torch.equal(ours.cond, cond) and torch.equal(ours.uncond, uncond)
    assert not torch.equal(ours.cond, ours.uncond)


# ---------------------------------------------------------------------------------------------------
# Equivalence with diffusers pipelines


@pytest.mark.parametrize("pipeline", ["DDPMPipeline", "DDIMPipeline"])
def test_unconditional_sampler_equals_pipeline(lib, models, pipeline):
    import diffusers

    name = "DDPM" if pipeline == "DDPMPipeline" else "DDIM"
    sched = lib.handles.SchedulerHandle(SCHEDULERS[name][0], {})  # the pixel-space defaults these pipelines keep
    pipe = quiet(getattr(diffusers, pipeline)(unet=models.unet, scheduler=sched.fresh()))
    with torch.inference_mode():
        ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=6,
                   output_type="np").images
        out = sample(lib, lib.handles.DenoiserHandle(models.unet), sched, zeros(), seed=5, steps=6).latent
    ours = (out["samples"] / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert ((ref > 0) & (ref < 1)).mean() > 0.5, "most values unclamped, so the comparison sees them"
    assert max_diff(ours, ref) <= TOLERANCE


def test_unconditional_graph_with_vq_decoder_equals_ldm_pipeline(lib, models, monkeypatch):
    from diffusers import LDMPipeline

    sched = scheduler(lib, "DDIM")
    decoded = []  # what the pipeline hands its decoder: the unscaled latent, as our LATENT holds it
    decode = models.vq.decode
    monkeypatch.setattr(models.vq, "decode", lambda z, *a, **k: decoded.append(z) or decode(z, *a, **k))
    pipe = quiet(LDMPipeline(vqvae=models.vq, unet=models.unet, scheduler=sched.fresh()))
    # LDMPipeline divides by the VQ model's scaling_factor before decoding: the denoiser's latent_scale.
    denoiser = lib.handles.DenoiserHandle(models.unet, latent_scale=models.vq.config.scaling_factor)
    with torch.inference_mode():
        ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(9), num_inference_steps=5,
                   output_type="np").images
        out = sample(lib, denoiser, sched, zeros(), seed=9, steps=5).latent
        image = lib.decode.DecodeVQ(vqmodel=lib.handles.VQModelHandle(models.vq), latent=out,
                                    quantize_first=True).run(lib.ctx).image
    assert max_diff(out["samples"], decoded[0]) <= TOLERANCE
    assert max_diff(image.numpy(), ref) <= TOLERANCE


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_text_to_image_equals_stable_diffusion_pipeline(lib, models, name):
    from diffusers import StableDiffusionPipeline

    sched = scheduler(lib, name)
    tokenizer = copy.deepcopy(models.tokenizer)
    tokenizer.model_max_length = 77
    pipe = quiet(StableDiffusionPipeline(vae=models.kl, text_encoder=models.text_encoder, tokenizer=tokenizer,
                                         unet=models.cond_unet, scheduler=sched.fresh(), safety_checker=None,
                                         feature_extractor=None, requires_safety_checker=False))
    denoiser = lib.handles.DenoiserHandle(models.cond_unet, latent_scale=models.kl.config.scaling_factor)
    with torch.inference_mode():
        # The pipeline draws its latents from the generator on the CPU exactly as prepare_noise does, and
        # its stochastic schedulers continue that generator, as ours do.
        ref = pipe(PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_inference_steps=4, guidance_scale=7.5,
                   num_images_per_prompt=2, generator=torch.Generator().manual_seed(7), output_type="np").images
        out = sample(lib, denoiser, sched, zeros(), seed=7, steps=4, cfg=7.5,
                     conditioning=conditioning(lib, models)).latent
        image = lib.decode.DecodeKL(autoencoder=lib.handles.AutoencoderHandle(models.kl),
                                    latent=out).run(lib.ctx).image
    assert image.shape == (2, 32, 32, 3)
    assert max_diff(image.numpy(), ref) <= TOLERANCE


def img2img_pipeline(models, sched):
    """diffusers' StableDiffusionImg2ImgPipeline on the tiny conditional models and `sched`."""
    from diffusers import StableDiffusionImg2ImgPipeline

    tokenizer = copy.deepcopy(models.tokenizer)
    tokenizer.model_max_length = 77
    return quiet(StableDiffusionImg2ImgPipeline(
        vae=models.kl, text_encoder=models.text_encoder, tokenizer=tokenizer, unet=models.cond_unet,
        scheduler=sched.fresh(), safety_checker=None, feature_extractor=None, requires_safety_checker=False))


@pytest.mark.parametrize("name", ["DDIM", "Euler", "EulerAncestral", "DPMSolver++2M"])
def test_img2img_strength_equals_stable_diffusion_img2img_pipeline(lib, models, name):
    sched = scheduler(lib, name)
    pipe = img2img_pipeline(models, sched)
    scale = models.kl.config.scaling_factor
    raw = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 3
    with torch.inference_mode():
        # A 4-channel image is taken as latents already scaled; noise is the generator's first draw.
        ref = pipe(PROMPT, image=raw * scale, strength=0.6, num_inference_steps=5, guidance_scale=4.0,
                   negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(3), output_type="latent").images
        out = sample(lib, lib.handles.DenoiserHandle(models.cond_unet, latent_scale=scale), sched, {"samples": raw},
                     seed=3, steps=5, cfg=4.0, denoise=0.6, conditioning=conditioning(lib, models)).latent
    assert max_diff(out["samples"] * scale, ref) <= TOLERANCE


# ---------------------------------------------------------------------------------------------------
# Chained step nodes equal the sampler bit for bit


def chain(lib, denoiser, sched, latent, first, last, **inputs):
    for k in range(first, last):
        latent = step(lib, denoiser, sched, latent, step_index=k, **inputs)
    return latent


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_chained_steps_equal_sampler_bit_for_bit(lib, models, name):
    sched = scheduler(lib, name)
    cond = conditioning(lib, models)
    # Conditional with guidance and a latent scale that does not round-trip exactly, so the state's exact
    # scaled latent is what keeps the chain equal.
    denoiser = lib.handles.DenoiserHandle(models.cond_unet, latent_scale=0.18215)
    inputs = dict(seed=21, steps=5, cfg=3.0, conditioning=cond)
    with torch.inference_mode():
        reference = sample(lib, denoiser, sched, zeros(), **inputs).latent
        chained = chain(lib, denoiser, sched, zeros(), 0, 5, **inputs)
    assert lib.denoising.STATE_KEY not in chained and lib.denoising.STATE_KEY not in reference
    assert torch.equal(chained["samples"], reference["samples"])


@pytest.mark.parametrize("name", ["DDPM", "EulerAncestral", "DPMSolver++2M-SDE", "UniPC"])
def test_chained_steps_equal_sampler_for_img2img_with_noise_mask(lib, models, name):
    sched = scheduler(lib, name)
    denoiser = lib.handles.DenoiserHandle(models.unet, latent_scale=0.5)
    mask = torch.zeros(1, 32, 32)
    mask[:, :, 16:] = 1.0
    latent = {"samples": torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2)),
              "noise_mask": mask, "batch_index": [3, 1]}
    with torch.inference_mode():
        reference = sample(lib, denoiser, sched, latent, seed=4, steps=6, start_step=2).latent
        chained = chain(lib, denoiser, sched, latent, 2, 6, seed=4, steps=6)
    assert torch.equal(chained["samples"], reference["samples"])
    assert chained["noise_mask"] is mask and chained["batch_index"] == [3, 1]


def test_sampler_stopped_early_continues_in_a_sampler_or_step_nodes(lib, models):
    sched = scheduler(lib, "DPMSolver++2M-SDE")
    denoiser = lib.handles.DenoiserHandle(models.unet)
    with torch.inference_mode():
        full = sample(lib, denoiser, sched, zeros(), seed=8, steps=6).latent
        first = sample(lib, denoiser, sched, zeros(), seed=8, steps=6, end_step=3).latent
        assert first[lib.denoising.STATE_KEY].index == 3
        resumed = sample(lib, denoiser, sched, first, seed=999, steps=6, start_step=3).latent
        stepped = chain(lib, denoiser, sched, first, 3, 6, seed=8, steps=6)
    assert torch.equal(resumed["samples"], full["samples"]), "a continuing sampler ignores its own seed"
    assert torch.equal(stepped["samples"], full["samples"])


def test_step_node_is_pure(lib, models):
    sched = scheduler(lib, "DPMSolver++2M")
    denoiser = lib.handles.DenoiserHandle(models.unet)
    with torch.inference_mode():
        latent = step(lib, denoiser, sched, zeros(), seed=1, steps=4, step_index=0)
        state = latent[lib.denoising.STATE_KEY]
        before = (state.samples.clone(), state.scheduler.step_index, len(state.scheduler.model_outputs),
                  [None if m is None else m.clone() for m in state.scheduler.model_outputs])
        a = step(lib, denoiser, sched, latent, seed=1, steps=4, step_index=1)
        b = step(lib, denoiser, sched, latent, seed=1, steps=4, step_index=1)
    assert torch.equal(a["samples"], b["samples"]), "the same input gives the same output (cacheable)"
    assert torch.equal(state.samples, before[0]) and state.scheduler.step_index == before[1]
    assert all((m is None and n is None) or torch.equal(m, n)
               for m, n in zip(state.scheduler.model_outputs, before[3], strict=True))
    assert a[lib.denoising.STATE_KEY].scheduler is not state.scheduler


# ---------------------------------------------------------------------------------------------------
# Sampler features


def test_trajectory_is_item_major_snapshots_after_every_k_steps(lib, models):
    sched = scheduler(lib, "Euler")
    denoiser = lib.handles.DenoiserHandle(models.unet, latent_scale=0.5)
    with torch.inference_mode():
        result = sample(lib, denoiser, sched, zeros(), seed=2, steps=7, return_trajectory_every=3)
        partial = [sample(lib, denoiser, sched, zeros(), seed=2, steps=7, end_step=e).latent["samples"]
                   for e in (3, 6)]
        off = sample(lib, denoiser, sched, zeros(), seed=2, steps=7)
    trajectory, final = result.trajectory["samples"], result.latent["samples"]
    assert trajectory.shape == (2 * 3, 4, 16, 16)  # snapshots after steps 3, 6 and the last (7)
    for b in range(2):
        assert torch.equal(trajectory[b * 3 + 0], partial[0][b])
        assert torch.equal(trajectory[b * 3 + 1], partial[1][b])
        assert torch.equal(trajectory[b * 3 + 2], final[b])
    assert torch.equal(off.latent["samples"], final)
    assert torch.equal(off.trajectory["samples"], final), "trajectory off: the final latent alone"


def test_noise_input_replaces_the_seeded_draw(lib, models):
    sched = scheduler(lib, "DDPM")
    denoiser = lib.handles.DenoiserHandle(models.unet)
    seeded = lib.core_noise.prepare_noise((2, 4, 16, 16), 5)
    with torch.inference_mode():
        drawn = sample(lib, denoiser, sched, zeros(), seed=5, steps=3).latent["samples"]
        given = sample(lib, denoiser, sched, zeros(), seed=5, steps=3, noise={"samples": seeded}).latent["samples"]
        other = sample(lib, denoiser, sched, zeros(), seed=5, steps=3,
                       noise={"samples": -seeded}).latent["samples"]
    assert torch.equal(drawn, given)
    assert not torch.allclose(drawn, other)


def test_noise_mask_keeps_the_unmasked_area_and_a_full_mask_changes_nothing(lib, models):
    sched = scheduler(lib, "EulerAncestral")
    denoiser = lib.handles.DenoiserHandle(models.unet, latent_scale=0.5)
    original = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(6))
    left = torch.zeros(1, 16, 16)
    left[:, :, :8] = 1.0
    with torch.inference_mode():
        masked = sample(lib, denoiser, sched, {"samples": original, "noise_mask": left}, seed=1, steps=4)
        free = sample(lib, denoiser, sched, {"samples": original}, seed=1, steps=4)
        full = sample(lib, denoiser, sched, {"samples": original, "noise_mask": torch.ones(1, 16, 16)}, seed=1,
                      steps=4)
    out = masked.latent["samples"]
    torch.testing.assert_close(out[..., 8:], original[..., 8:], rtol=0, atol=1e-6)
    assert not torch.allclose(out[..., :8], original[..., :8], atol=0.1)
    assert torch.equal(full.latent["samples"], free.latent["samples"])


def test_sampler_checks_where_it_starts_and_stops(lib):
    check = lib.sample.SampleLatent.check_constants
    assert check({"denoise": 1.0, "steps": 20, "start_step": 0, "end_step": -1}, lib.ctx) == []
    problems = dict(check({"denoise": 0.5, "steps": 20, "start_step": 3, "end_step": 2}, lib.ctx))
    assert "set start_step to 0 or denoise to 1.0" in problems["start_step"]
    assert "not after start_step 3" in problems["end_step"]
    problems = dict(check({"denoise": 0.04, "steps": 20, "start_step": 0, "end_step": -1}, lib.ctx))
    assert "at least 0.05" in problems["denoise"]
    assert check({"denoise": 0.04, "start_step": 0}, lib.ctx) == [], "linked inputs are checked at run time"


def test_errors_name_the_input_and_the_fix(lib, models):
    sched = scheduler(lib, "DDIM")
    cond_denoiser = lib.handles.DenoiserHandle(models.cond_unet)
    denoiser = lib.handles.DenoiserHandle(models.unet)
    with torch.inference_mode():
        with pytest.raises(ValueError, match=r"'conditioning' is missing.*GenArt Encode Text"):
            sample(lib, cond_denoiser, sched, zeros(), steps=2)
        with pytest.raises(ValueError, match="'conditioning' is connected but the denoiser"):
            sample(lib, denoiser, sched, zeros(), steps=2, conditioning=conditioning(lib, models))
        with pytest.raises(ValueError, match=r"'end_step' = 9 is past the end.*use -1"):
            sample(lib, denoiser, sched, zeros(), steps=4, end_step=9)
        with pytest.raises(ValueError, match="'latent' has 3 channels"):
            sample(lib, denoiser, sched, {"samples": torch.zeros(1, 3, 16, 16)}, steps=2)
        with pytest.raises(ValueError, match="'noise' has shape"):
            sample(lib, denoiser, sched, zeros(), steps=2, noise={"samples": torch.zeros(1, 4, 8, 8)})
        with pytest.raises(ValueError, match="'step_index' = 4 is past the last step"):
            step(lib, denoiser, sched, zeros(), steps=4, step_index=4)
        first = step(lib, denoiser, sched, zeros(), steps=4, step_index=0)
        with pytest.raises(ValueError, match=r"'step_index' = 2 but the latent is mid-denoising at step 1.*"
                                             r"set step_index to 1"):
            step(lib, denoiser, sched, first, steps=4, step_index=2)
        with pytest.raises(ValueError, match=r"'steps' = 5 .* use steps=4"):
            step(lib, denoiser, sched, first, steps=5, step_index=1)
        with pytest.raises(ValueError, match="'scheduler' is EulerDiscreteScheduler"):
            step(lib, denoiser, scheduler(lib, "Euler"), first, steps=4, step_index=1)
        no_uncond = lib.handles.Conditioning(cond=torch.zeros(1, 77, 32))
        with pytest.raises(ValueError, match=r"'cfg' = 7.5 needs negative-prompt embeddings"):
            sample(lib, cond_denoiser, sched, zeros(), steps=2, conditioning=no_uncond)
        wrong_dim = lib.handles.Conditioning(cond=torch.zeros(1, 77, 16), uncond=torch.zeros(1, 77, 16))
        with pytest.raises(ValueError, match="cross_attention_dim is 32"):
            sample(lib, cond_denoiser, sched, zeros(), steps=2, conditioning=wrong_dim)



def test_step_by_step_workflow_chain_equals_its_sampler_through_the_executor(pack, paths):
    """The shipped workflow, run by the engine: its step nodes end exactly where its sampler does."""
    import json

    from pydantic import Field
    from tiny_models import tiny_unet, tiny_vq

    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor
    from comfyui_genart.graph.node import Node, NodeOutputs
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.graph.types import Latent

    from conftest import REPO

    class CaptureLatent(Node):
        """Hands a latent's samples to the run report."""

        CLASS_TYPE = "GenArtTestCaptureLatent"
        CATEGORY = "GenArt/test"
        OUTPUT_NODE = True

        class Outputs(NodeOutputs):
            pass

        latent: Latent = Field(description="the latent to capture")

        def run(self, ctx):
            ctx.ui["samples"] = self.latent["samples"]
            return self.Outputs()

    registry = Registry()
    for _, cls in pack.REGISTRY.items():
        registry.register(cls)
    registry.register(CaptureLatent)
    tiny_unet().save_pretrained(paths.models_dirs[0] / "unet" / "tiny-unet")
    tiny_vq().save_pretrained(paths.models_dirs[0] / "vqgan" / "tiny-vq")
    prompt = json.loads((REPO / "workflows" / "api" / "step-by-step.json").read_text())
    steps = sorted((n for n, node in prompt.items() if node["class_type"] == "GenArtDenoiseStep"),
                   key=lambda n: prompt[n]["inputs"]["step_index"])
    sampler = next(n for n, node in prompt.items() if node["class_type"] == "GenArtSampleLatent")
    assert len(steps) == prompt[sampler]["inputs"]["steps"]
    prompt["chained"] = {"class_type": "GenArtTestCaptureLatent", "inputs": {"latent": [steps[-1], 0]}}
    prompt["sampled"] = {"class_type": "GenArtTestCaptureLatent", "inputs": {"latent": [sampler, 0]}}
    report = Executor(registry, RunSettings(paths=paths)).run(prompt)
    assert torch.equal(report.ui["chained"]["samples"], report.ui["sampled"]["samples"])


# ---------------------------------------------------------------------------------------------------
# Inject Noise works in the denoiser's space: by hand, img2img equals the pipeline and the sampler's own path

SHIPPED_SCALE = json.loads((REPO / "models/unet/genart-emoji32/genart_training.json").read_text())["latent_scale"]


@pytest.mark.parametrize("scale", [1.0, 0.18215, SHIPPED_SCALE], ids=["scale-1", "scale-sd1", "scale-shipped"])
@pytest.mark.parametrize("name", ["DDIM", "EulerAncestral", "DPMSolver++2M"])
def test_inject_noise_then_sampler_equals_img2img_pipeline(lib, models, name, scale):
    """Encode -> Inject Noise -> Sample Latent (add_noise off, start at Inject Noise's start_step), built by hand,
    equals StableDiffusionImg2ImgPipeline within 1e-5 and Sample Latent's own `denoise` bit for bit."""
    sched = scheduler(lib, name)
    pipe = img2img_pipeline(models, sched)
    denoiser = lib.handles.DenoiserHandle(models.cond_unet, latent_scale=scale)
    raw = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 3
    cond = conditioning(lib, models)
    with torch.inference_mode():
        ref = pipe(PROMPT, image=raw * scale, strength=0.6, num_inference_steps=10, guidance_scale=7.5,
                   negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(3), output_type="latent").images
        noised = lib.noise.InjectNoise(latent={"samples": raw}, denoiser=denoiser, scheduler=sched, seed=3,
                                       strength=0.6, steps=10).run(lib.ctx)
        by_hand = sample(lib, denoiser, sched, noised.latent, seed=3, steps=10, cfg=7.5, add_noise=False,
                         start_step=noised.start_step, conditioning=cond).latent
        own = sample(lib, denoiser, sched, {"samples": raw}, seed=3, steps=10, cfg=7.5, denoise=0.6,
                     conditioning=cond).latent
    assert noised.start_step == 4 * sched.fresh().order
    assert max_diff(by_hand["samples"] * scale, ref) <= TOLERANCE
    assert torch.equal(by_hand["samples"], own["samples"])


def test_inject_noise_latent_decodes_to_the_noisy_image_and_steps_resume_it(lib, models):
    """samples = x_t / latent_scale (the decoders' raw space); Denoise Step nodes continue it like the sampler."""
    sched, scale = scheduler(lib, "EulerAncestral"), 0.18215
    denoiser = lib.handles.DenoiserHandle(models.unet, latent_scale=scale)
    raw = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        noised = lib.noise.InjectNoise(latent={"samples": raw}, denoiser=denoiser, scheduler=sched, seed=5,
                                       strength=0.5, steps=6).run(lib.ctx)
        fresh = sched.fresh()
        fresh.set_timesteps(6)
        x_t = fresh.add_noise(raw * scale, lib.core_noise.prepare_noise(raw.shape, 5), fresh.timesteps[3:4].repeat(2))
        torch.testing.assert_close(noised.latent["samples"] * scale, x_t, rtol=1e-6, atol=1e-6)
        latent = noised.latent
        for index in range(noised.start_step, 6):
            latent = step(lib, denoiser, sched, latent, seed=0, steps=6, step_index=index)
        sampled = sample(lib, denoiser, sched, noised.latent, seed=0, steps=6, start_step=noised.start_step).latent
    assert torch.equal(latent["samples"], sampled["samples"])
