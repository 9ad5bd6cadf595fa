"""Train a VQGAN: a diffusers VQModel with an EMA codebook, L1 (+ L2, + perceptual) reconstruction and
a PatchGAN discriminator with hinge loss and adaptive weight from `disc_start` on (vqgan_loss.py).

`train_vqgan` runs in one process or under `accelerate launch` (DDP; each process takes its share of
the global batch, the codebook statistics are summed over processes). It resumes from the newest
checkpoint in the run folder and ends by writing the model as a plain diffusers VQModel.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .dataset import ImageFolder, train_batches
from .files import share_modes
from .metrics import ssim_and_cs
from .quantizer import EMAVectorQuantizer
from .train_loop import (
    CheckpointCadence,
    Checkpoints,
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
from .vqgan_losses import PatchDiscriminator, PerceptualLoss, adaptive_weight, hinge_d_loss


@dataclass(frozen=True)
class VQGANConfig:
    """Every setting of a VQGAN run (architecture, objective, optimisation, bookkeeping)."""

    block_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    latent_channels: int = 4
    num_codes: int = 512
    embed_dim: int = 4
    norm_num_groups: int = 32
    mid_attention: bool = True
    codebook_update: Literal["ema", "gradient"] = "ema"
    commitment: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0
    kmeans_init: bool = True
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    perceptual_weight: float = 0.0
    perceptual_weights: str = ""
    disc_start: int = 2000
    disc_weight: float = 0.8
    disc_channels: int = 64
    disc_layers: int = 3
    learning_rate: float = 2e-4
    disc_learning_rate: float = 2e-4
    warmup_steps: int = 0
    batch_size: int = 64
    steps: int = 1000
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    num_workers: int = 0
    init_from: str = ""


def build_vqmodel(config: VQGANConfig) -> Any:
    from diffusers import VQModel

    n = len(config.block_channels)
    return VQModel(in_channels=3, out_channels=3, block_out_channels=config.block_channels,
                   down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                   layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
                   num_vq_embeddings=config.num_codes, vq_embed_dim=config.embed_dim,
                   norm_num_groups=config.norm_num_groups, mid_block_add_attention=config.mid_attention)


def plain_vqmodel(vq: Any) -> Any:
    """A plain diffusers VQModel (its own quantizer) with `vq`'s weights, in eval mode."""
    from diffusers import VQModel

    plain = VQModel.from_config(vq.config)
    plain.load_state_dict(vq.state_dict(), strict=True)
    return plain.to(next(vq.parameters()).device).eval()


class VQGenerator(nn.Module):
    """The VQModel as one module for DDP: image [-1, 1] -> (reconstruction, codebook loss, indices)."""

    def __init__(self, vq: Any) -> None:
        super().__init__()
        self.vq = vq

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.vq.encode(x).latents
        z_q, qloss, (_, _, indices) = self.vq.quantize(h)
        x_hat = self.vq.decode(z_q, force_not_quantize=True).sample
        return x_hat, qloss, indices


def psnr_ssim(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM of images [B, C, H, W] in [0, 1] (data range 1).

    SSIM as skimage's structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1): 11x11 Gaussian window, only window positions inside the image (the model card's figure).
    """
    mse = ((x - y) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-12))
    return psnr, ssim_and_cs(x, y, 1.5, border="valid")[0]


@dataclass(frozen=True)
class Reconstructions:
    """How well a VQ autoencoder reconstructs a set of images: PSNR and SSIM (skimage's border) per image,
    and how many distinct codes the set used."""

    psnr: torch.Tensor
    ssim: torch.Tensor
    codes_used: int
    num_codes: int

    def summary(self) -> dict[str, float]:
        return {"psnr": float(self.psnr.mean()), "ssim": float(self.ssim.mean()), "codes_used": self.codes_used,
                "codebook_usage": self.codes_used / self.num_codes, "images": len(self.psnr)}


@torch.no_grad()
def measure_reconstructions(vq: Any, chunks: Iterable[torch.Tensor]) -> Reconstructions:
    """Reconstruct chunks of [N, 3, H, W] images in [0, 1] (one tensor's slices, or an image set read from
    disk) through encode, quantize and decode."""
    vq = vq.eval()
    device = next(vq.parameters()).device
    psnrs, ssims, codes = [], [], []
    for chunk in chunks:
        x = chunk.to(device)
        h = vq.encode(x * 2 - 1).latents
        z_q, _, (_, _, idx) = vq.quantize(h)
        x_hat = (vq.decode(z_q, force_not_quantize=True).sample / 2 + 0.5).clamp(0, 1)
        p, s = psnr_ssim(x_hat.float(), x.float())
        psnrs.append(p.cpu())
        ssims.append(s.cpu())
        codes.append(idx.reshape(-1).cpu())
    if not codes:
        raise ValueError("no images to reconstruct")
    used = int(torch.unique(torch.cat(codes)).numel())
    return Reconstructions(torch.cat(psnrs), torch.cat(ssims), used, int(vq.config.num_vq_embeddings))


def evaluate_vq(vq: Any, images: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """PSNR, SSIM (means over images) and codebook usage of reconstructions of [N, 3, H, W] in [0, 1]."""
    return measure_reconstructions(vq, (images[i:i + batch] for i in range(0, len(images), batch))).summary()


def train_vqgan(config: VQGANConfig, data: ImageFolder, model_dir: Path, checkpoint_dir: Path,
                device: torch.device | None = None, init_model: Any = None,
                on_step: StepCallback | None = None, tensorboard: Path | None = None) -> TrainResult:
    """Train (or resume training) a VQGAN; writes checkpoints and, at the end, the diffusers model.

    `on_step(step, logs)` runs after every finished step; an exception it raises (a cancel: the node's
    progress bar raises Interrupted, ComfyUI its own) stops the run after a checkpoint of that step is
    written, so a later call resumes with nothing lost.
    """
    accelerator = make_accelerator(device or torch.device("cpu"))
    rank, world = accelerator.process_index, accelerator.num_processes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        vq = copy.deepcopy(init_model) if init_model is not None else build_vqmodel(config)
        disc = PatchDiscriminator(3, config.disc_channels, config.disc_layers)
    if config.codebook_update == "ema":
        vq.quantize = EMAVectorQuantizer.replacing(
            vq.quantize, beta=config.commitment, decay=config.ema_decay,
            dead_code_threshold=config.dead_code_threshold, kmeans_init=config.kmeans_init, seed=config.seed)
    else:
        vq.quantize.legacy, vq.quantize.beta = False, config.commitment
    vq.train()
    gen = VQGenerator(vq)
    perceptual = PerceptualLoss(Path(config.perceptual_weights)) if config.perceptual_weight > 0 else None
    opt_g = torch.optim.Adam([p for p in gen.parameters() if p.requires_grad], lr=config.learning_rate,
                             betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.disc_learning_rate, betas=(0.5, 0.9))

    checkpoints = Checkpoints(checkpoint_dir, max(1, config.keep_checkpoints))
    start = 0
    found = checkpoints.latest()
    if found is not None:
        start, path = found
        tensors, meta = Checkpoints.load(path)
        check_resumable(meta["config"], config, checkpoint_dir)
        load_module("gen", vq, tensors)
        load_module("disc", disc, tensors)
        if isinstance(vq.quantize, EMAVectorQuantizer):
            vq.quantize.load_ema_state({k[len("quant."):]: v for k, v in tensors.items() if k.startswith("quant.")})
        load_optimizer_state("opt_g", opt_g, tensors, meta["opt_g"])
        load_optimizer_state("opt_d", opt_d, tensors, meta["opt_d"])
    gen, disc, opt_g, opt_d = accelerator.prepare(gen, disc, opt_g, opt_d)
    if perceptual is not None:
        perceptual = perceptual.to(accelerator.device)
    log = RunLog(checkpoint_dir, start, tensorboard if accelerator.is_main_process else None)
    last_layer = vq.decoder.conv_out.weight

    def save(step: int) -> None:
        if accelerator.is_main_process:
            tensors = {**module_tensors("gen", vq), **module_tensors("disc", accelerator.unwrap_model(disc))}
            if isinstance(vq.quantize, EMAVectorQuantizer):
                tensors.update({f"quant.{k}": v for k, v in vq.quantize.ema_state().items()})
            tg, mg = optimizer_state("opt_g", opt_g)
            td, md = optimizer_state("opt_d", opt_d)
            checkpoints.save(step, {**tensors, **tg, **td},
                             {"config": config_dict(config), "opt_g": mg, "opt_d": md})
            log.flush()
        accelerator.wait_for_everyone()

    cadence = CheckpointCadence(save, config.checkpoint_every, config.steps, start, on_step)
    batches = train_batches(data, config.batch_size, config.seed, start, config.steps, rank, world,
                            config.num_workers)
    for step, images in enumerate(batches, start=start):
        logs = vqgan_step(config, step, images.to(accelerator.device), gen, disc, opt_g, opt_d, last_layer,
                          perceptual, accelerator)
        log.add({"step": step, **logs})
        cadence.step_done(step + 1, logs)
    end = max(start, config.steps)
    if found is None or start < end:
        save(end)
    model = plain_vqmodel(vq)
    summary: dict[str, Any] = {"steps": end, "train_images": len(data.train), "heldout_images": len(data.heldout)}
    if accelerator.is_main_process:
        model.save_pretrained(str(model_dir), safe_serialization=True)
        share_modes(model_dir)
        if data.heldout:
            summary["heldout"] = evaluate_vq(model, data.images("heldout"))
    accelerator.wait_for_everyone()
    return TrainResult(model=model, history=log.entries(), summary=summary)


def vqgan_step(config: VQGANConfig, step: int, images: torch.Tensor, gen: nn.Module, disc: nn.Module,
               opt_g: Any, opt_d: Any, last_layer: torch.Tensor, perceptual: PerceptualLoss | None,
               accelerator: Any) -> dict[str, float]:
    """One generator update and (from disc_start on) one discriminator update; returns logged values
    averaged over processes."""
    x = images * 2 - 1
    set_learning_rate(opt_g, learning_rate(config.learning_rate, step, config.warmup_steps))
    x_hat, qloss, indices = gen(x)
    rec = x.new_zeros(())
    if config.l1_weight:
        rec = rec + config.l1_weight * (x - x_hat).abs().mean()
    if config.l2_weight:
        rec = rec + config.l2_weight * ((x - x_hat) ** 2).mean()
    if perceptual is not None:
        rec = rec + config.perceptual_weight * perceptual(x, x_hat)
    use_disc = config.disc_weight > 0 and step >= config.disc_start
    loss = rec + qloss
    g_loss = weight = x.new_zeros(())
    if use_disc:
        g_loss = -disc(x_hat).mean()
        weight = adaptive_weight(rec, g_loss, last_layer, config.disc_weight)
        loss = loss + weight * g_loss
    opt_g.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    opt_g.step()
    d_loss = x.new_zeros(())
    if use_disc:
        set_learning_rate(opt_d, learning_rate(config.disc_learning_rate, step - config.disc_start,
                                               config.warmup_steps))
        logits = disc(torch.cat([x, x_hat.detach()]))
        real, fake = logits.chunk(2)
        d_loss = hinge_d_loss(real, fake)
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(d_loss)
        opt_d.step()
    with torch.no_grad():
        num_codes = int(accelerator.unwrap_model(gen).vq.config.num_vq_embeddings)
        counts = torch.bincount(indices.reshape(-1), minlength=num_codes).float()
        mse = ((x - x_hat) ** 2).mean()
        values = torch.stack([loss.detach(), rec.detach(), qloss.detach(), g_loss.detach(), weight.detach(),
                              d_loss.detach(), mse])
        values = accelerator.reduce(values, "mean")
        counts = accelerator.reduce(counts, "sum")
    names = ("loss", "rec", "codebook", "g", "disc_weight", "d", "mse")
    logs = {k: float(v) for k, v in zip(names, values.tolist(), strict=True)}
    logs["psnr_batch"] = 10 * math.log10(4.0 / max(logs.pop("mse"), 1e-12))
    logs["codes_used_batch"] = int((counts > 0).sum())
    return logs
