"""ComfyUI's KSampler semantics on a diffusers UNet: discrete sigma schedules, sigma lists, k-diffusion samplers.

What is matched (ComfyUI v0.3.64, `comfy/model_sampling.py`, `comfy/samplers.py`, `comfy/k_diffusion/sampling.py`,
`comfy/sample.py`), op for op in float32 on the CPU:
- noise: `core.noise.prepare_noise` (one CPU generator seeded with the seed, per batch index), in the latent's dtype;
- the schedule: betas in float64 (ComfyUI's "linear" = diffusers' "scaled_linear"), sigmas = sqrt((1 - a) / a) in
  float32; `timestep(sigma)` is the nearest training step (argmin over log sigmas, an integer, not interpolated);
  `sigma(t)` interpolates log sigma linearly;
- sigma lists: normal, karras, exponential, simple, sgm_uniform, ddim_uniform; `denoise` < 1 takes the last
  steps + 1 sigmas of a int(steps / denoise)-step list (a longer schedule, not diffusers' int(steps * strength));
- the start: noise * sqrt(1 + sigma_0^2) when sigma_0 is the schedule's maximum, else noise * sigma_0, plus the
  latent scaled by latent_scale (an all-zero latent is left as is);
- each model call: x / sqrt(sigma^2 + 1) in, the integer timestep, uncond and cond in one batch (uncond first),
  denoised = x - eps * sigma (or the v-prediction form), cfg on the denoised values, cfg 1 evaluates cond only;
- samplers: euler, euler_ancestral (its noise from a second generator seeded with the same seed, on the latent's
  device), dpmpp_2m, ddim (ComfyUI runs it as euler; its inpainting noise is drawn from seed + 1);
- inpainting (a noise_mask): ComfyUI's KSamplerX0Inpaint, the kept area re-noised to each sigma.
The UNet itself is diffusers' (not ComfyUI's openaimodel), so its float rounding differs slightly from ComfyUI's.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .denoising import Guidance
from .handles import DenoiserHandle

SamplerName = Literal["euler", "euler_ancestral", "dpmpp_2m", "ddim"]
SchedulerName = Literal["normal", "karras", "exponential", "simple", "sgm_uniform", "ddim_uniform"]
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(eq=False)
class DiscreteSchedule:
    """ComfyUI's ModelSamplingDiscrete: the training noise levels of a DDPM-trained model.

    `sigmas`: [T] float32, increasing (sigma of training step t); `prediction_type`: "epsilon" or "v_prediction";
    `diffusers_config`: the same schedule as diffusers scheduler settings (beta_start, beta_end, beta_schedule,
    num_train_timesteps, prediction_type, rescale_betas_zero_snr), for GenArt's own samplers.
    """

    sigmas: torch.Tensor
    prediction_type: str
    diffusers_config: dict[str, Any]

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {self.prediction_type!r} is not supported; use one of "
                             f"{PREDICTION_TYPES}")
        self.sigmas = self.sigmas.float()
        self.log_sigmas = self.sigmas.log().float()

    @classmethod
    def from_betas(cls, beta_start: float, beta_end: float, num_train_timesteps: int = 1000,
                   beta_schedule: str = "scaled_linear", prediction_type: str = "epsilon") -> DiscreteSchedule:
        """ComfyUI's make_beta_schedule (float64) for diffusers' "scaled_linear" (ComfyUI's "linear") and "linear"
        (ComfyUI's "sqrt_linear")."""
        if beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"beta_schedule {beta_schedule!r} is not supported; use 'scaled_linear' or 'linear'")
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        config = {"num_train_timesteps": num_train_timesteps, "beta_start": beta_start, "beta_end": beta_end,
                  "beta_schedule": beta_schedule, "prediction_type": prediction_type}
        return cls(sigmas, prediction_type, config)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The training step whose log sigma is nearest (int64, sigma's shape)."""
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a (fractional) training step: log sigma interpolated linearly."""
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp().to(timestep.device)


@dataclass(eq=False)
class DiffusionModel:
    """A denoiser with the noise schedule it was trained on: what ComfyUI's MODEL socket carries, headless."""

    denoiser: DenoiserHandle
    schedule: DiscreteSchedule


def _append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def _normal(s: DiscreteSchedule, steps: int, sgm: bool = False) -> torch.Tensor:
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(s.sigma(ts)) for ts in timesteps]
    return torch.FloatTensor([*sigs, 0.0] if append_zero else sigs)


def _karras(s: DiscreteSchedule, steps: int, rho: float = 7.0) -> torch.Tensor:
    sigma_min, sigma_max = float(s.sigma_min), float(s.sigma_max)
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def _exponential(s: DiscreteSchedule, steps: int) -> torch.Tensor:
    sigma_min, sigma_max = float(s.sigma_min), float(s.sigma_max)
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def _simple(s: DiscreteSchedule, steps: int) -> torch.Tensor:
    ss = len(s.sigmas) / steps
    return torch.FloatTensor([float(s.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def _ddim_uniform(s: DiscreteSchedule, steps: int) -> torch.Tensor:
    x = 1
    if math.isclose(float(s.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs: list[float] = []
    else:
        sigs = [0.0]
    ss = max(len(s.sigmas) // steps, 1)
    while x < len(s.sigmas):
        sigs.append(float(s.sigmas[x]))
        x += ss
    return torch.FloatTensor(sigs[::-1])


SCHEDULERS: dict[str, Callable[[DiscreteSchedule, int], torch.Tensor]] = {
    "normal": _normal, "karras": _karras, "exponential": _exponential, "simple": _simple,
    "sgm_uniform": lambda s, n: _normal(s, n, sgm=True), "ddim_uniform": _ddim_uniform,
}


def comfy_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The sigma list ComfyUI's KSampler runs ([steps + 1] float32, ending at 0); empty for denoise 0."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"input 'scheduler' = {scheduler!r} is not supported here; use one of {sorted(SCHEDULERS)}")
    if steps < 1:
        raise ValueError(f"input 'steps' = {steps}; use at least 1")
    if denoise > 0.9999:
        return SCHEDULERS[scheduler](schedule, steps)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    return SCHEDULERS[scheduler](schedule, int(steps / denoise))[-(steps + 1):]


class KDenoiser:
    """x, sigma -> denoised: ComfyUI's apply_model + cfg on a diffusers UNet, with optional inpainting."""

    def __init__(self, model: DiffusionModel, guidance: Guidance, mask: torch.Tensor | None = None,
                 latent: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> None:
        self.model = model
        self.guidance = guidance
        self.mask, self.latent, self.noise = mask, latent, noise
        self.v_prediction = model.schedule.prediction_type == "v_prediction"

    def _denoised(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        denoiser, g = self.model.denoiser, self.guidance
        if g.guided:
            x, sigma = torch.cat([x, x]), torch.cat([sigma, sigma])
        s = sigma.view(sigma.shape[:1] + (1,) * (x.ndim - 1))
        xc = (x / (s ** 2 + 1.0 ** 2) ** 0.5).to(denoiser.dtype)
        t = self.model.schedule.timestep(sigma).float()
        out = denoiser.model(xc, t, **_model_kwargs(g), return_dict=False)[0].float()
        if self.v_prediction:
            den = x * 1.0 ** 2 / (s ** 2 + 1.0 ** 2) - out * s * 1.0 / (s ** 2 + 1.0 ** 2) ** 0.5
        else:
            den = x - out * s
        if not g.guided:
            return den
        uncond, cond = den.chunk(2)
        return uncond + (cond - uncond) * g.cfg

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return self._denoised(x, sigma)
        assert self.latent is not None and self.noise is not None
        kept = 1 - self.mask
        x = x * self.mask + noise_scaling(sigma.reshape([sigma.shape[0]] + [1] * (self.noise.ndim - 1)),
                                          self.noise, self.latent) * kept
        return self._denoised(x, sigma) * self.mask + self.latent * kept


def _model_kwargs(g: Guidance) -> dict[str, torch.Tensor]:
    if g.hidden_states is None:
        return {}
    mask = getattr(g, "attention_mask", None)
    return {"encoder_hidden_states": g.hidden_states} | ({} if mask is None else {"encoder_attention_mask": mask})


def noise_scaling(sigma: torch.Tensor, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False
                  ) -> torch.Tensor:
    sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
    scaled = noise * torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else noise * sigma
    return scaled + latent


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    return (x - denoised) / sigma


def _ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor) -> tuple[Any, Any]:
    sigma_up = min(sigma_to, (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def _euler(model: KDenoiser, x: torch.Tensor, sigmas: torch.Tensor, seed: int, step: Callable[[], None]
           ) -> torch.Tensor:
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        step()
    return x


def _euler_ancestral(model: KDenoiser, x: torch.Tensor, sigmas: torch.Tensor, seed: int,
                     step: Callable[[], None]) -> torch.Tensor:
    generator = torch.Generator(device=x.device)
    generator.manual_seed(seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1])
        if sigma_down == 0:
            x = denoised
        else:
            d = _to_d(x, sigmas[i], denoised)
            noise = torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)
            x = x + d * (sigma_down - sigmas[i]) + noise * 1.0 * sigma_up
        step()
    return x


def _dpmpp_2m(model: KDenoiser, x: torch.Tensor, sigmas: torch.Tensor, seed: int, step: Callable[[], None]
              ) -> torch.Tensor:
    s_in = x.new_ones([x.shape[0]])

    def sigma_fn(t: torch.Tensor) -> torch.Tensor:
        return t.neg().exp()

    def t_fn(sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log().neg()

    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - t_fn(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
        step()
    return x


SAMPLERS = {"euler": _euler, "euler_ancestral": _euler_ancestral, "dpmpp_2m": _dpmpp_2m, "ddim": _euler}


def ksample(model: DiffusionModel, guidance: Guidance, latent: torch.Tensor, noise: torch.Tensor,
            sigmas: torch.Tensor, sampler: str, seed: int, mask: torch.Tensor | None = None,
            on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """ComfyUI's KSampler after its noise and sigmas are made: the raw (unscaled) LATENT samples.

    `latent`: raw samples [B, C, h, w]; `noise`: prepare_noise's draw (float32, CPU); `mask`: [B, C, h, w] at
    the latent's size (1 = denoise) or None.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"input 'sampler_name' = {sampler!r} is not supported here; use one of {sorted(SAMPLERS)}")
    if len(sigmas) <= 1:
        return latent
    device = model.denoiser.device
    scale = float(model.denoiser.latent_scale)
    latent = latent.float().to(device)
    if torch.count_nonzero(latent) > 0:  # as ComfyUI: an empty latent is not scaled
        latent = latent * scale
    noise = noise.to(device=device, dtype=torch.float32)
    sigmas = sigmas.to(device)
    inpaint_noise = noise
    if mask is not None and sampler == "ddim":  # ComfyUI's ddim inpaints with noise of its own
        generator = torch.manual_seed(seed + 1)
        inpaint_noise = torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(device)
    denoiser = KDenoiser(model, guidance, None if mask is None else mask.to(device), latent, inpaint_noise)
    s = model.schedule
    max_denoise = math.isclose(float(s.sigma_max), float(sigmas[0]), rel_tol=1e-05) or float(sigmas[0]) > float(
        s.sigma_max)
    x = noise_scaling(sigmas[0], noise, latent, max_denoise)
    x = SAMPLERS[sampler](denoiser, x, sigmas, seed, on_step or (lambda: None))
    return x.to(torch.float32) / scale
