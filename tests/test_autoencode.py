"""Encode, quantize, dequantize and decode on tiny diffusers autoencoders, against diffusers' own calls."""
import pytest
import torch
from tiny_models import tiny_kl, tiny_vq


@pytest.fixture(scope="module")
def vq():
    from comfyui_genart.core.handles import VQModelHandle

    return VQModelHandle(tiny_vq(), source="tiny-vq")


@pytest.fixture(scope="module")
def kl():
    from comfyui_genart.core.handles import AutoencoderHandle

    return AutoencoderHandle(tiny_kl(), source="tiny-kl")


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))


def run(node):
    from comfyui_genart.graph.context import RunContext, RunSettings

    with torch.inference_mode():
        return node.run(RunContext(RunSettings()))


def nchw(images):
    return (images.movedim(-1, 1) * 2 - 1).contiguous()  # NCHW layout, as diffusers pipelines feed it


def as_image(x):
    return (x / 2 + 0.5).clamp(0, 1).movedim(1, -1)


def test_encode_vq_is_the_pre_quantization_latent(vq, images):
    from comfyui_genart.nodes.encode import EncodeVQ

    latent = run(EncodeVQ(vqmodel=vq, image=images)).latent
    with torch.inference_mode():
        expected = vq.model.encode(nchw(images)).latents
    assert set(latent) == {"samples"}
    assert latent["samples"].shape == (2, 4, 16, 16) and latent["samples"].dtype == torch.float32
    assert torch.equal(latent["samples"], expected)


def test_quantize_equals_diffusers_quantize(vq, images):
    from comfyui_genart.nodes.encode import EncodeVQ
    from comfyui_genart.nodes.quantize import QuantizeLatent

    latent = run(EncodeVQ(vqmodel=vq, image=images)).latent
    out = run(QuantizeLatent(vqmodel=vq, latent=latent))
    with torch.inference_mode():
        z_q, _, (_, _, flat) = vq.model.quantize(latent["samples"])
    assert out.codes.indices.dtype == torch.int64 and out.codes.indices.shape == (2, 16, 16)
    assert (out.codes.num_codes, out.codes.embed_dim) == (128, 4)
    assert torch.equal(out.codes.indices.reshape(-1), flat)
    # Ours holds the codebook vectors e; diffusers' straight-through z + (e - z) rounds within an ulp of them.
    codebook = vq.model.quantize.embedding.weight.detach()
    assert torch.equal(out.latent["samples"], codebook[out.codes.indices].permute(0, 3, 1, 2))
    torch.testing.assert_close(out.latent["samples"], z_q, rtol=0, atol=1e-6)


def test_vq_dequantize_then_decode_equals_decode_of_quantized_latent(vq, images):
    """Acceptance: quantize -> dequantize(indices) -> decode equals decode of the quantized latent exactly."""
    from comfyui_genart.nodes.decode import DecodeVQ
    from comfyui_genart.nodes.encode import EncodeVQ
    from comfyui_genart.nodes.quantize import DequantizeCodes, QuantizeLatent

    quantized = run(QuantizeLatent(vqmodel=vq, latent=run(EncodeVQ(vqmodel=vq, image=images)).latent))
    dequantized = run(DequantizeCodes(vqmodel=vq, codes=quantized.codes)).latent
    assert torch.equal(dequantized["samples"], quantized.latent["samples"])
    from_codes = run(DecodeVQ(vqmodel=vq, latent=dequantized)).image
    from_latent = run(DecodeVQ(vqmodel=vq, latent=quantized.latent)).image
    assert from_codes.shape == (2, 32, 32, 3)
    assert torch.equal(from_codes, from_latent)


def test_decode_vq_equals_diffusers_decode(vq, images):
    from comfyui_genart.nodes.decode import DecodeVQ
    from comfyui_genart.nodes.encode import EncodeVQ

    latent = run(EncodeVQ(vqmodel=vq, image=images)).latent
    as_given = run(DecodeVQ(vqmodel=vq, latent=latent)).image
    quantized = run(DecodeVQ(vqmodel=vq, latent=latent, quantize_first=True)).image
    with torch.inference_mode():
        expected_as_given = vq.model.decode(latent["samples"], force_not_quantize=True).sample
        expected_quantized = vq.model.decode(latent["samples"]).sample
    assert torch.equal(as_given, as_image(expected_as_given))
    assert torch.equal(quantized, as_image(expected_quantized))
    assert not torch.equal(as_given, quantized)
    assert float(as_given.min()) >= 0 and float(as_given.max()) <= 1


def test_quantize_usage_statistics_on_a_hand_made_codebook():
    """Codebook entry k is the vector (k, k, k, k); a latent built from entries 0, 0, 1, 2 uses 3 codes with
    usage (1/2, 1/4, 1/4): perplexity exp(-(1/2 ln 1/2 + 2 * 1/4 ln 1/4)) = 2 * sqrt(2)."""
    from comfyui_genart.core.handles import VQModelHandle
    from comfyui_genart.nodes.quantize import DequantizeCodes, QuantizeLatent

    model = tiny_vq()
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(torch.arange(128.0)[:, None].expand(128, 4))
    handle = VQModelHandle(model)
    codes = torch.tensor([[[0, 0], [1, 2]]])
    latent = codes[:, None].float().expand(1, 4, 2, 2) + 0.3  # nearest entries: the codes themselves
    out = run(QuantizeLatent(vqmodel=handle, latent={"samples": latent, "batch_index": [4]}))
    assert torch.equal(out.codes.indices, codes)
    assert out.codes_used == 3
    assert out.perplexity == pytest.approx(2 * 2**0.5, abs=1e-12)
    assert out.latent["batch_index"] == [4]
    assert torch.equal(out.latent["samples"], codes[:, None].float().expand(1, 4, 2, 2))
    assert torch.equal(run(DequantizeCodes(vqmodel=handle, codes=out.codes)).latent["samples"],
                       out.latent["samples"])


def test_code_usage_extremes():
    from comfyui_genart.core.codes import code_usage

    counts, used, perplexity = code_usage(torch.full((2, 4, 4), 7), 16)
    assert (used, perplexity) == (1, 1.0) and int(counts[7]) == 32
    _, used, perplexity = code_usage(torch.arange(16).reshape(1, 4, 4), 16)
    assert used == 16 and perplexity == pytest.approx(16, abs=1e-9)


def test_dequantize_refuses_codes_it_cannot_look_up(vq):
    from comfyui_genart.core.handles import CodeMap
    from comfyui_genart.nodes.quantize import DequantizeCodes

    bad = CodeMap(torch.tensor([[[0, 128]]]), num_codes=128, embed_dim=4)
    with pytest.raises(ValueError, match=r"values in \[0, 128\] but this codebook has indices 0\.\.127"):
        run(DequantizeCodes(vqmodel=vq, codes=bad))
    other = CodeMap(torch.zeros(1, 2, 2, dtype=torch.int64), num_codes=512, embed_dim=4)
    with pytest.raises(ValueError, match=r"codebook of 512 codes x 4 channels but this VQ model has 128 x 4"):
        run(DequantizeCodes(vqmodel=vq, codes=other))


def test_encode_and_decode_errors_name_the_input(vq):
    from comfyui_genart.nodes.decode import DecodeVQ
    from comfyui_genart.nodes.encode import EncodeVQ
    from comfyui_genart.nodes.quantize import QuantizeLatent

    with pytest.raises(ValueError, match=r"image has 4 channels but the model takes 3 \(an RGBA image: drop"):
        run(EncodeVQ(vqmodel=vq, image=torch.zeros(1, 8, 8, 4)))
    with pytest.raises(ValueError, match=r"latent has 3 channels but this VQ model's codebook vectors have 4"):
        run(QuantizeLatent(vqmodel=vq, latent={"samples": torch.zeros(1, 3, 4, 4)}))
    with pytest.raises(ValueError, match=r"latent must be a LATENT dict with 'samples' \[B, C, h, w\]; got keys"):
        run(DecodeVQ(vqmodel=vq, latent={"noise_mask": torch.zeros(1, 1, 4, 4)}))


def test_encode_kl_mean_and_seeded_sample_equal_diffusers_latent_dist(kl, images):
    from comfyui_genart.nodes.encode import EncodeKL

    mean = run(EncodeKL(autoencoder=kl, image=images, mode="mean")).latent["samples"]
    sample = run(EncodeKL(autoencoder=kl, image=images, mode="sample", seed=9)).latent["samples"]
    again = run(EncodeKL(autoencoder=kl, image=images, mode="sample", seed=9)).latent["samples"]
    with torch.inference_mode():
        dist = kl.model.encode(nchw(images)).latent_dist
        expected = dist.sample(generator=torch.Generator().manual_seed(9))
    assert mean.shape == (2, 4, 16, 16)
    assert torch.equal(mean, dist.mean)
    assert torch.equal(sample, expected)
    assert torch.equal(sample, again)
    assert not torch.equal(sample, mean)


def test_decode_kl_equals_diffusers_decode(kl, images):
    from comfyui_genart.nodes.decode import DecodeKL
    from comfyui_genart.nodes.encode import EncodeKL

    latent = run(EncodeKL(autoencoder=kl, image=images)).latent
    image = run(DecodeKL(autoencoder=kl, latent=latent)).image
    with torch.inference_mode():
        expected = kl.model.decode(latent["samples"]).sample
    assert image.shape == (2, 32, 32, 3)
    assert torch.equal(image, as_image(expected))


def test_vq_round_trip_through_the_engine(make_executor, pack, vq):
    """Image -> encode -> quantize -> dequantize -> decode as a prompt; the engine's result equals the nodes'."""
    from pydantic import Field

    from comfyui_genart.graph.node import Node, NodeOutputs
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.graph.types import Image
    from comfyui_genart.nodes.sockets import VQModel

    class TestTinyVQ(Node):
        """The tiny VQ model."""

        CLASS_TYPE = "GenArtTestTinyVQ"
        CATEGORY = "GenArt/test"

        class Outputs(NodeOutputs):
            vqmodel: VQModel = Field(description="tiny VQ")

        def run(self, ctx):
            return self.Outputs(vqmodel=vq)

    class TestCaptureImage(Node):
        """Hands the image back in the run report."""

        CLASS_TYPE = "GenArtTestCaptureImage"
        CATEGORY = "GenArt/test"
        OUTPUT_NODE = True

        class Outputs(NodeOutputs):
            pass

        image: Image = Field(description="any image")

        def run(self, ctx):
            ctx.ui["image"] = [self.image]
            return self.Outputs()

    registry = Registry()
    for _, cls in pack.REGISTRY.items():
        registry.register(cls)
    registry.register(TestTinyVQ)
    registry.register(TestCaptureImage)
    prompt = {"1": {"class_type": "GenArtPatternImage", "inputs": {"width": 32, "height": 32, "batch_size": 2}},
              "2": {"class_type": "GenArtTestTinyVQ", "inputs": {}},
              "3": {"class_type": "GenArtEncodeVQ", "inputs": {"vqmodel": ["2", 0], "image": ["1", 0]}},
              "4": {"class_type": "GenArtQuantizeLatent", "inputs": {"vqmodel": ["2", 0], "latent": ["3", 0]}},
              "5": {"class_type": "GenArtDequantizeCodes", "inputs": {"vqmodel": ["2", 0], "codes": ["4", 1]}},
              "6": {"class_type": "GenArtDecodeVQ", "inputs": {"vqmodel": ["2", 0], "latent": ["5", 0]}},
              "7": {"class_type": "GenArtTestCaptureImage", "inputs": {"image": ["6", 0]}},
              "8": {"class_type": "GenArtDecodeVQ", "inputs": {"vqmodel": ["2", 0], "latent": ["4", 0]}},
              "9": {"class_type": "GenArtTestCaptureImage", "inputs": {"image": ["8", 0]}}}
    report = make_executor(registry=registry).run(prompt)
    from_codes, from_latent = report.ui["7"]["image"][0], report.ui["9"]["image"][0]
    assert from_codes.shape == (2, 32, 32, 3)
    assert torch.equal(from_codes, from_latent)


def test_codes_fill_save_load_round_trip(make_executor, paths):
    """Codes can be edited (fill a rectangle), saved to the output folder and loaded back unchanged."""
    import shutil

    from comfyui_genart.core.handles import CodeMap

    executor = make_executor()
    indices = torch.arange(2 * 3 * 4).reshape(2, 3, 4) % 7
    codes = CodeMap(indices=indices, num_codes=7, embed_dim=4)
    from comfyui_genart.graph.context import RunContext
    from comfyui_genart.nodes.quantize import FillCodes, LoadCodes, SaveCodes

    ctx = RunContext(executor.settings)
    filled = FillCodes(codes=codes, code=5, x=1, y=1, width=2, height=2).run(ctx).codes
    assert torch.equal(filled.indices[:, 1:3, 1:3], torch.full((2, 2, 2), 5))
    assert torch.equal(filled.indices[:, 0], indices[:, 0]) and torch.equal(codes.indices, indices)
    with pytest.raises(ValueError, match="not in this codebook"):
        FillCodes(codes=codes, code=7).run(ctx)
    SaveCodes(codes=filled, filename_prefix="codes/run").run(ctx)
    (saved,) = ctx.ui["codes"]
    shutil.copy(paths.output_dir / saved["subfolder"] / saved["filename"], paths.input_dir / "c.safetensors")
    loaded = LoadCodes(codes_file="c.safetensors").run(ctx).codes
    assert torch.equal(loaded.indices, filled.indices) and (loaded.num_codes, loaded.embed_dim) == (7, 4)
