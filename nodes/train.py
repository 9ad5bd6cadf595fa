"""Training: an image folder as a dataset, a VQGAN trainer and a latent denoiser trainer.

Training nodes are long-running: a progress bar per step, a checkpoint every N steps in
`<output>/<prefix>-checkpoints/`, and the finished model in `<output>/<prefix>/` in diffusers format
(point the loaders at it with --models-dir). Run the node again with the same settings and it resumes
from its newest checkpoint; a cancelled run writes a checkpoint of its last finished step first, so
nothing is lost. Under `accelerate launch` the same nodes train with several processes.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from ..core.dataset import open_image_folder
from ..core.denoiser_trainer import DenoiserConfig, scheduler_config, train_denoiser
from ..core.gan_trainer import GANConfig, generator_settings, train_gan
from ..core.handles import DenoiserHandle, GANHandle, SchedulerHandle, VQModelHandle
from ..core.plots import loss_curve
from ..core.previews import gan_preview, reconstruction_preview, sample_preview
from ..core.train_loop import StepCallback
from ..core.vqgan_trainer import VQGANConfig, train_vqgan
from ..graph.context import RunContext
from ..graph.node import FileInput, Node, NodeOutputs, Widget
from ..graph.safety import MAX_BATCH, MAX_RESOLUTION, UnsafePathError, output_prefix
from ..graph.types import Image, IntSocket, StringSocket, nchw_to_image
from .io import check_prefix, save_images
from .sockets import GAN, Denoiser, ImageDataset, Scheduler, TextEncoder, VQModel

MAX_TRAIN_STEPS = 1_000_000
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5)}
CHANNELS_HELP = ("channels of each resolution level, comma-separated (e.g. '32,64,128'); each level after the "
                 "first halves the resolution")


def parse_channels(text: str, name: str, groups: int) -> tuple[int, ...]:
    """'32,64,128' -> (32, 64, 128); every entry a positive multiple of the norm group count."""
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError as err:
        raise ValueError(f"input {name!r} = {text!r} is not a comma-separated list of integers, e.g. "
                         "'32,64,128'") from err
    if not values or len(values) > 6 or any(v < 1 or v > 1024 for v in values):
        raise ValueError(f"input {name!r} = {text!r}: give 1 to 6 channel counts, each in 1..1024")
    bad = [v for v in values if v % groups]
    if bad:
        raise ValueError(f"input {name!r} = {text!r}: {bad} not divisible by norm_num_groups = {groups}; use "
                         f"multiples of {groups} or a smaller norm_num_groups")
    return values


def channel_problems(constants: dict[str, Any], name: str) -> list[tuple[str, str]]:
    text, groups = constants.get(name), constants.get("norm_num_groups", 1)
    if not isinstance(text, str) or not isinstance(groups, int):
        return []
    try:
        parse_channels(text, name, groups)
    except ValueError as err:
        return [(name, str(err))]
    return []


def run_folders(ctx: RunContext, prefix: str) -> tuple[Path, Path]:
    """(model folder, checkpoint folder) for a filename_prefix, inside the output folder."""
    folder, stem = output_prefix(ctx.paths.output_dir, prefix)
    return folder / stem, folder / f"{stem}-checkpoints"


def tensorboard_problems(constants: dict[str, Any]) -> list[tuple[str, str]]:
    if constants.get("tensorboard") is True and importlib.util.find_spec("tensorboard") is None:
        return [("tensorboard", "tensorboard is on but the 'tensorboard' package is not installed: "
                                "pip install comfyui-genart[tensorboard] (or pip install tensorboard), or turn it off")]
    return []


def tensorboard_folder(enabled: bool, checkpoint_dir: Path) -> Path | None:
    return checkpoint_dir / "tensorboard" if enabled else None


def progress_callback(bar: Any, keys: tuple[str, ...] = ()) -> StepCallback:
    """Moves the node's progress bar, with the logged values `keys` beside it where the bar can show text
    (tqdm's postfix in the CLI); the bar's update is where a cancelled run stops."""
    shown = [0]
    postfix = getattr(getattr(bar, "inner", bar), "set_postfix_str", None)

    def on_step(done: int, logs: dict[str, float]) -> None:
        if postfix is not None and keys:
            postfix(" ".join(f"{k}={logs[k]:.4g}" for k in keys if k in logs), refresh=False)
        bar.update(done - shown[0])
        shown[0] = done

    return on_step


class LoadImageFolder(Node):
    """Open an image folder as a training set: resized and cropped on the fly, optional flips, a held-out split."""

    CLASS_TYPE = "GenArtLoadImageFolder"
    CATEGORY = "GenArt/train"

    class Outputs(NodeOutputs):
        dataset: ImageDataset = Field(description="the dataset (file names and transform; images are read when used)")
        train_count: IntSocket = Field(description="images in the training split")
        heldout_count: IntSocket = Field(description="images in the held-out split")

    # A typed name, not a list: the engine fingerprints every file inside (size, mtime), so the output (and
    # features extracted from it) is reused until the folder changes.
    folder: Annotated[str, FileInput("input", listed=False)] = Field(
        "emoji32", description="folder inside the input folder ('.' = the input folder itself), "
                        "read recursively: .png, .jpg, .jpeg, .webp. A groups.json in it (file -> group name) keeps "
                        "each group on one side of the split")
    resolution: int = Field(32, ge=8, le=MAX_RESOLUTION, description="side in pixels: the shorter side is resized "
                            "to this (bicubic), then a square is cropped")
    crop: Literal["center", "random"] = Field("center", description="which square to cut out of the resized image "
                                              "when training ('random' is an augmentation; evaluation always uses "
                                              "the center)")
    flip: bool = Field(True, description="flip training images left-right with probability 0.5")
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="about this fraction of the groups (files "
                                    "without groups.json) goes to the held-out split; 0 = no held-out split")
    split_seed: int = Field(0, ge=0, le=2**31 - 1, description="salt of the split's hash; the same seed gives "
                            "the same split on any machine, and new files never move old ones")
    background: Literal["white", "black", "gray"] = Field("white", description="colour under transparent pixels")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        name = constants.get("folder")
        if not isinstance(name, str):
            return []
        try:
            path = ctx.paths.resolve_input("input", name)
        except UnsafePathError as err:
            return [("folder", str(err))]
        if not path.is_dir():
            return [("folder", f"image folder {name!r} not found in {ctx.paths.input_dir}; put the images in a "
                               "folder there (e.g. tools/build_emoji_dataset.py input/emoji32)")]
        return []

    def run(self, ctx: RunContext) -> Outputs:
        root = ctx.paths.resolve_input("input", self.folder)
        data = open_image_folder(root, self.resolution, self.holdout_fraction, self.split_seed, self.crop,
                                 self.flip, BACKGROUNDS[self.background])
        return self.Outputs(dataset=data, train_count=len(data.train), heldout_count=len(data.heldout))


class LoadDatasetImages(Node):
    """Read images of a dataset split as an IMAGE batch (center crop, no flip): for evaluation and previews."""

    CLASS_TYPE = "GenArtLoadDatasetImages"
    CATEGORY = "GenArt/train"

    class Outputs(NodeOutputs):
        image: Image = Field(description="images start .. start+count-1 of the split (fewer at its end), "
                             "[N, resolution, resolution, 3] float32 in [0, 1]")

    dataset: ImageDataset = Field(description="the dataset (GenArt Load Image Folder)")
    split: Literal["train", "heldout"] = Field("heldout", description="which split to read")
    start: int = Field(0, ge=0, le=10_000_000, description="index of the first image in the split (sorted by name)")
    count: int = Field(16, ge=1, le=MAX_BATCH, description="how many images")

    def run(self, ctx: RunContext) -> Outputs:
        files = self.dataset.files(self.split)
        if self.start >= len(files):
            raise ValueError(f"input 'start' = {self.start} but the {self.split} split has {len(files)} images; "
                             f"use a start below {len(files)}" + (" (or another split)" if not files else ""))
        images = self.dataset.images(self.split, self.start, self.count)
        return self.Outputs(image=nchw_to_image(images))


def _preview(ctx: RunContext, images: list[torch.Tensor], name: str) -> None:
    """Show preview images (temp folder) beside the node's text summary: a sample grid, the loss curve."""
    ctx.ui["images"] = [shown for image in images
                        for shown in save_images(image, ctx.paths.temp_dir, name, ctx, "temp", False)]


class TrainVQGAN(Node):
    """Train a VQGAN (diffusers VQModel, EMA codebook, L1 + GAN loss) on an image folder; resumes from checkpoints."""

    CLASS_TYPE = "GenArtTrainVQGAN"
    CATEGORY = "GenArt/train"
    OUTPUT_NODE = True
    NEEDS_GRAD = True

    class Outputs(NodeOutputs):
        vqmodel: VQModel = Field(description="the trained VQ autoencoder (plain diffusers VQModel, eval mode)")
        summary: StringSocket = Field(description="JSON: steps, split sizes, held-out PSNR / SSIM / codebook usage")
        loss_curve: Image = Field(description="the logged losses against the step (smoothed; the whole run, "
                                  "resumed parts included)")

    dataset: ImageDataset = Field(description="training images (GenArt Load Image Folder); its held-out split is "
                                  "used for the final figures")
    filename_prefix: str = Field("vqgan/genart-vq", description="run name inside the output folder: the model goes "
                                 "to <prefix>/ (a diffusers VQModel folder; 'vqgan/<name>' makes it loadable with "
                                 "--models-dir <output>), checkpoints to <prefix>-checkpoints/")
    steps: int = Field(20000, ge=1, le=MAX_TRAIN_STEPS, description="total optimizer steps; raise it and run again "
                       "to continue a finished run")
    batch_size: int = Field(64, ge=1, le=4096, description="global batch (split evenly over processes)")
    learning_rate: Annotated[float, Widget(step=0.00001)] = Field(
        2e-4, gt=0.0, le=1.0, description="Adam learning rate of the autoencoder (betas 0.5, 0.9)")
    warmup_steps: int = Field(0, ge=0, le=MAX_TRAIN_STEPS, description="linear learning-rate warm-up steps")
    block_channels: str = Field("32,64,128", description=CHANNELS_HELP + "; downscale factor 2^(levels-1)")
    layers_per_block: int = Field(1, ge=1, le=8, description="ResNet layers per level")
    latent_channels: int = Field(4, ge=1, le=64, description="encoder output channels")
    norm_num_groups: int = Field(32, ge=1, le=256, description="GroupNorm groups (divides every channel count)")
    num_codes: int = Field(512, ge=2, le=65536, description="codebook size")
    embed_dim: int = Field(4, ge=1, le=256, description="channels of a codebook vector (vq_embed_dim)")
    codebook_update: Literal["ema", "gradient"] = Field(
        "ema", description="'ema': moving-average codebook with k-means init and dead-code restart (recommended); "
        "'gradient': diffusers' quantizer learned by gradient, with the commitment weight on the right term")
    commitment: float = Field(0.25, ge=0.0, le=10.0, description="beta: weight of ||z - sg(e)||^2")
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0, description="'ema' only: decay of the code statistics")
    dead_code_threshold: float = Field(1.0, ge=0.0, le=1e6, description="'ema' only: restart a code used by fewer "
                                       "than this many vectors per global batch (moving average); 0 = never")
    kmeans_init: bool = Field(True, description="'ema' only: initialise the codebook by k-means on the first batch")
    l1_weight: float = Field(1.0, ge=0.0, le=100.0, description="weight of the L1 reconstruction loss "
                             "(pixels in [-1, 1])")
    l2_weight: float = Field(0.0, ge=0.0, le=100.0, description="weight of an L2 reconstruction loss")
    perceptual_weight: float = Field(0.0, ge=0.0, le=100.0, description="weight of the LPIPS-style loss; needs "
                                     "perceptual_weights")
    perceptual_weights: str = Field("", description="VGG16 weights (+ optional LPIPS heads) inside models/perceptual, "
                                    "as .safetensors; empty = no perceptual loss")
    disc_start: int = Field(2000, ge=0, le=MAX_TRAIN_STEPS, description="step at which the discriminator and the "
                            "GAN loss start")
    disc_weight: float = Field(0.8, ge=0.0, le=100.0, description="factor on the adaptive GAN weight; 0 = no "
                               "discriminator")
    disc_learning_rate: Annotated[float, Widget(step=0.00001)] = Field(
        2e-4, gt=0.0, le=1.0, description="Adam learning rate of the discriminator")
    disc_channels: int = Field(64, ge=1, le=512, description="PatchGAN base channels")
    disc_layers: int = Field(3, ge=1, le=6, description="PatchGAN stride-2 layers (the image must be at least "
                             "2^(layers+1) pixels)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the weights, batch order, augmentation and "
                      "codebook draws")
    checkpoint_every: int = Field(500, ge=0, le=MAX_TRAIN_STEPS, description="write a checkpoint every N steps "
                                  "(0 = only at the end)")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="how many of the newest checkpoints to keep")
    tensorboard: bool = Field(False, description="also write the logged losses as TensorBoard event files in "
                              "<prefix>-checkpoints/tensorboard/ (with each checkpoint; needs the optional "
                              "'tensorboard' package: pip install comfyui-genart[tensorboard])")
    num_workers: int = Field(0, ge=0, le=64, description="data-loading worker processes (0 = load in this process)")
    init_vqmodel: VQModel | None = Field(None, description="optional: start from this model (fine-tuning); its "
                                         "architecture replaces the fields above")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = (check_prefix(constants, ctx) + channel_problems(constants, "block_channels")
                    + tensorboard_problems(constants))
        if constants.get("perceptual_weight", 0) > 0 and not constants.get("perceptual_weights"):
            problems.append(("perceptual_weights", "perceptual_weight > 0 needs a weights file in models/perceptual; "
                             "give one or set perceptual_weight to 0"))
        return problems

    def config(self, ctx: RunContext) -> VQGANConfig:
        perceptual = ""
        if self.perceptual_weight > 0:
            path = ctx.paths.resolve_input("models/perceptual", self.perceptual_weights)
            if not path.is_file():
                raise FileNotFoundError(f"input 'perceptual_weights' = {self.perceptual_weights!r} not found in "
                                        f"{', '.join(map(str, ctx.paths.roots('models/perceptual')))}")
            perceptual = str(path)
        init = (self.init_vqmodel.source or "given model") if self.init_vqmodel is not None else ""
        return VQGANConfig(
            block_channels=parse_channels(self.block_channels, "block_channels", self.norm_num_groups),
            layers_per_block=self.layers_per_block, latent_channels=self.latent_channels, num_codes=self.num_codes,
            embed_dim=self.embed_dim, norm_num_groups=self.norm_num_groups, codebook_update=self.codebook_update,
            commitment=self.commitment, ema_decay=self.ema_decay, dead_code_threshold=self.dead_code_threshold,
            kmeans_init=self.kmeans_init, l1_weight=self.l1_weight, l2_weight=self.l2_weight,
            perceptual_weight=self.perceptual_weight, perceptual_weights=perceptual, disc_start=self.disc_start,
            disc_weight=self.disc_weight, disc_channels=self.disc_channels, disc_layers=self.disc_layers,
            learning_rate=self.learning_rate, disc_learning_rate=self.disc_learning_rate,
            warmup_steps=self.warmup_steps, batch_size=self.batch_size, steps=self.steps, seed=self.seed,
            checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints,
            num_workers=self.num_workers, init_from=init)

    def run(self, ctx: RunContext) -> Outputs:
        config = self.config(ctx)
        if self.dataset.resolution < 2 ** (self.disc_layers + 1) and self.disc_weight > 0:
            raise ValueError(f"input 'disc_layers' = {self.disc_layers} needs images of at least "
                             f"{2 ** (self.disc_layers + 1)} pixels, the dataset has {self.dataset.resolution}; "
                             "use fewer layers")
        factor = 2 ** (len(config.block_channels) - 1)
        if self.dataset.resolution % factor:
            raise ValueError(f"input 'block_channels' = {self.block_channels!r} downscales by {factor}, which does "
                             f"not divide the dataset's resolution {self.dataset.resolution}; use fewer levels or "
                             "another resolution")
        model_dir, checkpoint_dir = run_folders(ctx, self.filename_prefix)
        init = self.init_vqmodel.model if self.init_vqmodel is not None else None
        with ctx.progress(config.steps) as bar:
            result = train_vqgan(config, self.dataset, model_dir, checkpoint_dir, ctx.device, init,
                                 progress_callback(bar, ("rec", "d")),
                                 tensorboard_folder(self.tensorboard, checkpoint_dir))
        summary = json.dumps({**result.summary, "model": str(model_dir)})
        ctx.ui["text"] = [summary]
        curve = loss_curve(result.history)
        _preview(ctx, [reconstruction_preview(result.model, self.dataset), curve], "GenArt_vqgan_preview")
        return self.Outputs(vqmodel=VQModelHandle(result.model, source=str(model_dir)), summary=summary,
                            loss_curve=curve)


class TrainDenoiser(Node):
    """Train a latent diffusion UNet (DDPM, EMA weights) on a frozen VQ model's latents of an image folder."""

    CLASS_TYPE = "GenArtTrainDenoiser"
    CATEGORY = "GenArt/train"
    OUTPUT_NODE = True
    NEEDS_GRAD = True

    class Outputs(NodeOutputs):
        denoiser: Denoiser = Field(description="the trained UNet2DModel (EMA weights) with its latent_scale")
        scheduler: Scheduler = Field(description="the DDPM noise schedule it was trained with (use it, or DDIM / "
                                     "another kind with the same betas, for sampling)")
        summary: StringSocket = Field(description="JSON: steps, latent_scale, held-out loss")
        loss_curve: Image = Field(description="the logged losses against the step (smoothed; the whole run, "
                                  "resumed parts included)")

    dataset: ImageDataset = Field(description="training images (GenArt Load Image Folder)")
    vqmodel: VQModel = Field(description="the frozen VQ autoencoder whose quantized latents are learned")
    filename_prefix: str = Field("unet/genart-denoiser", description="run name inside the output folder: a "
                                 "pipeline-style folder <prefix>/ (unet/, scheduler/, genart_training.json with the "
                                 "latent_scale), checkpoints in <prefix>-checkpoints/")
    steps: int = Field(20000, ge=1, le=MAX_TRAIN_STEPS, description="total optimizer steps; raise it and run again "
                       "to continue a finished run")
    batch_size: int = Field(128, ge=1, le=4096, description="global batch (split evenly over processes)")
    learning_rate: Annotated[float, Widget(step=0.00001)] = Field(
        2e-4, gt=0.0, le=1.0, description="AdamW learning rate")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after the warm-up: constant (a finished run can be continued by raising steps), "
        "or cosine decay to zero at the last step (steps then fixes the schedule and cannot change on resume)")
    warmup_steps: int = Field(100, ge=0, le=MAX_TRAIN_STEPS, description="linear learning-rate warm-up steps")
    grad_clip: float = Field(1.0, ge=0.0, le=1e6, description="gradient norm clip (0 = off)")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="decay of the EMA weights that are saved")
    block_channels: str = Field("64,128,128", description=CHANNELS_HELP)
    layers_per_block: int = Field(2, ge=1, le=8, description="ResNet layers per level")
    attention_from: int = Field(1, ge=0, le=6, description="first level (0-based) with self-attention; the number "
                                "of levels = none")
    attention_head_dim: int = Field(32, ge=1, le=512, description="channels per attention head")
    norm_num_groups: int = Field(32, ge=1, le=256, description="GroupNorm groups (divides every channel count)")
    num_train_timesteps: int = Field(1000, ge=2, le=10000, description="diffusion timesteps")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field(
        "squaredcos_cap_v2", description="noise schedule ('squaredcos_cap_v2' = cosine; ignores beta_start/end)")
    beta_start: Annotated[float, Widget(step=0.00001)] = Field(0.0001, gt=0.0, lt=1.0, description="first beta")
    beta_end: Annotated[float, Widget(step=0.00001)] = Field(0.02, gt=0.0, lt=1.0, description="last beta")
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "v_prediction", description="what the UNet learns to predict: noise (epsilon), v, or the clean sample. With "
        "the cosine schedule v is the sound choice: on the default emoji model epsilon left samples as blobs "
        "(Frechet 243 vs 33 after 2,000 steps; models/MODEL_CARD.md)")
    loss_weighting: Literal["uniform", "min_snr"] = Field(
        "uniform", description="plain MSE, or min-SNR weights (Hang et al. 2023): caps the weight of low-noise "
        "timesteps so the model learns the layout sooner")
    min_snr_gamma: float = Field(5.0, gt=0.0, le=1000.0, description="the SNR cap of min_snr weighting (5 in the "
                                 "paper)")
    cache_latents: bool = Field(True, description="encode each training image (and its flip) once and keep the "
                                "latents in memory (center-crop datasets only; small: h*w*C floats per image)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the weights, batch order, flips, noise and "
                      "timesteps")
    checkpoint_every: int = Field(500, ge=0, le=MAX_TRAIN_STEPS, description="write a checkpoint every N steps "
                                  "(0 = only at the end)")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="how many of the newest checkpoints to keep")
    tensorboard: bool = Field(False, description="also write the logged losses as TensorBoard event files in "
                              "<prefix>-checkpoints/tensorboard/ (with each checkpoint; needs the optional "
                              "'tensorboard' package: pip install comfyui-genart[tensorboard])")
    text_encoder: TextEncoder | None = Field(None, description="train a text-conditioned denoiser "
                                             "(UNet2DConditionModel, cross-attention at the attention levels) on the "
                                             "dataset's captions.json, read by this frozen encoder (BERT family, e.g. "
                                             "all-MiniLM-L6-v2); unconnected: unconditional")
    caption_dropout: float = Field(0.1, ge=0.0, le=1.0, description="with a text encoder: share of images shown "
                                   "with the empty caption, so classifier-free guidance has an unconditional model")
    preview_samples: int = Field(16, ge=0, le=MAX_BATCH, description="samples drawn (DDIM, 25 steps, seed 0) and "
                                 "decoded for the preview at the end; 0 = none")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = (check_prefix(constants, ctx) + channel_problems(constants, "block_channels")
                    + tensorboard_problems(constants))
        if constants.get("beta_schedule") in ("linear", "scaled_linear") and \
                constants.get("beta_start", 0) >= constants.get("beta_end", 1):
            problems.append(("beta_end", f"beta_end {constants.get('beta_end')} must be larger than beta_start "
                                         f"{constants.get('beta_start')}"))
        return problems

    def run(self, ctx: RunContext) -> Outputs:
        channels = parse_channels(self.block_channels, "block_channels", self.norm_num_groups)
        if self.attention_head_dim > min(channels) and self.attention_from < len(channels):
            raise ValueError(f"input 'attention_head_dim' = {self.attention_head_dim} is larger than the "
                             f"channels of a level with attention ({min(channels[self.attention_from:])})")
        config = DenoiserConfig(
            block_channels=channels, layers_per_block=self.layers_per_block, attention_from=self.attention_from,
            attention_head_dim=self.attention_head_dim, norm_num_groups=self.norm_num_groups,
            num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
            beta_start=self.beta_start, beta_end=self.beta_end, prediction_type=self.prediction_type,
            loss_weighting=self.loss_weighting, min_snr_gamma=self.min_snr_gamma,
            learning_rate=self.learning_rate, lr_schedule=self.lr_schedule, warmup_steps=self.warmup_steps,
            grad_clip=self.grad_clip,
            ema_decay=self.ema_decay, batch_size=self.batch_size, steps=self.steps, seed=self.seed,
            checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints,
            cache_latents=self.cache_latents, vq_source=self.vqmodel.source,
            cross_attention_dim=int(self.text_encoder.text_encoder.config.hidden_size) if self.text_encoder else 0,
            caption_dropout=self.caption_dropout,
            text_encoder=self.text_encoder.source if self.text_encoder else "")
        model_dir, checkpoint_dir = run_folders(ctx, self.filename_prefix)
        with ctx.progress(config.steps) as bar:
            result = train_denoiser(config, self.dataset, self.vqmodel.model, model_dir, checkpoint_dir, ctx.device,
                                    progress_callback(bar, ("loss",)),
                                    tensorboard_folder(self.tensorboard, checkpoint_dir), text=self.text_encoder)
        scale = float(result.summary["latent_scale"])
        summary = json.dumps({**result.summary, "model": str(model_dir)})
        ctx.ui["text"] = [summary]
        denoiser = DenoiserHandle(result.model, latent_scale=scale, source=str(model_dir),
                                  prediction_type=config.prediction_type)
        scheduler = SchedulerHandle("DDPMScheduler", scheduler_config(config))
        curve = loss_curve(result.history)
        prompts = preview_prompts(self.dataset, self.preview_samples) if self.text_encoder else None
        shown = [sample_preview(denoiser, self.vqmodel, scheduler, self.preview_samples, text=self.text_encoder,
                                prompts=prompts)] if self.preview_samples else []
        _preview(ctx, [*shown, curve], "GenArt_denoiser_preview")
        return self.Outputs(denoiser=denoiser, scheduler=scheduler, summary=summary, loss_curve=curve)


def preview_prompts(data: Any, count: int) -> list[str]:
    """The first caption of the first `count` held-out images (else training images), for a text preview."""
    names = [n for n in (*data.heldout, *data.train) if n in data.captions][:count]
    return [data.captions[n][0] for n in names] + [""] * (count - len(names))


class TrainGAN(Node):
    """Train a GAN on an image folder: a generator (per-block noise inputs, optional mapping network and style
    modulation) and a discriminator trained against each other; the EMA generator is saved. Resumes from
    checkpoints bit for bit."""

    CLASS_TYPE = "GenArtTrainGAN"
    CATEGORY = "GenArt/train"
    OUTPUT_NODE = True
    NEEDS_GRAD = True

    class Outputs(NodeOutputs):
        gan: GAN = Field(description="the trained generator (EMA weights), eval mode")
        samples: Image = Field(description="an 8-per-row grid of samples (seed 0)")
        summary: StringSocket = Field(description="JSON: steps, loss, mean losses of the last 100 steps")
        loss_curve: Image = Field(description="the logged losses against the step (smoothed; the whole run, "
                                  "resumed parts included)")

    dataset: ImageDataset = Field(description="training images (GenArt Load Image Folder); the resolution must be "
                                  "4 x 2^(blocks - 1): 32 for four blocks")
    filename_prefix: str = Field("gan/genart-gan", description="run name inside the output folder: the generator "
                                 "goes to <prefix>/ ('gan/<name>' makes it loadable with --models-dir <output>), "
                                 "checkpoints to <prefix>-checkpoints/")
    steps: int = Field(16000, ge=1, le=MAX_TRAIN_STEPS, description="generator steps; raise it and run again to "
                       "continue a finished run")
    batch_size: int = Field(64, ge=2, le=4096, description="global batch of real and of generated images")
    loss: Literal["logistic", "hinge", "wgan-gp"] = Field(
        "logistic", description="'logistic': non-saturating GAN loss with lazy R1 (StyleGAN2; trains best here); "
        "'hinge'; 'wgan-gp': the Wasserstein objective E[D(G(z))] - E[D(x)] with a gradient penalty (three "
        "times slower a step here)")
    critic_steps: int = Field(1, ge=1, le=10, description="discriminator steps per generator step (5 is usual "
                              "for wgan-gp)")
    lr_g: Annotated[float, Widget(step=0.00001)] = Field(2e-4, gt=0.0, le=1.0, description="generator Adam lr")
    lr_d: Annotated[float, Widget(step=0.00001)] = Field(2e-4, gt=0.0, le=1.0, description="discriminator Adam lr")
    beta1: float = Field(0.0, ge=0.0, lt=1.0, description="Adam beta1 (0 as in StyleGAN2, 0.5 in DCGAN)")
    beta2: float = Field(0.99, ge=0.0, lt=1.0, description="Adam beta2")
    r1_gamma: float = Field(1.0, ge=0.0, le=1000.0, description="R1 penalty weight (logistic loss; 0 = off)")
    r1_every: int = Field(4, ge=1, le=64, description="apply R1 every N discriminator steps, scaled up by N (lazy)")
    gp_weight: float = Field(10.0, ge=0.0, le=1000.0, description="gradient penalty weight (wgan-gp)")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="decay of the generator's EMA weights (saved)")
    g_channels: str = Field("128,64,32,16", description="generator channels per block from 4x4 up, comma-separated "
                            "(four blocks draw 32x32)")
    d_channels: str = Field("16,32,64,128", description="discriminator channels from full resolution down to 4x4 "
                            "(as many entries as g_channels)")
    mapping_layers: int = Field(2, ge=0, le=8, description="layers of the z -> w mapping MLP (0 = none)")
    style_modulation: bool = Field(True, description="modulate every generator conv by w (StyleGAN2) instead of "
                                   "pixel norm")
    z_dim: int = Field(128, ge=1, le=1024, description="size of the latent z")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the weights, batch order, flips, z and noise")
    checkpoint_every: int = Field(500, ge=0, le=MAX_TRAIN_STEPS, description="write a checkpoint every N steps "
                                  "(0 = only at the end)")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="how many of the newest checkpoints to keep")
    tensorboard: bool = Field(False, description="also write the logged losses as TensorBoard event files in "
                              "<prefix>-checkpoints/tensorboard/ (with each checkpoint; needs the optional "
                              "'tensorboard' package: pip install comfyui-genart[tensorboard])")
    init_gan: GAN | None = Field(None, description="optional: start the generator from this one (fine-tuning; the "
                                 "discriminator starts fresh); its architecture replaces g_channels, mapping_layers, "
                                 "style_modulation and z_dim")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = check_prefix(constants, ctx) + tensorboard_problems(constants)
        for name in ("g_channels", "d_channels"):
            problems += channel_problems(constants, name)
        g, d = (constants.get(n) for n in ("g_channels", "d_channels"))
        if isinstance(g, str) and isinstance(d, str) and not problems and len(g.split(",")) != len(d.split(",")):
            problems.append(("d_channels", f"d_channels {d!r} has {len(d.split(','))} entries but g_channels "
                                           f"{g!r} has {len(g.split(','))}; give both the same number of levels"))
        return problems

    def run(self, ctx: RunContext) -> Outputs:
        config = GANConfig(
            loss=self.loss, g_channels=parse_channels(self.g_channels, "g_channels", 1),
            d_channels=parse_channels(self.d_channels, "d_channels", 1), mapping_layers=self.mapping_layers,
            style_modulation=self.style_modulation, z_dim=self.z_dim, batch_size=self.batch_size, lr_g=self.lr_g,
            lr_d=self.lr_d, beta1=self.beta1, beta2=self.beta2, critic_steps=self.critic_steps,
            gp_weight=self.gp_weight, r1_gamma=self.r1_gamma, r1_every=self.r1_every, ema_decay=self.ema_decay,
            steps=self.steps, seed=self.seed, checkpoint_every=self.checkpoint_every,
            keep_checkpoints=self.keep_checkpoints)
        init = None
        if self.init_gan is not None:
            init = self.init_gan.model
            if len(init.config.block_channels) != len(config.d_channels):
                raise ValueError(f"input 'init_gan' has {len(init.config.block_channels)} blocks but d_channels "
                                 f"{self.d_channels!r} has {len(config.d_channels)} entries; give d_channels as many")
            config = replace(config, **generator_settings(init), init_from=self.init_gan.source or "given model")
        model_dir, checkpoint_dir = run_folders(ctx, self.filename_prefix)
        with ctx.progress(config.steps) as bar:
            result = train_gan(config, self.dataset, model_dir, checkpoint_dir, ctx.device, init,
                               progress_callback(bar, ("d_loss", "g_loss")),
                               tensorboard_folder(self.tensorboard, checkpoint_dir))
        summary = json.dumps({**result.summary, "model": str(model_dir)})
        ctx.ui["text"] = [summary]
        samples = gan_preview(result.model, 16)
        curve = loss_curve(result.history, keys=("d_loss", "g_loss"))
        _preview(ctx, [samples, curve], "GenArt_gan_preview")
        return self.Outputs(gan=GANHandle(result.model, source=str(model_dir)), samples=samples, summary=summary,
                            loss_curve=curve)
