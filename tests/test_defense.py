"""Defenses: equivalence with PIL, scipy and ART, determinism, and the nodes with tiny models."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from tiny_models import tiny_kl, tiny_unet, tiny_vq

from comfyui_genart.core import defenses
from comfyui_genart.core.handles import AutoencoderHandle, DenoiserHandle, SchedulerHandle, VQModelHandle
from comfyui_genart.graph.context import RunContext, RunSettings
from comfyui_genart.nodes import defense as D


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (two stall at barriers on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def _ctx() -> RunContext:
    return RunContext(RunSettings())


def _images(seed: int = 0, shape=(2, 3, 32, 32)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_bit_depth_equals_art_feature_squeezing():
    fs = pytest.importorskip("art.defences.preprocessor")
    x = _images(1)
    for bits in range(1, 9):
        ref, _ = fs.FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bits)(x.numpy())
        ours = defenses.reduce_bit_depth(x, bits)
        assert torch.equal(ours, torch.from_numpy(ref.astype(np.float32))), f"bits={bits}"


def test_jpeg_equals_pil_at_the_same_quality():
    pixels = (_images(2) * 255).round().to(torch.uint8)
    x = pixels.float() / 255
    for quality in (10, 75, 95):
        ours = defenses.jpeg_compress(x, quality)
        for i in range(len(x)):
            buffer = io.BytesIO()
            PILImage.fromarray(pixels[i].permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
            ref = np.array(PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            assert torch.equal(ours[i], torch.from_numpy(ref).permute(2, 0, 1).float() / 255), f"quality={quality}"
    assert not torch.equal(defenses.jpeg_compress(x, 10), x)


def test_jpeg_refuses_four_channels():
    with pytest.raises(ValueError, match=r"4.*alpha"):
        defenses.jpeg_compress(_images(shape=(1, 4, 8, 8)), 75)


def test_median_equals_scipy_median_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _images(3, shape=(2, 3, 20, 24))
    for radius in (1, 2):
        ours = defenses.median_filter(x, radius).numpy()
        k = 2 * radius + 1
        for mode in ("reflect", "mirror"):
            ref = ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode=mode)
            interior = (..., slice(radius, -radius), slice(radius, -radius))
            np.testing.assert_array_equal(ours[interior], ref[interior])
        # reflect padding is scipy's 'mirror': equal on the border too
        np.testing.assert_array_equal(ours, ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode="mirror"))


def test_gaussian_blur_equals_scipy_gaussian_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _images(4).double()
    for sigma, radius in ((1.0, 3), (2.5, 5)):
        ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=radius / sigma)
        torch.testing.assert_close(defenses.gaussian_blur(x, sigma, radius), torch.from_numpy(ref), atol=1e-6, rtol=0)


def test_filters_refuse_a_radius_as_large_as_the_image():
    with pytest.raises(ValueError, match=r"input 'radius' = 8 needs images larger than 8 pixels.*8x8"):
        defenses.gaussian_blur(_images(shape=(1, 3, 8, 8)), 1.0, 8)


def test_defense_nodes_return_what_their_transform_does():
    image = _images(5).movedim(1, -1)
    nodes = [D.DefendJPEG(image=image, quality=50), D.DefendGaussianBlur(image=image, radius=2, sigma=1.0),
             D.DefendMedianFilter(image=image, radius=1), D.DefendBitDepth(image=image, bits=3),
             D.DefendRandomizedSmoothing(image=image, sigma=0.1, samples=4, seed=7)]
    for node in nodes:
        with torch.inference_mode():  # as the executor runs them
            out = node.run(_ctx())
        assert out.image.shape == image.shape and out.image.dtype == torch.float32
        again = out.defense(image.movedim(-1, 1), torch.Generator().manual_seed(getattr(node, "seed", 0)))
        assert torch.equal(out.image, again.movedim(1, -1)), type(node).__name__
    assert D.DefendBitDepth(image=image, bits=3).run(_ctx()).image.unique().numel() <= 8


def test_randomized_smoothing_average_is_the_mean_of_seeded_noisy_copies():
    x = _images(6)
    out = defenses.randomized_smoothing(x, 0.2, 5, "average", torch.Generator().manual_seed(3))
    noise = torch.randn((5, *x.shape), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, (x + 0.2 * noise).mean(dim=0).clamp(0, 1), atol=0, rtol=0)
    assert not torch.equal(out, defenses.randomized_smoothing(x, 0.2, 5, "average", torch.Generator().manual_seed(4)))


def test_randomized_smoothing_majority_votes_on_vq_codes():
    model = tiny_vq()
    x = _images(7)
    with torch.no_grad():
        noiseless = defenses.randomized_smoothing(x, 0.0, 3, "majority", torch.Generator().manual_seed(0), model)
        h = model.encode(x * 2 - 1).latents
        ref = (model.decode(h, force_not_quantize=False).sample / 2 + 0.5).clamp(0, 1)
        torch.testing.assert_close(noiseless, ref, atol=1e-5, rtol=0)
        voted = defenses.randomized_smoothing(x, 0.3, 9, "majority", torch.Generator().manual_seed(0), model)
    assert voted.shape == x.shape and 0 <= voted.min() and voted.max() <= 1


def test_randomized_smoothing_majority_needs_a_vq_model():
    image = _images(8).movedim(1, -1)
    with pytest.raises(ValueError, match=r"'majority'.*needs 'vqmodel'"):
        D.DefendRandomizedSmoothing(image=image, aggregate="majority").run(_ctx())
    with pytest.raises(ValueError, match=r"'majority'.*needs 'vqmodel'"):
        D.DefendRandomizedSmoothing(image=image, aggregate="majority",
                                    autoencoder=AutoencoderHandle(tiny_kl())).run(_ctx())


@pytest.fixture(scope="module")
def diffusion():
    with torch.inference_mode():  # as the loader nodes make them
        return {"vq": VQModelHandle(tiny_vq()), "kl": AutoencoderHandle(tiny_kl()),
                "denoiser": DenoiserHandle(tiny_unet()), "scheduler": SchedulerHandle("DDIMScheduler", {})}


def test_diffpure_runs_on_vq_and_kl_and_is_seeded(diffusion):
    image = _images(9).movedim(1, -1)
    for key, name in (("vq", "vqmodel"), ("kl", "autoencoder")):
        kwargs = dict(image=image, denoiser=diffusion["denoiser"], scheduler=diffusion["scheduler"], t_star=0.2,
                      steps=10, **{name: diffusion[key]})
        with torch.inference_mode():
            first = D.DefendDiffPure(seed=1, **kwargs).run(_ctx())
            again = D.DefendDiffPure(seed=1, **kwargs).run(_ctx())
            other = D.DefendDiffPure(seed=2, **kwargs).run(_ctx())
        assert first.image.shape == image.shape
        assert torch.equal(first.image, again.image) and not torch.equal(first.image, other.image)
        assert first.defense.randomized and first.defense.differentiable  # exact attacks go through it


def test_diffpure_refuses_zero_steps_and_two_autoencoders(diffusion):
    image = _images(10).movedim(1, -1)
    common = dict(image=image, denoiser=diffusion["denoiser"], scheduler=diffusion["scheduler"])
    with pytest.raises(ValueError, match=r"'t_star' = 0.05 with steps=10 runs .* 0 denoising steps"):
        D.DefendDiffPure(t_star=0.05, steps=10, vqmodel=diffusion["vq"], **common).run(_ctx())
    with pytest.raises(ValueError, match=r"both connected"):
        D.DefendDiffPure(vqmodel=diffusion["vq"], autoencoder=diffusion["kl"], **common).run(_ctx())
    with pytest.raises(ValueError, match=r"connect 'vqmodel'.*or 'autoencoder'"):
        D.DefendDiffPure(**common).run(_ctx())


def test_image_inputs_of_every_stage_refuse_a_non_image_naming_the_input():
    """One IMAGE check (graph.types.check_image) serves defenses, metrics, grids, encoders and attacks."""
    from comfyui_genart.nodes.attack import AttackEncoderFGSM
    from comfyui_genart.nodes.encode import EncodeVQ
    from comfyui_genart.nodes.metrics import MeasurePSNR
    from comfyui_genart.nodes.visualize import ImageGrid

    flat = torch.rand(2, 8, 3)  # a batch of rows, not of images
    good = torch.rand(2, 8, 8, 3)
    with torch.inference_mode():
        vq = VQModelHandle(tiny_vq().eval().requires_grad_(False))
    nodes = [(D.DefendJPEG(image=flat), "image"), (MeasurePSNR(image_a=good, image_b=flat), "image_b"),
             (ImageGrid(images=flat), "images"), (EncodeVQ(image=flat, vqmodel=vq), "image"),
             (AttackEncoderFGSM(image=flat, vqmodel=vq), "image")]
    for node, name in nodes:
        with pytest.raises(ValueError, match=rf"input '{name}' must be an IMAGE \[B, H, W, C\]; got shape \(2, 8, 3\)"):
            node.run(_ctx())
