"""Headless stand-ins for ComfyUI's own core nodes: LoadImage, SaveImage, PreviewImage and the default
text-to-image / img2img workflow's CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode,
VAEEncode, ImageScaleToTotalPixels.

They take ComfyUI's class names and inputs so that workflows built in ComfyUI with its core nodes run
headless. They are never registered inside ComfyUI, where the real ones exist. Headless, MODEL carries a
`core.ksampling.DiffusionModel` (GenArt's diffusers UNet + ComfyUI's sigma schedule), CLIP a TextEncoderHandle,
VAE an AutoencoderHandle, CONDITIONING ComfyUI's own list [[embeddings, {"pooled_output": ...}]]. Which of
ComfyUI's semantics the sampler matches is written in core/ksampling.py and core/comfy_text.py.
"""
from __future__ import annotations

import math
import secrets
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from pydantic import Field

from ..core import comfy_bridge
from ..core.comfy_text import encode_prompt
from ..core.denoising import _latent_mask, prepare_guidance
from ..core.formats.common import ModelLoadError
from ..core.formats.sd1_checkpoint import SD15_CONFIG, SHIPPED_CONFIGS, load_sd1_checkpoint
from ..core.handles import AutoencoderHandle, DenoiserHandle, TextEncoderHandle
from ..core.images import pil_to_tensor, tensor_to_pil
from ..core.ksampling import DiffusionModel, DiscreteSchedule, SamplerName, SchedulerName, comfy_sigmas, ksample
from ..core.latents import batch_index_of, latent_samples
from ..core.noise import SEED_MAX, prepare_noise
from ..graph.context import RunContext
from ..graph.node import FileInput, Node, NodeOutputs, Widget
from ..graph.safety import MAX_PIXELS, MAX_STEPS
from ..graph.types import Image, Latent, Mask, image_to_nchw, nchw_to_image
from .io import IMAGE_EXTENSIONS, check_image_file, check_prefix, save_images
from .sockets import ComfyClip, ComfyConditioning, ComfyModel, ComfyVAE


class ComfyLoadImage(Node):
    """Load Image (headless stand-in for ComfyUI's LoadImage)."""

    CLASS_TYPE = "LoadImage"
    CATEGORY = "image"
    DISPLAY_NAME = "Load Image"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        IMAGE: Image = Field(description="the image, [1, H, W, 3] float32 in [0, 1]")
        MASK: Mask = Field(description="1 - alpha, [1, H, W]")

    image: Annotated[str, FileInput("input", IMAGE_EXTENSIONS, image_upload=True)] = Field(
        description="file name inside the input folder")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_image_file(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        with PILImage.open(ctx.paths.resolve_input("input", self.image)) as im:
            image, mask = pil_to_tensor(im)
        return self.Outputs(IMAGE=image, MASK=mask)


class ComfySaveImage(Node):
    """Save Image (headless stand-in for ComfyUI's SaveImage)."""

    CLASS_TYPE = "SaveImage"
    CATEGORY = "image"
    DISPLAY_NAME = "Save Image"
    OUTPUT_NODE = True
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        pass

    images: Image = Field(description="the images to save")
    filename_prefix: str = Field("ComfyUI", description="the prefix for the file to save")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_prefix(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        ctx.ui["images"] = save_images(self.images, ctx.paths.output_dir, self.filename_prefix, ctx, "output", True)
        return self.Outputs()


class ComfyPreviewImage(Node):
    """Preview Image (headless stand-in for ComfyUI's PreviewImage: writes to the temp folder)."""

    CLASS_TYPE = "PreviewImage"
    CATEGORY = "image"
    DISPLAY_NAME = "Preview Image"
    OUTPUT_NODE = True
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        pass

    images: Image = Field(description="the images to preview")

    def run(self, ctx: RunContext) -> Outputs:
        prefix = "ComfyUI_temp_" + secrets.token_hex(3)
        ctx.ui["images"] = save_images(self.images, ctx.paths.temp_dir, prefix, ctx, "temp", False)
        return self.Outputs()


# ---------------------------------------------------------------------------------------------------
# The default text-to-image and img2img workflows


class ComfyCheckpointLoaderSimple(Node):
    """Load Checkpoint (headless stand-in for ComfyUI's CheckpointLoaderSimple: SD 1.x checkpoints, float32)."""

    CLASS_TYPE = "CheckpointLoaderSimple"
    CATEGORY = "loaders"
    DISPLAY_NAME = "Load Checkpoint"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        MODEL: ComfyModel = Field(description="The model used for denoising latents.")
        CLIP: ComfyClip = Field(description="The CLIP model used for encoding text prompts.")
        VAE: ComfyVAE = Field(description="The VAE model used for encoding and decoding images to and from latent "
                              "space.")

    ckpt_name: Annotated[str, FileInput("models/checkpoints", (".safetensors", ".ckpt"))] = Field(
        description="The name of the checkpoint (model) to load.")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        name = constants.get("ckpt_name")
        if isinstance(name, str) and not ctx.paths.resolve_input("models/checkpoints", name).is_file():
            roots = ", ".join(str(r) for r in ctx.paths.roots("models/checkpoints"))
            return [("ckpt_name", f"ckpt_name {name!r} was not found in the checkpoint folders ({roots})")]
        return []

    def run(self, ctx: RunContext) -> Outputs:
        path = ctx.paths.resolve_input("models/checkpoints", self.ckpt_name)
        if not path.is_file():
            raise ModelLoadError(f"ckpt_name {self.ckpt_name!r} was not found in the checkpoint folders")
        # ComfyUI on the CPU computes every part in float32 (CLIP's float16 weights are upcast per op).
        m = load_sd1_checkpoint(path, self.ckpt_name, SHIPPED_CONFIGS / SD15_CONFIG, False,
                                torch.device(ctx.device), torch.float32)
        source = f"checkpoints/{self.ckpt_name}"
        config = m.scheduler.config
        schedule = DiscreteSchedule.from_betas(config["beta_start"], config["beta_end"],
                                               config["num_train_timesteps"], config["beta_schedule"],
                                               config.get("prediction_type", "epsilon"))
        denoiser = DenoiserHandle(m.unet, float(m.vae.config.scaling_factor), source=source,
                                  prediction_type=schedule.prediction_type)
        return self.Outputs(MODEL=DiffusionModel(denoiser, schedule),
                            CLIP=TextEncoderHandle(m.tokenizer, m.text_encoder, source=source),
                            VAE=AutoencoderHandle(m.vae, source=source))


class ComfyCLIPTextEncode(Node):
    """CLIP Text Encode (Prompt) (headless stand-in for ComfyUI's CLIPTextEncode; its prompt weights and chunks)."""

    CLASS_TYPE = "CLIPTextEncode"
    CATEGORY = "conditioning"
    DISPLAY_NAME = "CLIP Text Encode (Prompt)"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        CONDITIONING: ComfyConditioning = Field(
            description="A conditioning containing the embedded text used to guide the diffusion model.")

    text: Annotated[str, Widget(multiline=True, extra={"dynamicPrompts": True})] = Field(
        "", description="The text to be encoded.")
    clip: ComfyClip = Field(description="The CLIP model used for encoding the text.")

    def run(self, ctx: RunContext) -> Outputs:
        if not isinstance(self.clip, TextEncoderHandle):
            raise ValueError(f"input 'clip' is a {type(self.clip).__name__}; connect Load Checkpoint's CLIP")
        return self.Outputs(CONDITIONING=encode_prompt(self.clip, self.text))


class ComfyEmptyLatentImage(Node):
    """Empty Latent Image (headless stand-in for ComfyUI's EmptyLatentImage)."""

    CLASS_TYPE = "EmptyLatentImage"
    CATEGORY = "latent"
    DISPLAY_NAME = "Empty Latent Image"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        LATENT: Latent = Field(description="The empty latent image batch.")

    width: Annotated[int, Widget(step=8)] = Field(512, ge=16, le=16384,
                                                   description="The width of the latent images in pixels.")
    height: Annotated[int, Widget(step=8)] = Field(512, ge=16, le=16384,
                                                    description="The height of the latent images in pixels.")
    batch_size: int = Field(1, ge=1, le=4096, description="The number of latent images in the batch.")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(LATENT={"samples": torch.zeros([self.batch_size, 4, self.height // 8, self.width // 8])})


class ComfyKSampler(Node):
    """KSampler (headless stand-in for ComfyUI's KSampler: euler, euler_ancestral, dpmpp_2m, ddim; its noise,
    sigmas and denoise semantics, on GenArt's diffusers UNet)."""

    CLASS_TYPE = "KSampler"
    CATEGORY = "sampling"
    DISPLAY_NAME = "KSampler"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        LATENT: Latent = Field(description="The denoised latent.")

    model: ComfyModel = Field(description="The model used for denoising the input latent.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="The random seed used for creating the noise.")
    steps: int = Field(20, ge=1, le=min(MAX_STEPS, 10000),
                       description="The number of steps used in the denoising process.")
    cfg: Annotated[float, Widget(step=0.1, extra={"round": 0.01})] = Field(
        8.0, ge=0.0, le=100.0, description="The Classifier-Free Guidance scale.")
    sampler_name: SamplerName = Field("euler", description="The algorithm used when sampling (the headless "
                                      "stand-in runs euler, euler_ancestral, dpmpp_2m and ddim).")
    scheduler: SchedulerName = Field("normal", description="The scheduler controls how noise is gradually removed "
                                     "to form the image.")
    positive: ComfyConditioning = Field(description="The conditioning describing the attributes you want to "
                                        "include in the image.")
    negative: ComfyConditioning = Field(description="The conditioning describing the attributes you want to "
                                        "exclude from the image.")
    latent_image: Latent = Field(description="The latent image to denoise.")
    denoise: Annotated[float, Widget(step=0.01)] = Field(
        1.0, ge=0.0, le=1.0, description="The amount of denoising applied (ComfyUI's: the last steps of a "
        "int(steps / denoise)-step schedule).")

    def run(self, ctx: RunContext) -> Outputs:
        model = comfy_bridge.diffusion_model(self.model)
        samples = latent_samples(self.latent_image, "latent_image")
        noise = prepare_noise(samples.shape, self.seed, batch_index_of(self.latent_image, samples.shape[0]),
                              dtype=samples.dtype)
        cond = comfy_bridge.conditioning(self.positive, self.negative)
        guidance = prepare_guidance(model.denoiser, cond, self.cfg, samples.shape[0])
        mask = None
        if self.latent_image.get("noise_mask") is not None:
            mask = _latent_mask(self.latent_image["noise_mask"], noise.shape, model.denoiser.device, torch.float32)
        sigmas = comfy_sigmas(model.schedule, self.scheduler, self.steps, self.denoise)
        with ctx.progress(max(len(sigmas) - 1, 0)) as bar:
            out = ksample(model, guidance, samples, noise, sigmas, self.sampler_name, self.seed, mask, bar.update)
        latent = dict(self.latent_image)
        latent["samples"] = out
        return self.Outputs(LATENT=latent)


class ComfyVAEDecode(Node):
    """VAE Decode (headless stand-in for ComfyUI's VAEDecode)."""

    CLASS_TYPE = "VAEDecode"
    CATEGORY = "latent"
    DISPLAY_NAME = "VAE Decode"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        IMAGE: Image = Field(description="The decoded image.")

    samples: Latent = Field(description="The latent to be decoded.")
    vae: ComfyVAE = Field(description="The VAE model used for decoding the latent.")

    def run(self, ctx: RunContext) -> Outputs:
        handle = comfy_bridge.autoencoder(self.vae)
        z = latent_samples(self.samples, "samples").to(device=handle.device, dtype=handle.dtype)
        x = handle.model.decode(z).sample.float()
        return self.Outputs(IMAGE=nchw_to_image(torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0).cpu()))


class ComfyVAEEncode(Node):
    """VAE Encode (headless stand-in for ComfyUI's VAEEncode: the posterior mode, centre-cropped to multiples of 8)."""

    CLASS_TYPE = "VAEEncode"
    CATEGORY = "latent"
    DISPLAY_NAME = "VAE Encode"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        LATENT: Latent = Field(description="The encoded latent.")

    pixels: Image = Field(description="The images to encode.")
    vae: ComfyVAE = Field(description="The VAE model used for encoding.")

    def run(self, ctx: RunContext) -> Outputs:
        handle = comfy_bridge.autoencoder(self.vae)
        x = image_to_nchw(self.pixels, "pixels")[:, :3]
        f = 2 ** (len(handle.model.config.block_out_channels) - 1)  # 8 for SD's VAE
        h, w = x.shape[2] // f * f, x.shape[3] // f * f
        top, left = (x.shape[2] % f) // 2, (x.shape[3] % f) // 2
        x = x[:, :, top:top + h, left:left + w]
        z = handle.model.encode((x * 2.0 - 1.0).to(device=handle.device, dtype=handle.dtype)).latent_dist.mode()
        return self.Outputs(LATENT={"samples": z.float().cpu()})


class ComfyImageScaleToTotalPixels(Node):
    """Scale Image to Total Pixels (headless stand-in for ComfyUI's ImageScaleToTotalPixels, which the img2img
    template uses): the aspect ratio kept, width and height rounded, as ComfyUI's common_upscale does it (no
    antialiasing, no clamping; lanczos through 8-bit PIL images)."""

    CLASS_TYPE = "ImageScaleToTotalPixels"
    CATEGORY = "image/upscaling"
    DISPLAY_NAME = "Scale Image to Total Pixels"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        IMAGE: Image = Field(description="The scaled images.")

    image: Image = Field(description="The images to scale.")
    upscale_method: Literal["nearest-exact", "bilinear", "area", "bicubic", "lanczos"] = Field(
        "nearest-exact", description="The interpolation.")
    megapixels: Annotated[float, Widget(step=0.01)] = Field(
        1.0, ge=0.01, le=16.0, description="The number of pixels of the result, in units of 1024 x 1024.")

    def run(self, ctx: RunContext) -> Outputs:
        x = image_to_nchw(self.image, "image")
        scale = math.sqrt(int(self.megapixels * 1024 * 1024) / (x.shape[3] * x.shape[2]))
        width, height = round(x.shape[3] * scale), round(x.shape[2] * scale)
        if width * height > MAX_PIXELS:
            raise ValueError(f"megapixels {self.megapixels}: {width}x{height} exceeds the limit of {MAX_PIXELS} "
                             "pixels per image")
        if self.upscale_method == "lanczos":  # through 8-bit images, truncated as ComfyUI does
            return self.Outputs(IMAGE=torch.cat([
                pil_to_tensor(tensor_to_pil(frame).resize((width, height), resample=PILImage.Resampling.LANCZOS))[0]
                for frame in self.image]))
        return self.Outputs(IMAGE=nchw_to_image(F.interpolate(x, size=(height, width), mode=self.upscale_method)))
