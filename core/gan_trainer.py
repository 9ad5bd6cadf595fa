"""Training a GAN (core.gan_models) on an image folder: a generator and a discriminator trained against each
other, with an EMA copy of the generator as the result.

Every random draw of a step (which images, their flips, z, the injected noise, interpolation weights) comes
from generators seeded by (seed, step, purpose), so a run resumed from the checkpoint of step k goes on bit
for bit as the uninterrupted one, and N processes under accelerate share one global batch.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .dataset import BatchPlan, ImageFolder, mix_seed, train_batches
from .gan_losses import GANLoss, discriminator_loss, generator_loss, gradient_penalty, r1_penalty
from .gan_models import GANDiscriminator, GANGenerator
from .train_loop import (
    CheckpointCadence,
    Checkpoints,
    EMAWeights,
    RunLog,
    StepCallback,
    TrainResult,
    check_resumable,
    config_dict,
    load_module,
    load_optimizer_state,
    make_accelerator,
    module_tensors,
    optimizer_state,
)

# Purposes of the per-step random streams (any distinct numbers).
_FAKE_FOR_D, _FAKE_FOR_G, _MIX = 10, 3, 2


@dataclass(frozen=True)
class GANConfig:
    """Every setting of a GAN run. Defaults: the recipe of the shipped genart-emoji32 GAN."""

    loss: GANLoss = "logistic"
    g_channels: tuple[int, ...] = (128, 64, 32, 16)
    g_layers_per_block: int = 1
    mapping_layers: int = 2
    style_modulation: bool = True
    d_channels: tuple[int, ...] = (16, 32, 64, 128)
    d_layers_per_block: int = 0
    mbstd_group_size: int = 4
    spectral_norm: bool = False
    z_dim: int = 128
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.99
    critic_steps: int = 1
    gp_weight: float = 10.0
    drift: float = 0.0
    r1_gamma: float = 1.0
    r1_every: int = 4
    ema_decay: float = 0.999
    steps: int = 16000
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    init_from: str = ""


GENERATOR_FIELDS = {"z_dim": "z_dim", "block_channels": "g_channels", "layers_per_block": "g_layers_per_block",
                    "mapping_layers": "mapping_layers", "style_modulation": "style_modulation"}


def generator_settings(generator: Any) -> dict[str, Any]:
    """The GANConfig fields that describe `generator`'s architecture (to start a run from it)."""
    cfg = generator.config
    return {field: tuple(cfg[key]) if key == "block_channels" else cfg[key] for key, field in GENERATOR_FIELDS.items()}


def build_gan(config: GANConfig) -> tuple[GANGenerator, GANDiscriminator]:
    generator = GANGenerator(z_dim=config.z_dim, block_channels=config.g_channels,
                             layers_per_block=config.g_layers_per_block, mapping_layers=config.mapping_layers,
                             style_modulation=config.style_modulation)
    discriminator = GANDiscriminator(block_channels=config.d_channels, layers_per_block=config.d_layers_per_block,
                                     mbstd_group_size=config.mbstd_group_size, spectral_norm=config.spectral_norm)
    return generator, discriminator


def _stream(seed: int, step: int, purpose: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(seed, step, purpose))


class RealImages:
    """The training split's images for a draw (batch number), in [-1, 1], channels-last.

    With a center crop the split is decoded once and kept (3,584 emoji of 32x32 are 44 MB): reading 64
    PNGs a step would cost more than the step. The batches equal train_batches' (same order, same flips).
    """

    def __init__(self, data: ImageFolder, config: GANConfig, rank: int, world: int) -> None:
        self.data, self.config, self.rank, self.world = data, config, rank, world
        self.plan = BatchPlan(len(data.train), config.batch_size, config.seed)
        self.kept = data.images("train") if data.crop == "center" else None

    def batch(self, draw: int) -> torch.Tensor:
        if self.kept is None:
            x = next(train_batches(self.data, self.config.batch_size, self.config.seed, draw, draw + 1,
                                   self.rank, self.world))
        else:
            items = self.plan.items(draw, self.rank, self.world)
            flips = [self.data.will_flip(mix_seed(self.config.seed, epoch, i)) for i, epoch in items]
            x = self.kept[[i for i, _ in items]]
            x = torch.stack([im.flip(-1) if f else im for im, f in zip(x, flips, strict=True)])
        return (x * 2 - 1).contiguous(memory_format=torch.channels_last)


def _fakes(generator: Any, config: GANConfig, step: int, purpose: int, rank: int, world: int,
           device: torch.device) -> torch.Tensor:
    """This process's share of the step's generated batch (z and noise drawn for the whole global batch)."""
    share = config.batch_size // world
    z = torch.randn(config.batch_size, config.z_dim, generator=_stream(config.seed, step, purpose))
    noise = _stream(config.seed, step, purpose + 1)
    x = generator(z[rank * share:(rank + 1) * share].to(device), noise_generator=noise).sample
    return x.contiguous(memory_format=torch.channels_last)


def train_gan(config: GANConfig, data: ImageFolder, model_dir: Path, checkpoint_dir: Path,
              device: torch.device | None = None, init_model: Any = None, on_step: StepCallback | None = None,
              tensorboard: Path | None = None) -> TrainResult:
    """Train (or resume training) a GAN; writes checkpoints and, at the end, the EMA generator (diffusers
    folder) in `model_dir`. `init_model`: a GANGenerator to start from (fine-tuning; the discriminator starts
    fresh), its architecture equal to the config's (generator_settings). `on_step(step, logs)` as in
    train_vqgan (an exception it raises stops the run after a checkpoint of that step)."""
    accelerator = make_accelerator(device or torch.device("cpu"))
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world} processes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator, discriminator = build_gan(config)
    if init_model is not None:
        wanted = {k: getattr(config, k) for k in GENERATOR_FIELDS.values()}
        given = generator_settings(init_model)
        if given != wanted:
            diff = ", ".join(f"{k}: {given[k]!r} vs {wanted[k]!r}" for k in wanted if given[k] != wanted[k])
            raise ValueError(f"init_model's architecture differs from the config ({diff}); build the config with "
                             "generator_settings(init_model)")
        generator.load_state_dict(init_model.state_dict(), strict=True)
    if generator.sample_size != data.resolution:
        raise ValueError(f"the generator draws {generator.sample_size}x{generator.sample_size} images (4 x 2^"
                         f"{len(config.g_channels) - 1} for {len(config.g_channels)} blocks) but the dataset's "
                         f"resolution is {data.resolution}; change g_channels / d_channels or the resolution")
    # channels-last: oneDNN's native layout, about a third faster convolutions on CPU at these widths.
    generator.to(memory_format=torch.channels_last)
    discriminator.to(memory_format=torch.channels_last)
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    ema = EMAWeights(generator.parameters(), config.ema_decay)

    checkpoints = Checkpoints(checkpoint_dir, max(1, config.keep_checkpoints))
    start = 0
    found = checkpoints.latest()
    if found is not None:
        start, path = found
        tensors, meta = Checkpoints.load(path)
        check_resumable(meta["config"], config, checkpoint_dir)
        load_module("g", generator, tensors)
        load_module("d", discriminator, tensors)
        ema.load("ema", tensors)
        load_optimizer_state("opt_g", opt_g, tensors, meta["opt_g"])
        load_optimizer_state("opt_d", opt_d, tensors, meta["opt_d"])
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    ema.shadow = [s.to(accelerator.device) for s in ema.shadow]
    raw_g, raw_d = accelerator.unwrap_model(generator), accelerator.unwrap_model(discriminator)
    real_images = RealImages(data, config, rank, world)
    log = RunLog(checkpoint_dir, start, tensorboard if accelerator.is_main_process else None)
    dev = accelerator.device

    def save(step: int) -> None:
        if accelerator.is_main_process:
            tg, mg = optimizer_state("opt_g", opt_g)
            td, md = optimizer_state("opt_d", opt_d)
            checkpoints.save(step, {**module_tensors("g", raw_g), **module_tensors("d", raw_d),
                                    **ema.tensors("ema"), **tg, **td},
                             {"config": config_dict(config), "opt_g": mg, "opt_d": md})
            log.flush()
        accelerator.wait_for_everyone()

    generator.train()
    discriminator.train()
    cadence = CheckpointCadence(save, config.checkpoint_every, config.steps, start, on_step)
    for step in range(start, config.steps):
        logs: dict[str, float] = {}
        discriminator.requires_grad_(True)
        for c in range(config.critic_steps):
            draw = step * config.critic_steps + c
            real = real_images.batch(draw).to(dev)
            with torch.no_grad():
                fake = _fakes(generator, config, step, _FAKE_FOR_D + 2 * c, rank, world, dev)
            lazy_r1 = config.loss == "logistic" and config.r1_gamma > 0 and draw % config.r1_every == 0
            real.requires_grad_(lazy_r1)
            real_logits, fake_logits = discriminator(real), discriminator(fake)
            d_loss = discriminator_loss(config.loss, real_logits, fake_logits, config.drift)
            logs["d_loss"] = float(accelerator.reduce(d_loss.detach(), "mean"))
            if config.loss == "wgan-gp":
                share = config.batch_size // world
                mix = torch.rand(config.batch_size, generator=_stream(config.seed, draw, _MIX))
                gp = gradient_penalty(discriminator, real, fake, mix[rank * share:(rank + 1) * share].to(dev))
                d_loss = d_loss + config.gp_weight * gp
                logs["gp"] = float(gp.detach())
            if lazy_r1:
                penalty = r1_penalty(real_logits, real)
                # Every r1_every-th step, scaled up so the average pull equals gamma / 2 per step.
                d_loss = d_loss + config.r1_gamma / 2 * config.r1_every * penalty
                logs["r1"] = float(penalty.detach())
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(d_loss)
            opt_d.step()
        discriminator.requires_grad_(False)
        g_loss = generator_loss(config.loss, discriminator(
            _fakes(generator, config, step, _FAKE_FOR_G, rank, world, dev)))
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(g_loss)
        opt_g.step()
        ema.update(raw_g.parameters(), step)
        logs["g_loss"] = float(accelerator.reduce(g_loss.detach(), "mean"))
        log.add({"step": step, **logs})
        cadence.step_done(step + 1, logs)
    end = max(start, config.steps)
    if found is None or start < end:
        save(end)
    model = copy.deepcopy(raw_g).eval()
    ema.copy_to(model.parameters())  # buffers (the running mean of w) come with the copy
    model.requires_grad_(False).to(memory_format=torch.contiguous_format)
    history = log.entries()
    summary: dict[str, Any] = {"steps": end, "train_images": len(data.train), "loss": config.loss,
                               "parameters": sum(p.numel() for p in model.parameters())}
    for key in ("d_loss", "g_loss"):
        values = [e[key] for e in history[-100:] if key in e]
        if values:
            summary[f"{key}_last_100"] = sum(values) / len(values)
    if accelerator.is_main_process:
        model_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(model_dir), safe_serialization=True)
    accelerator.wait_for_everyone()
    return TrainResult(model=model, history=history, summary=summary)
