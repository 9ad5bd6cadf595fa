"""Noise: ComfyUI's prepare_noise bit for bit, seeded noise kinds, empty latents, noise injection, noise masks."""
import os
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

# (shape, seed, batch_index, dtype): whole draws, per-index draws (repeated, unsorted, gaps), sizes on both
# sides of randn's 16-element path switch, a 64-bit seed, half and double precision.
CASES = [
    ((2, 4, 8, 8), 0, None, torch.float32),
    ((3, 4, 5, 5), 42, [2, 0, 2], torch.float32),
    ((4, 4, 8, 8), 123456789, [3, 1, 7, 0], torch.float32),
    ((1, 2, 2, 2), 7, [5], torch.float32),
    ((2, 4, 3, 3), 0xFFFFFFFFFFFFFFFF, [1, 0], torch.float32),
    ((2, 4, 6, 6), 99, [0, 1], torch.float16),
    ((2, 4, 6, 6), 99, None, torch.float64),
]


def comfyui_prepare_noise(latent_image, seed, noise_inds=None):
    """Transcribed from ComfyUI v0.3.64 comfy/sample.py prepare_noise (the global generator kept intact)."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.manual_seed(seed)
        if noise_inds is None:
            return torch.randn(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout,
                               generator=generator, device="cpu")
        unique_inds, inverse = np.unique(noise_inds, return_inverse=True)
        noises = []
        for i in range(unique_inds[-1] + 1):
            noise = torch.randn([1, *list(latent_image.size())[1:]], dtype=latent_image.dtype,
                                layout=latent_image.layout, generator=generator, device="cpu")
            if i in unique_inds:
                noises.append(noise)
        noises = [noises[i] for i in inverse]
        return torch.cat(noises, axis=0)


def ctx():
    from comfyui_genart.graph.context import RunContext, RunSettings

    return RunContext(RunSettings())


def run(node):
    with torch.inference_mode():
        return node.run(ctx())


def capture_registry(pack):
    """The library plus a scheduler source and an output node that hands back the LATENT it receives."""
    from diffusers import DDIMScheduler
    from pydantic import Field

    from comfyui_genart.core.handles import SchedulerHandle
    from comfyui_genart.graph.node import Node, NodeOutputs
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.graph.types import Latent
    from comfyui_genart.nodes.sockets import Denoiser, Scheduler

    class TestScheduler(Node):
        """A default DDIM scheduler."""

        CLASS_TYPE = "GenArtTestScheduler"
        CATEGORY = "GenArt/test"

        class Outputs(NodeOutputs):
            scheduler: Scheduler = Field(description="DDIM")

        def run(self, ctx):
            return self.Outputs(scheduler=SchedulerHandle("DDIMScheduler", dict(DDIMScheduler().config)))

    class TestDenoiser(Node):
        """A tiny UNet, latent scale 1."""

        CLASS_TYPE = "GenArtTestDenoiser"
        CATEGORY = "GenArt/test"

        class Outputs(NodeOutputs):
            denoiser: Denoiser = Field(description="tiny UNet")

        def run(self, ctx):
            return self.Outputs(denoiser=denoiser())

    class TestCaptureLatent(Node):
        """Hands the latent back in the run report."""

        CLASS_TYPE = "GenArtTestCaptureLatent"
        CATEGORY = "GenArt/test"
        OUTPUT_NODE = True

        class Outputs(NodeOutputs):
            pass

        latent: Latent = Field(description="any latent")

        def run(self, ctx):
            ctx.ui["latent"] = [self.latent]
            return self.Outputs()

    registry = Registry()
    for _, cls in pack.REGISTRY.items():
        registry.register(cls)
    registry.register(TestScheduler)
    registry.register(TestDenoiser)
    registry.register(TestCaptureLatent)
    return registry


def denoiser(scale=1.0):
    """A tiny UNet for 4-channel latents: InjectNoise reads its latent_scale, device and dtype."""
    from tiny_models import tiny_unet

    from comfyui_genart.core.handles import DenoiserHandle

    return DenoiserHandle(tiny_unet(), latent_scale=scale)


def inject(**inputs):
    """Run GenArt Inject Noise with a latent scale 1 denoiser (x_t is then add_noise of the latent itself)."""
    from comfyui_genart.nodes.noise import InjectNoise

    return run(InjectNoise(denoiser=denoiser(), **inputs))


def ddim_handle(**config):
    from diffusers import DDIMScheduler

    from comfyui_genart.core.handles import SchedulerHandle

    return SchedulerHandle("DDIMScheduler", dict(DDIMScheduler(**config).config))


@pytest.mark.parametrize(("shape", "seed", "index", "dtype"), CASES)
def test_prepare_noise_matches_comfyui_transcription(shape, seed, index, dtype):
    from comfyui_genart.core.noise import prepare_noise

    ours = prepare_noise(shape, seed, index, dtype=dtype)
    reference = comfyui_prepare_noise(torch.zeros(shape, dtype=dtype), seed, index)
    assert ours.dtype == dtype and ours.device.type == "cpu"
    assert torch.equal(ours, reference)


def test_prepare_noise_matches_real_comfyui(tmp_path):
    """Against the function imported from a ComfyUI checkout, run by ComfyUI's own interpreter."""
    from comfyui_genart.core.noise import prepare_noise

    setting = os.environ.get("GENART_COMFYUI_DIR")
    if not setting:
        pytest.skip("set GENART_COMFYUI_DIR to a ComfyUI checkout to compare with its prepare_noise")
    comfy_dir = Path(setting)
    if not (comfy_dir / "comfy" / "sample.py").is_file():
        pytest.fail(f"GENART_COMFYUI_DIR={setting} has no comfy/sample.py: not a ComfyUI checkout")
    python = Path(os.environ.get("GENART_COMFYUI_PYTHON") or comfy_dir / ".venv" / "bin" / "python")
    if not python.exists():
        pytest.skip(f"ComfyUI's python not found at {python} (set GENART_COMFYUI_PYTHON)")
    out = tmp_path / "noise.pt"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(comfy_dir)!r})
        import comfy.options
        comfy.options.enable_args_parsing(False)
        from comfy.cli_args import args
        args.cpu = True
        import torch, comfy.sample
        cases = {[(s, seed, i, str(d).removeprefix("torch.")) for s, seed, i, d in CASES]!r}
        torch.save([comfy.sample.prepare_noise(torch.zeros(s, dtype=getattr(torch, d)), seed, i)
                    for s, seed, i, d in cases], {str(out)!r})
    """)
    done = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    real = torch.load(out, weights_only=True)
    for (shape, seed, index, dtype), theirs in zip(CASES, real, strict=True):
        assert torch.equal(prepare_noise(shape, seed, index, dtype=dtype), theirs), (shape, seed, index, dtype)


def test_noise_gaussian_same_seed_gives_identical_bits():
    from comfyui_genart.nodes.noise import Noise

    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    first = run(Noise(latent=latent, seed=5)).noise["samples"]
    second = run(Noise(latent=latent, seed=5)).noise["samples"]
    other = run(Noise(latent=latent, seed=6)).noise["samples"]
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.equal(first, comfyui_prepare_noise(latent["samples"], 5))


@pytest.mark.parametrize("kind", ["gaussian", "offset", "pyramid"])
def test_noise_item_follows_its_batch_index(kind):
    """Item i gets the noise of its own index, whatever else is in the batch (ComfyUI's per-index noise)."""
    from comfyui_genart.nodes.noise import Noise

    def noise(index):
        latent = {"samples": torch.zeros(len(index), 4, 8, 8), "batch_index": index}
        return run(Noise(latent=latent, seed=11, kind=kind)).noise["samples"]

    batch = noise([3, 0, 5])
    assert torch.equal(batch[0], noise([3])[0])
    assert torch.equal(batch[2], noise([1, 5])[1])
    assert torch.equal(batch[1], noise([0])[0])
    if kind == "gaussian":
        assert torch.equal(batch, comfyui_prepare_noise(torch.zeros(3, 4, 8, 8), 11, [3, 0, 5]))


def test_noise_keeps_latent_keys_dtype_and_device():
    from comfyui_genart.nodes.noise import Noise

    mask = torch.ones(1, 1, 8, 8)
    latent = {"samples": torch.zeros(2, 4, 4, 4, dtype=torch.float64), "noise_mask": mask, "batch_index": [1, 2]}
    out = run(Noise(latent=latent, seed=3, kind="pyramid")).noise
    assert out["noise_mask"] is mask and out["batch_index"] == [1, 2]
    assert out["samples"].dtype == torch.float64 and out["samples"].shape == (2, 4, 4, 4)
    assert "noise_mask" in latent and torch.equal(latent["samples"], torch.zeros(2, 4, 4, 4, dtype=torch.float64))


def test_noise_rejects_a_batch_index_of_the_wrong_length():
    from comfyui_genart.nodes.noise import Noise

    latent = {"samples": torch.zeros(2, 4, 4, 4), "batch_index": [0]}
    with pytest.raises(ValueError, match=r"latent\['batch_index'\] must list one integer .* \(2 items\), got \[0\]"):
        run(Noise(latent=latent))


def test_offset_noise_adds_a_per_channel_constant_with_the_offset_as_std():
    from comfyui_genart.core.noise import prepare_noise
    from comfyui_genart.nodes.noise import Noise

    shape = (64, 4, 16, 16)
    out = run(Noise(latent={"samples": torch.zeros(shape)}, seed=21, kind="offset", offset=0.5)).noise["samples"]
    shift = out - prepare_noise(shape, 21)
    torch.testing.assert_close(shift, shift[:, :, :1, :1].expand(shape), rtol=0, atol=1e-6)
    # The constants are 0.5 * N(0, 1): 256 of them (seeded) have std 0.5 within a few percent.
    assert 0.45 < float(shift[:, :, 0, 0].std()) < 0.55
    assert abs(float(shift[:, :, 0, 0].mean())) < 0.1
    assert 1.05 < float(out.std()) < 1.18  # sqrt(1 + 0.5**2) = 1.118


def test_pyramid_noise_has_unit_std_per_item_and_spatial_correlation():
    from comfyui_genart.nodes.noise import Noise

    latent = {"samples": torch.zeros(8, 4, 32, 32)}
    pyramid = run(Noise(latent=latent, seed=4, kind="pyramid", discount=0.8, levels=6)).noise["samples"]
    gaussian = run(Noise(latent=latent, seed=4)).noise["samples"]
    torch.testing.assert_close(pyramid.std(dim=(1, 2, 3)), torch.ones(8), rtol=0, atol=1e-5)
    assert abs(float(pyramid.mean())) < 0.25

    def neighbour_correlation(x):
        a, b = x[..., :, :-1].flatten(), x[..., :, 1:].flatten()
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    assert neighbour_correlation(pyramid) > 0.4
    assert abs(neighbour_correlation(gaussian)) < 0.05
    flat = run(Noise(latent=latent, seed=4, kind="pyramid", discount=0.0)).noise["samples"]
    torch.testing.assert_close(flat, gaussian / gaussian.std(dim=(1, 2, 3), keepdim=True), rtol=0, atol=1e-6)


def test_empty_latent_shape_and_zeros():
    from comfyui_genart.nodes.noise import EmptyLatent

    out = run(EmptyLatent(width=64, height=32, downscale_factor=8, channels=4, batch_size=3)).latent
    assert set(out) == {"samples"}
    assert torch.equal(out["samples"], torch.zeros(3, 4, 4, 8))
    # A linked size is not seen by validation: run refuses it rather than flooring it.
    with pytest.raises(ValueError, match="height 30 is not a multiple of downscale_factor 4; use 28 or 32"):
        run(EmptyLatent(width=32, height=30, downscale_factor=4))


def test_empty_latent_refuses_a_size_that_does_not_divide(make_executor, pack):
    from comfyui_genart.graph.errors import WorkflowInvalid

    prompt = {"1": {"class_type": "GenArtEmptyLatent", "inputs": {"width": 100, "height": 64}},
              "2": {"class_type": "GenArtTestCaptureLatent", "inputs": {"latent": ["1", 0]}}}
    with pytest.raises(WorkflowInvalid) as info:
        make_executor(registry=capture_registry(pack)).validate(prompt)
    (error,) = info.value.to_json()["node_errors"]["1"]["errors"]
    assert error["extra_info"]["input_name"] == "width"
    assert "width 100 is not a multiple of downscale_factor 8; use 96 or 104" in error["message"]


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
@pytest.mark.parametrize("strength", [1.0, 0.6, 0.25])
def test_inject_noise_by_strength_equals_diffusers_img2img(scheduler, strength):
    """diffusers' own img2img timestep logic (get_timesteps + add_noise at timesteps[:1])."""
    import diffusers
    from diffusers import StableDiffusionImg2ImgPipeline

    from comfyui_genart.core.handles import SchedulerHandle
    from comfyui_genart.core.noise import prepare_noise

    cls = getattr(diffusers, scheduler)
    handle = SchedulerHandle(scheduler, dict(cls().config))
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    latent = {"samples": x0, "batch_index": [0, 1]}
    out = inject(latent=latent, scheduler=handle, seed=8, strength=strength, steps=20)

    reference = handle.fresh()
    reference.set_timesteps(20)
    timesteps, left = StableDiffusionImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=reference), 20,
                                                                   strength, "cpu")
    expected = reference.add_noise(x0, prepare_noise(x0.shape, 8, [0, 1]), timesteps[:1].repeat(2))
    assert torch.equal(out.latent["samples"], expected)
    assert out.timestep == int(timesteps[0])
    assert out.start_step == 20 - left
    assert out.latent["batch_index"] == [0, 1]


def test_inject_noise_by_timestep_is_the_vp_formula():
    from diffusers import DDPMScheduler

    from comfyui_genart.core.handles import SchedulerHandle

    handle = SchedulerHandle("DDPMScheduler", dict(DDPMScheduler().config))
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    out = inject(latent={"samples": x0}, scheduler=handle, by="timestep", timestep=300, steps=10,
                          noise={"samples": eps})
    abar = DDPMScheduler().alphas_cumprod[300]
    torch.testing.assert_close(out.latent["samples"], abar.sqrt() * x0 + (1 - abar).sqrt() * eps,
                               rtol=0, atol=1e-6)
    # DDPM's 10-step schedule is 900, 800, ..., 0: the first step at or below 300 is index 6 (300).
    assert (out.timestep, out.start_step) == (300, 6)


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                       "HeunDiscreteScheduler"])
def test_inject_noise_by_timestep_takes_the_first_step_at_or_below_it(scheduler):
    """A timestep just above step k of the schedule gives what strength (N - k) / N gives: the same start
    step (order-2 schedulers included) and the noise level the sampler expects there."""
    import diffusers

    from comfyui_genart.core.handles import SchedulerHandle

    handle = SchedulerHandle(scheduler, dict(getattr(diffusers, scheduler)().config))
    schedule = handle.fresh()
    schedule.set_timesteps(10)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))}
    for k in (0, 3, 9):
        start = k * schedule.order
        t = int(schedule.timesteps[start])
        by_strength = inject(latent=latent, scheduler=handle, seed=1, strength=(10 - k) / 10, steps=10)
        by_timestep = inject(latent=latent, scheduler=handle, seed=1, by="timestep", timestep=min(t + 1, 999),
                                      steps=10)
        assert (by_timestep.timestep, by_timestep.start_step) == (by_strength.timestep, by_strength.start_step)
        assert (by_timestep.timestep, by_timestep.start_step) == (t, start)
        assert torch.equal(by_timestep.latent["samples"], by_strength.latent["samples"])


def test_inject_noise_strength_too_small_adds_nothing():

    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    out = inject(latent={"samples": x0}, scheduler=ddim_handle(), strength=0.04, steps=20)
    assert torch.equal(out.latent["samples"], x0)
    assert (out.timestep, out.start_step) == (-1, 20)


def test_inject_noise_errors_name_the_input():

    latent = {"samples": torch.zeros(1, 4, 4, 4)}
    with pytest.raises(ValueError, match=r"noise has shape \(1, 4, 8, 8\) but the latent has \(1, 4, 4, 4\)"):
        inject(latent=latent, scheduler=ddim_handle(), noise={"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(ValueError, match=r"timestep 1000 is outside .* \[0, 1000\); use a value below 1000"):
        inject(latent=latent, scheduler=ddim_handle(), by="timestep", timestep=1000)


def test_set_noise_mask_as_comfyui():
    from comfyui_genart.nodes.noise import SetNoiseMask

    mask = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    latent = {"samples": torch.zeros(2, 4, 4, 4), "batch_index": [0, 1]}
    out = run(SetNoiseMask(latent=latent, mask=mask)).latent
    assert torch.equal(out["noise_mask"], mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])))
    assert out["batch_index"] == [0, 1] and out["samples"] is latent["samples"]
    assert "noise_mask" not in latent


def test_noise_through_the_engine_is_bit_identical_across_runs(make_executor, pack):
    """Two separate runs (no cache between them) of a seeded noise workflow give the same bits."""
    registry = capture_registry(pack)
    prompt = {"1": {"class_type": "GenArtEmptyLatent", "inputs": {"width": 32, "height": 32, "downscale_factor": 2,
                                                                   "batch_size": 2}},
              "2": {"class_type": "GenArtNoise", "inputs": {"latent": ["1", 0], "seed": 77, "kind": "pyramid"}},
              "3": {"class_type": "GenArtInjectNoise", "inputs": {"latent": ["1", 0], "scheduler": ["4", 0],
                                                                  "noise": ["2", 0], "strength": 0.5,
                                                                  "denoiser": ["6", 0]}},
              "6": {"class_type": "GenArtTestDenoiser", "inputs": {}},
              "4": {"class_type": "GenArtTestScheduler", "inputs": {}},
              "5": {"class_type": "GenArtTestCaptureLatent", "inputs": {"latent": ["3", 0]}}}
    first = make_executor(cache=False, registry=registry).run(prompt).ui["5"]["latent"][0]
    second = make_executor(cache=False, registry=registry).run(prompt).ui["5"]["latent"][0]
    assert first["samples"].shape == (2, 4, 16, 16)
    assert torch.equal(first["samples"], second["samples"])
