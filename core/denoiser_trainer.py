"""Train a latent denoiser: a diffusers UNet2DModel on a frozen VQ model's quantized latents, DDPM noise
schedule, EMA weights; or, given a frozen text encoder and captions, a UNet2DConditionModel that reads them
through cross-attention (captions dropped at `caption_dropout` for classifier-free guidance).

The latents are the codebook vectors of each image (what the decoder was trained on) times
`latent_scale` = 1 / their standard deviation over the first training images, so the UNet sees unit
variance; samplers divide it back out (DenoiserHandle.latent_scale). Batch order, flips, noise and
timesteps are functions of (seed, step), so resume is exact and N processes equal one with the same
global batch. The run folder ends up as a diffusers pipeline-style folder: model_index.json, unet/
(EMA weights), scheduler/ and genart_training.json (latent_scale, settings).
"""
from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .dataset import BatchPlan, ImageFolder, mix_seed
from .files import share_modes
from .handles import TRAINING_FILE
from .train_loop import (
    CheckpointCadence,
    Checkpoints,
    EMAWeights,
    RunLog,
    StepCallback,
    TrainResult,
    check_resumable,
    config_dict,
    learning_rate,
    load_module,
    load_optimizer_state,
    make_accelerator,
    module_tensors,
    optimizer_state,
    set_learning_rate,
)


@dataclass(frozen=True)
class DenoiserConfig:
    """Every setting of a denoiser run."""

    block_channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 2
    attention_from: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "v_prediction"
    # "min_snr": Hang et al. 2023, weight min(SNR, gamma) in x0 terms; stops the many easy low-noise
    # steps from dominating the gradient, which speeds up learning of the global layout.
    loss_weighting: Literal["uniform", "min_snr"] = "uniform"
    min_snr_gamma: float = 5.0
    learning_rate: float = 2e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    batch_size: int = 128
    steps: int = 1000
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    cache_latents: bool = True
    num_workers: int = 0
    vq_source: str = ""
    # Text conditioning: 0 trains an unconditional UNet2DModel; the text encoder's width trains a
    # UNet2DConditionModel with cross-attention at the attention levels (attention_from and below).
    cross_attention_dim: int = 0
    caption_dropout: float = 0.1
    text_encoder: str = ""


def build_unet(config: DenoiserConfig, channels: int, size: int) -> Any:
    from diffusers import UNet2DConditionModel, UNet2DModel

    n = len(config.block_channels)
    if config.cross_attention_dim:
        down = tuple("CrossAttnDownBlock2D" if i >= config.attention_from else "DownBlock2D" for i in range(n))
        up = tuple("CrossAttnUpBlock2D" if i >= config.attention_from else "UpBlock2D" for i in reversed(range(n)))
        # UNet2DConditionModel reads attention_head_dim as the number of heads (a diffusers naming quirk).
        heads = tuple(max(1, c // config.attention_head_dim) for c in config.block_channels)
        return UNet2DConditionModel(
            sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=config.block_channels,
            layers_per_block=config.layers_per_block, down_block_types=down, up_block_types=up,
            mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=config.cross_attention_dim,
            attention_head_dim=heads, norm_num_groups=config.norm_num_groups)
    down = tuple("AttnDownBlock2D" if i >= config.attention_from else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if i >= config.attention_from else "UpBlock2D" for i in reversed(range(n)))
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
                       down_block_types=down, up_block_types=up, attention_head_dim=config.attention_head_dim,
                       norm_num_groups=config.norm_num_groups)


def scheduler_config(config: DenoiserConfig) -> dict[str, Any]:
    return {"num_train_timesteps": config.num_train_timesteps, "beta_schedule": config.beta_schedule,
            "beta_start": config.beta_start, "beta_end": config.beta_end,
            "prediction_type": config.prediction_type, "clip_sample": False}


@torch.no_grad()
def quantized_latents(vq: Any, images: torch.Tensor) -> torch.Tensor:
    """The codebook vectors of images [B, 3, H, W] in [0, 1]: [B, vq_embed_dim, h, w]."""
    h = vq.encode(images.to(next(vq.parameters()).device) * 2 - 1).latents
    _, _, (_, _, indices) = vq.quantize(h)
    b, c, hh, ww = h.shape
    return vq.quantize.get_codebook_entry(indices.reshape(-1), (b, hh, ww, c)).float()


class CaptionSource:
    """Each training image's captions, encoded once by the frozen text encoder; a batch's caption (one of the
    image's, or the empty one at `caption_dropout`) is a function of (seed, epoch, image) like its flip."""

    def __init__(self, data: ImageFolder, text: Any, config: DenoiserConfig) -> None:
        from .text import MASKED_MAX_TOKENS, encode_texts, uses_attention_mask

        if not uses_attention_mask(text):
            raise ValueError("the text denoiser trainer needs an encoder with an attention mask (BERT family, e.g. "
                             "all-MiniLM-L6-v2); CLIP-conditioned training is not supported")
        self.data, self.config = data, config
        texts = sorted({c for n in data.train for c in data.captions.get(n, ())} | {""})
        self.index = {t: i for i, t in enumerate(texts)}
        longest = max(len(text.tokenizer(t).input_ids) for t in texts)
        length = min(longest, MASKED_MAX_TOKENS)
        states, masks = [], []
        for start in range(0, len(texts), 256):
            s, m = encode_texts(text, texts[start:start + 256], length)
            states.append(s.float().cpu())
            masks.append(m.cpu())
        self.states, self.masks = torch.cat(states), torch.cat(masks)

    def pick(self, items: list[tuple[int, int]]) -> list[str]:
        out = []
        for i, epoch in items:
            rng = random.Random(mix_seed(self.config.seed, epoch, i, 7))
            captions = self.data.captions.get(self.data.train[i], ())
            dropped = rng.random() < self.config.caption_dropout
            out.append("" if dropped or not captions else captions[rng.randrange(len(captions))])
        return out

    def batch(self, items: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor([self.index[c] for c in self.pick(items)])
        return self.states[rows], self.masks[rows]


class LatentSource:
    """Latents of the training images as the batch plan orders them, encoded once and kept when
    `cache` (only with center crops: then an image has exactly two versions, flipped or not)."""

    def __init__(self, data: ImageFolder, vq: Any, config: DenoiserConfig, rank: int, world: int) -> None:
        if config.batch_size % world:
            raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world} processes; "
                             f"use a multiple of {world}")
        self.data, self.vq, self.rank, self.world = data, vq, rank, world
        self.plan = BatchPlan(len(data.train), config.batch_size, config.seed)
        self.cache: dict[tuple[int, bool], torch.Tensor] | None = (
            {} if config.cache_latents and data.crop == "center" else None)

    def batch(self, step: int) -> torch.Tensor:
        items = self.plan.items(step, self.rank, self.world)
        seeds = [mix_seed(self.plan.seed, epoch, i) for i, epoch in items]
        if self.cache is None:
            pairs = zip(items, seeds, strict=True)
            images = torch.stack([self.data.load(self.data.train[i], s) for (i, _), s in pairs])
            return quantized_latents(self.vq, images)
        keys = [(i, self.data.will_flip(s)) for (i, _), s in zip(items, seeds, strict=True)]
        missing = [(k, s) for k, s in zip(keys, seeds, strict=True) if k not in self.cache]
        if missing:
            unique = dict(missing)
            images = torch.stack([self.data.load(self.data.train[k[0]], s) for k, s in unique.items()])
            for k, z in zip(unique, quantized_latents(self.vq, images), strict=True):
                self.cache[k] = z
        return torch.stack([self.cache[k] for k in keys])


def measure_latent_scale(vq: Any, data: ImageFolder, count: int = 512) -> float:
    """1 / std of the quantized latents of the first `count` training images (no augmentation)."""
    starts = range(0, min(count, len(data.train)), 128)
    z = torch.cat([quantized_latents(vq, data.images("train", i, 128)) for i in starts])
    return float(1.0 / z.std().clamp_min(1e-6))


def train_denoiser(config: DenoiserConfig, data: ImageFolder, vq: Any, model_dir: Path, checkpoint_dir: Path,
                   device: torch.device | None = None, on_step: StepCallback | None = None,
                   tensorboard: Path | None = None, text: Any = None) -> TrainResult:
    """Train (or resume training) a UNet2DModel on `vq`'s latents of `data` (a UNet2DConditionModel on them
    and their captions when `text`, a TextEncoderHandle, is given); writes checkpoints and, at the end, the
    pipeline-style folder. `on_step` as in train_vqgan."""
    from diffusers import DDPMScheduler

    accelerator = make_accelerator(device or torch.device("cpu"))
    rank, world = accelerator.process_index, accelerator.num_processes
    vq = copy.deepcopy(vq).to(accelerator.device).eval().requires_grad_(False)
    probe = quantized_latents(vq, data.images("train", 0, 1))
    channels, size = probe.shape[1], probe.shape[2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet = build_unet(config, channels, size)
    scheduler: Any = DDPMScheduler(**scheduler_config(config))
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    ema = EMAWeights(unet.parameters(), config.ema_decay)

    checkpoints = Checkpoints(checkpoint_dir, max(1, config.keep_checkpoints))
    start = 0
    found = checkpoints.latest()
    if found is not None:
        start, path = found
        tensors, meta = Checkpoints.load(path)
        check_resumable(meta["config"], config, checkpoint_dir)
        load_module("unet", unet, tensors)
        ema.load("ema", tensors)
        load_optimizer_state("opt", optimizer, tensors, meta["opt"])
        latent_scale = float(meta["latent_scale"])
    else:
        latent_scale = measure_latent_scale(vq, data)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.shadow = [s.to(accelerator.device) for s in ema.shadow]
    raw_unet = accelerator.unwrap_model(unet)
    source = LatentSource(data, vq, config, rank, world)
    captions = _caption_source(data, text, config)
    alphas = scheduler.alphas_cumprod.to(accelerator.device)
    log = RunLog(checkpoint_dir, start, tensorboard if accelerator.is_main_process else None)

    def save(step: int) -> None:
        if accelerator.is_main_process:
            to, mo = optimizer_state("opt", optimizer)
            checkpoints.save(step, {**module_tensors("unet", raw_unet), **ema.tensors("ema"), **to},
                             {"config": config_dict(config), "opt": mo, "latent_scale": latent_scale})
            log.flush()
        accelerator.wait_for_everyone()

    unet.train()
    cadence = CheckpointCadence(save, config.checkpoint_every, config.steps, start, on_step)
    for step in range(start, config.steps):
        z0 = source.batch(step).to(accelerator.device) * latent_scale
        gen = torch.Generator().manual_seed(mix_seed(config.seed, step, 1))
        share = config.batch_size // world
        noise = torch.randn(config.batch_size, *z0.shape[1:], generator=gen)[rank * share:(rank + 1) * share]
        t = torch.randint(0, config.num_train_timesteps, (config.batch_size,), generator=gen)
        t = t[rank * share:(rank + 1) * share].to(accelerator.device)
        noise = noise.to(accelerator.device)
        noisy = scheduler.add_noise(z0, noise, t)
        target = training_target(z0, noise, alphas[t], config.prediction_type)
        total = config.steps if config.lr_schedule == "cosine" else 0
        set_learning_rate(optimizer, learning_rate(config.learning_rate, step, config.warmup_steps, total))
        if captions is None:
            pred = unet(noisy, t).sample
        else:
            states, masks = captions.batch(source.plan.items(step, rank, world))
            pred = unet(noisy, t, encoder_hidden_states=states.to(accelerator.device),
                        encoder_attention_mask=masks.to(accelerator.device)).sample
        loss = denoising_loss(pred, target, alphas[t], config)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(unet.parameters(), config.grad_clip)
        optimizer.step()
        ema.update(raw_unet.parameters(), step)
        logs = {"loss": float(accelerator.reduce(loss.detach(), "mean"))}
        log.add({"step": step, **logs})
        cadence.step_done(step + 1, logs)
    end = max(start, config.steps)
    if found is None or start < end:
        save(end)
    model = copy.deepcopy(raw_unet).eval()
    ema.copy_to(model.parameters())
    model.requires_grad_(False)
    summary: dict[str, Any] = {"steps": end, "latent_scale": latent_scale, "train_images": len(data.train),
                               "latent_shape": [channels, size, size]}
    if accelerator.is_main_process:
        write_pipeline_folder(model_dir, model, scheduler_config(config), latent_scale, config)
        if data.heldout:
            summary["heldout_loss"] = heldout_loss(model, vq, data, config, latent_scale, text)
    accelerator.wait_for_everyone()
    return TrainResult(model=model, history=log.entries(), summary=summary)


def _caption_source(data: ImageFolder, text: Any, config: DenoiserConfig) -> CaptionSource | None:
    if not config.cross_attention_dim:
        if text is not None:
            raise ValueError("a text encoder was given but cross_attention_dim is 0 (an unconditional denoiser)")
        return None
    if text is None:
        raise ValueError(f"cross_attention_dim is {config.cross_attention_dim}: a text encoder is needed")
    width = int(text.text_encoder.config.hidden_size)
    if width != config.cross_attention_dim:
        raise ValueError(f"cross_attention_dim is {config.cross_attention_dim} but the text encoder's width is "
                         f"{width}; set cross_attention_dim to {width}")
    if not any(n in data.captions for n in data.train):
        raise ValueError(f"no training image of {data.root} has captions: a text denoiser needs captions.json "
                         "beside the images (tools/emoji_captions.py writes it for the emoji set)")
    return CaptionSource(data, text, config)


def training_target(z0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
                    ) -> torch.Tensor:
    """What the UNet should output for z_t = sqrt(a) z0 + sqrt(1 - a) noise."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = alpha_bar.view(-1, 1, 1, 1)
        return a.sqrt() * noise - (1 - a).sqrt() * z0
    return z0


def denoising_loss(pred: torch.Tensor, target: torch.Tensor, alpha_bar: torch.Tensor,
                   config: DenoiserConfig) -> torch.Tensor:
    """Mean squared error, or with min-SNR weights: min(SNR, gamma) / (what the prediction type's
    error already scales with: SNR for epsilon, SNR + 1 for v, 1 for the sample)."""
    if config.loss_weighting == "uniform":
        return F.mse_loss(pred, target)
    snr = alpha_bar / (1 - alpha_bar)
    scale = {"epsilon": snr, "v_prediction": snr + 1, "sample": torch.ones_like(snr)}[config.prediction_type]
    weight = snr.clamp(max=config.min_snr_gamma) / scale
    return (weight * (pred - target).pow(2).flatten(1).mean(1)).mean()


def write_pipeline_folder(folder: Path, unet: Any, sched: dict[str, Any], latent_scale: float,
                          config: DenoiserConfig) -> None:
    from diffusers import DDPMScheduler

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    scheduler: Any = DDPMScheduler(**sched)
    scheduler.save_pretrained(str(folder / "scheduler"))
    index = {"_class_name": "GenArtLatentDiffusion", "unet": ["diffusers", type(unet).__name__],
             "scheduler": ["diffusers", "DDPMScheduler"]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / TRAINING_FILE).write_text(json.dumps({"latent_scale": latent_scale, "config": config_dict(config)},
                                                   indent=2) + "\n")
    share_modes(folder)


@torch.no_grad()
def heldout_loss(unet: Any, vq: Any, data: ImageFolder, config: DenoiserConfig, latent_scale: float,
                 text: Any = None, count: int = 512) -> float:
    """Mean training loss (with the run's weighting) on held-out latents at seeded timesteps and noise:
    a fixed yardstick for runs with the same settings."""
    from diffusers import DDPMScheduler

    scheduler: Any = DDPMScheduler(**scheduler_config(config))
    z0 = quantized_latents(vq, data.images("heldout", 0, count)) * latent_scale
    gen = torch.Generator().manual_seed(12345)
    noise = torch.randn(z0.shape, generator=gen)
    t = torch.randint(0, config.num_train_timesteps, (len(z0),), generator=gen)
    device = next(unet.parameters()).device
    kwargs = {}
    if text is not None:  # each image's first caption
        from .text import MASKED_MAX_TOKENS, encode_texts

        names = data.files("heldout")[:count]
        states, mask = encode_texts(text, [(data.captions.get(n) or ("",))[0] for n in names], MASKED_MAX_TOKENS)
        kwargs = {"encoder_hidden_states": states.to(device), "encoder_attention_mask": mask.to(device)}
    pred = unet(scheduler.add_noise(z0, noise, t).to(device), t.to(device), **kwargs).sample.cpu()
    alpha_bar = scheduler.alphas_cumprod[t]
    return float(denoising_loss(pred, training_target(z0, noise, alpha_bar, config.prediction_type), alpha_bar,
                                config))
