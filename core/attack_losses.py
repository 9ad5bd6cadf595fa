"""What the attacks maximize: the encoder objective (PhotoGuard) and the denoiser's training loss (AdvDM,
Mist), as functions of NCHW images in [0, 1]."""
from __future__ import annotations

from typing import Any, Literal

import torch

from .attacks import Loss
from .autoencoders import encode_images
from .denoising import check_prediction_type
from .handles import DenoiserHandle, SchedulerHandle

Target = Literal["zero", "target_image", "away_from_clean"]


def _mse_per_item(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(dim=1)


def encoder_loss(model: Any, target: Target, target_latent: torch.Tensor | None) -> Loss:
    """The encoder objective to maximize: minus the squared distance of the latent to `target_latent`
    (None: the zero latent), or plus it for 'away_from_clean'. Summed over the batch, so each image's
    gradient is its own (PhotoGuard minimizes the norm: the same direction per image)."""
    if target_latent is None:
        return lambda images: -encode_images(model, images).pow(2).sum()
    if target == "away_from_clean":
        return lambda images: (encode_images(model, images) - target_latent).pow(2).sum()
    return lambda images: -(encode_images(model, images) - target_latent).pow(2).sum()


def target_latent(model: Any, target: Target, clean: torch.Tensor,
                  target_image: torch.Tensor | None) -> torch.Tensor | None:
    """The latent the encoder objective measures against; None for the zero latent. `clean` and
    `target_image` are NCHW in [0, 1]; the target is one image or one per clean image, of the same size."""
    with torch.no_grad():
        if target == "away_from_clean":
            return encode_images(model, clean)
        if target == "zero":
            return None
        if target_image is None:
            raise ValueError("input 'target' = 'target_image' but 'target_image' is not connected; connect the "
                             "image whose latent the attack should imitate, or choose 'zero'")
        t = target_image.to(clean.device)
        if t.shape[1:] != clean.shape[1:] or t.shape[0] not in (1, clean.shape[0]):
            raise ValueError(f"input 'target_image' is {t.shape[0]} x {t.shape[-1]}x{t.shape[-2]} but 'image' is "
                             f"{clean.shape[0]} x {clean.shape[-1]}x{clean.shape[-2]}; resize it to the image "
                             "size (GenArt Resize Image), with 1 or as many images")
        return encode_images(model, t)


class DiffusionLoss:
    """The denoiser's training loss on the image's latent (AdvDM): noise the latent at a random timestep,
    predict, mean squared error against the training target. Timesteps and noise come from the CPU
    generator, one draw per call (so EOT averages over them too)."""

    def __init__(self, model: Any, denoiser: DenoiserHandle, unet: Any, scheduler: SchedulerHandle,
                 t_range: tuple[int, int], text: dict[str, torch.Tensor], generator: torch.Generator) -> None:
        from diffusers import DDPMScheduler

        if scheduler.class_name.startswith("FlowMatch"):
            raise ValueError(f"input 'scheduler' is {scheduler.class_name}; the diffusion attack needs the DDPM "
                             "noise schedule the denoiser was trained with (DDPM, DDIM, Euler, DPM-Solver, ...)")
        check_prediction_type(denoiser, scheduler)
        # The training noise schedule, whatever sampler the config came from.
        self.noise_schedule = DDPMScheduler.from_config(scheduler.config)
        self.prediction_type = self.noise_schedule.config.prediction_type
        self.model, self.unet, self.scale = model, unet, float(denoiser.latent_scale)
        # text: the denoiser call's conditioning keywords (Guidance.model_kwargs), empty when unconditional
        self.t_range, self.text, self.generator = t_range, text, generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        z = encode_images(self.model, images) * self.scale
        param = next(self.unet.parameters())
        t = torch.randint(self.t_range[0], self.t_range[1] + 1, (z.shape[0],), generator=self.generator)
        noise = torch.randn(z.shape, generator=self.generator).to(z.device)
        t = t.to(z.device)
        noisy = self.noise_schedule.add_noise(z, noise, t)
        pred = self.unet(noisy.to(param.dtype), t, return_dict=False, **self.text)[0].float()
        if self.prediction_type == "epsilon":
            goal = noise
        elif self.prediction_type == "v_prediction":
            goal = self.noise_schedule.get_velocity(z, noise, t)
        else:
            goal = z
        return _mse_per_item(pred, goal).sum()
