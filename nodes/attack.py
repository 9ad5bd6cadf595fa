"""Attacks: perturb an image within an eps-ball so an autoencoder or a denoiser misreads it.

- GenArt Attack Encoder PGD / FGSM (PhotoGuard's encoder attack): push the encoder's latent to a target
  (the zero latent, a target image's latent) or away from the clean latent.
- GenArt Attack Diffusion PGD (AdvDM / Mist): maximize the denoiser's training loss at random timesteps,
  optionally fused with the encoder objective.

Every attack can be run through a defense (its GENART_DEFENSE output) with BPDA or exact gradients and
EOT over the defense's randomness or a random transform, so defenses are evaluated against adaptive
attacks. The math lives in attack_core (tested bit-identical to torchattacks).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from ..core.attack_losses import DiffusionLoss, encoder_loss, target_latent
from ..core.attacks import EOTTransform, Loss, Norm, Schedule, fgsm, pgd, through_defense
from ..core.autoencoders import grad_ready
from ..core.defenses import DefenseTransform
from ..core.denoising import prepare_guidance
from ..core.noise import SEED_MAX
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs, Widget
from ..graph.safety import MAX_ITERATIONS
from ..graph.types import Image, Mask, image_to_nchw, nchw_to_image
from .defense import pick_autoencoder
from .sockets import Autoencoder, ConditioningSocket, Defense, Denoiser, Scheduler, VQModel

Target = Literal["zero", "target_image", "away_from_clean"]
DefenseGradient = Literal["bpda", "exact"]
# Radii like 16/255 must not be rounded to the widget's step by the ComfyUI frontend.
Fine = Annotated[float, Widget(step=0.001, extra={"round": False})]

IMAGE_DESCRIPTION = "images to protect, [B, H, W, C] float32 in [0, 1]"
VQ_DESCRIPTION = "the VQ autoencoder to attack (connect this or 'autoencoder'); its latent is the encoder output " \
                 "before quantization"
KL_DESCRIPTION = "the KL autoencoder to attack (connect this or 'vqmodel'); its latent is the posterior mean"
TARGET_DESCRIPTION = ("where to push the latent: 'zero' (PhotoGuard: toward the zero latent), 'target_image' "
                      "(toward the latent of 'target_image'), 'away_from_clean' (maximize the distance to the "
                      "clean image's latent)")
TARGET_IMAGE_DESCRIPTION = ("image whose latent is the target when target = 'target_image', [1 or B, H, W, C] "
                            "float32 in [0, 1], same size as 'image'")
MASK_DESCRIPTION = ("where the image may change, [B or 1, H, W] in [0, 1] (1 = perturb, 0 = keep; values "
                    "between scale the step); none = everywhere")
DEFENSE_DESCRIPTION = ("a defense (the 'defense' output of a GenArt Defend node) to attack through: the loss "
                       "is computed on the defended image (adaptive attack). None = attack the model directly")
GRADIENT_DESCRIPTION = ("how the gradient crosses 'defense': 'bpda' (straight-through: the defense's output, "
                        "the identity's gradient; for JPEG, median, bit depth, votes) or 'exact' (autograd through "
                        "it: blur, DiffPure (through the whole purification or img2img edit: PhotoGuard's diffusion "
                        "attack; slower, each step runs it), smoothing without a model)")


def _mask_nchw(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    m = mask if mask.ndim == 3 else mask.reshape(1, *mask.shape[-2:]) if mask.ndim == 2 else None
    if m is None or m.shape[-2:] != x.shape[-2:] or m.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"input 'mask' has shape {tuple(mask.shape)} but the images are {x.shape[0]} x "
                         f"{x.shape[-2]}x{x.shape[-1]}; give a MASK [B or 1, {x.shape[-2]}, {x.shape[-1]}] "
                         "(resize it to the image first)")
    return m.clone().unsqueeze(1).to(device=x.device, dtype=x.dtype)


def _images(image: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    """IMAGE [B, H, W, C] (maybe an inference tensor) -> NCHW float32 ordinary tensor on `device`."""
    return image_to_nchw(image, name).to(device=device, dtype=torch.float32, copy=True)


def _target_images(image: torch.Tensor | None, clean: torch.Tensor) -> torch.Tensor | None:
    return None if image is None else _images(image, "target_image", clean.device)


def _display(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The perturbation as an IMAGE: 0.5 + delta / (2 max|delta|) per image (grey where nothing changed)."""
    delta = adv - clean
    scale = delta.flatten(1).abs().amax(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
    return nchw_to_image(0.5 + delta / (2 * scale))


def _check_defense(defense: DefenseTransform | None, gradient: DefenseGradient) -> None:
    if defense is not None and gradient == "exact" and not defense.differentiable:
        raise ValueError(f"input 'defense_gradient' = 'exact' but the defense '{defense.describe()}' is not "
                         "differentiable (its gradient is missing or zero almost everywhere); use 'bpda'")


class AttackOutputs(NodeOutputs):
    image: Image = Field(description="perturbed images, [B, H, W, C] float32 in [0, 1], within eps of the input "
                         "(in the chosen norm), on the input's device")
    perturbation: Image = Field(description="the perturbation for display, [B, H, W, C] in [0, 1]: 0.5 + delta / "
                                "(2 max|delta|) per image (grey = unchanged)")


def _run_attack(node: Any, ctx: RunContext, clean: torch.Tensor, objective: Loss, steps: int,
                method: Literal["pgd", "fgsm"]) -> AttackOutputs:
    defense: DefenseTransform | None = node.defense
    _check_defense(defense, node.defense_gradient)
    generator = torch.Generator(device="cpu").manual_seed(node.seed)
    mask = _mask_nchw(node.mask, clean)
    loss = objective
    if defense is not None or node.eot_transform != "none":
        loss = through_defense(objective, defense, node.defense_gradient, generator, node.eot_transform,
                               node.eot_strength)
    with ctx.progress(steps) as bar:
        if method == "fgsm":
            adv = fgsm(clean, loss, eps=node.eps, mask=mask, eot_samples=node.eot_samples)
            bar.update()
        else:
            adv = pgd(clean, loss, eps=node.eps, step_size=node.step_size, steps=steps, norm=node.norm,
                      random_init=node.random_start, generator=generator, schedule=node.schedule, mask=mask,
                      eot_samples=node.eot_samples, on_step=lambda i: bar.update())
    device = node.image.device
    return AttackOutputs(image=nchw_to_image(adv).to(device), perturbation=_display(adv, clean).to(device))


def _check_eps(constants: dict[str, Any]) -> list[tuple[str, str]]:
    eps, norm = constants.get("eps", 16 / 255), constants.get("norm", "linf")
    if norm == "linf" and eps > 1.0:
        return [("eps", f"eps = {eps} is an L-inf radius above 1, larger than the whole [0, 1] range; use image "
                        "units (16/255 = 0.0627), not 8-bit levels")]
    return []


class AttackEncoderPGD(Node):
    """Protect images against editing: PGD that pushes the autoencoder's latent to a target (PhotoGuard)."""

    CLASS_TYPE = "GenArtAttackEncoderPGD"
    CATEGORY = "GenArt/attack"
    NEEDS_GRAD = True
    PERSIST_OUTPUTS = True  # minutes of work on big images: --cache-dir keeps it

    Outputs = AttackOutputs

    image: Image = Field(description=IMAGE_DESCRIPTION)
    vqmodel: VQModel | None = Field(None, description=VQ_DESCRIPTION)
    autoencoder: Autoencoder | None = Field(None, description=KL_DESCRIPTION)
    target: Target = Field("zero", description=TARGET_DESCRIPTION)
    norm: Norm = Field("linf", description="'linf': signed steps, each pixel within eps; 'l2': normalized steps, "
                       "the whole perturbation within eps (Euclidean)")
    eps: Fine = Field(16 / 255, ge=0.0, le=64.0, description="radius of the allowed perturbation in image units "
                       "([0, 1] scale): L-inf 16/255 = 0.0627 (PhotoGuard, Mist); L2 e.g. 1.0")
    step_size: Fine = Field(2 / 255, ge=0.0, le=64.0, description="step of each iteration in image units "
                             "(L-inf 2/255 = 0.0078, PhotoGuard); the start value under a linear schedule")
    steps: int = Field(100, ge=1, le=MAX_ITERATIONS, description="PGD iterations (PhotoGuard: 200)")
    schedule: Schedule = Field("constant", description="step size over the run: 'constant', or 'linear' decay "
                               "from step_size to step_size / 100 (PhotoGuard's demo)")
    random_start: bool = Field(True, description="start from a random point of the eps-ball (seeded)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the random start and of EOT draws (CPU)")
    eot_samples: int = Field(1, ge=1, le=64, description="EOT: gradient averaged over this many draws of the "
                             "defense's randomness and the random transform per iteration (1 = off)")
    eot_transform: EOTTransform = Field("none", description="random transform applied before the loss, for "
                                        "perturbations that survive it: 'noise' (Gaussian, std eot_strength), "
                                        "'translate' (roll by up to eot_strength x size)")
    eot_strength: Fine = Field(0.05, ge=0.0, le=1.0, description="strength of eot_transform (noise std in image "
                                "units, or the largest shift as a fraction of the size)")
    defense_gradient: DefenseGradient = Field("bpda", description=GRADIENT_DESCRIPTION)
    target_image: Image | None = Field(None, description=TARGET_IMAGE_DESCRIPTION)
    mask: Mask | None = Field(None, description=MASK_DESCRIPTION)
    defense: Defense | None = Field(None, description=DEFENSE_DESCRIPTION)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return _check_eps(constants)

    def run(self, ctx: RunContext) -> AttackOutputs:
        model = grad_ready(pick_autoencoder(self.vqmodel, self.autoencoder))
        clean = _images(self.image, "image", next(model.parameters()).device)
        target = target_latent(model, self.target, clean, _target_images(self.target_image, clean))
        objective = encoder_loss(model, self.target, target)
        return _run_attack(self, ctx, clean, objective, self.steps, "pgd")


class AttackEncoderFGSM(Node):
    """One-step encoder attack (FGSM): a single signed gradient step of size eps toward the latent target."""

    CLASS_TYPE = "GenArtAttackEncoderFGSM"
    CATEGORY = "GenArt/attack"
    NEEDS_GRAD = True

    Outputs = AttackOutputs

    image: Image = Field(description=IMAGE_DESCRIPTION)
    vqmodel: VQModel | None = Field(None, description=VQ_DESCRIPTION)
    autoencoder: Autoencoder | None = Field(None, description=KL_DESCRIPTION)
    target: Target = Field("zero", description=TARGET_DESCRIPTION)
    eps: Fine = Field(16 / 255, ge=0.0, le=1.0, description="size of the step, L-inf, image units (16/255 = "
                       "0.0627)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of EOT draws (CPU)")
    eot_samples: int = Field(1, ge=1, le=64, description="EOT: gradient averaged over this many draws (1 = off)")
    eot_transform: EOTTransform = Field("none", description="random transform applied before the loss: 'noise' "
                                        "or 'translate'")
    eot_strength: Fine = Field(0.05, ge=0.0, le=1.0, description="strength of eot_transform")
    defense_gradient: DefenseGradient = Field("bpda", description=GRADIENT_DESCRIPTION)
    target_image: Image | None = Field(None, description=TARGET_IMAGE_DESCRIPTION)
    mask: Mask | None = Field(None, description=MASK_DESCRIPTION)
    defense: Defense | None = Field(None, description=DEFENSE_DESCRIPTION)

    def run(self, ctx: RunContext) -> AttackOutputs:
        model = grad_ready(pick_autoencoder(self.vqmodel, self.autoencoder))
        clean = _images(self.image, "image", next(model.parameters()).device)
        target = target_latent(model, self.target, clean, _target_images(self.target_image, clean))
        objective = encoder_loss(model, self.target, target)
        return _run_attack(self, ctx, clean, objective, 1, "fgsm")


class AttackDiffusionPGD(Node):
    """Protect images against diffusion editing and mimicry: PGD on the denoiser's training loss (AdvDM/Mist)."""

    CLASS_TYPE = "GenArtAttackDiffusionPGD"
    CATEGORY = "GenArt/attack"
    NEEDS_GRAD = True
    PERSIST_OUTPUTS = True  # minutes of work on big images: --cache-dir keeps it

    Outputs = AttackOutputs

    image: Image = Field(description=IMAGE_DESCRIPTION)
    denoiser: Denoiser = Field(description="the denoising UNet trained on this autoencoder's latents")
    scheduler: Scheduler = Field(description="a scheduler with the denoiser's training noise schedule (its "
                                 "betas and prediction type are read)")
    vqmodel: VQModel | None = Field(None, description=VQ_DESCRIPTION)
    autoencoder: Autoencoder | None = Field(None, description=KL_DESCRIPTION)
    diffusion_weight: float = Field(1.0, ge=0.0, le=1000.0, description="weight of the denoiser's training loss "
                                    "(maximized; AdvDM, Mist's semantic loss)")
    encoder_weight: float = Field(0.0, ge=0.0, le=1000.0, description="weight of the encoder objective (Mist's "
                                  "textural loss: latent distance to the target, minimized); 0 = pure AdvDM")
    target: Target = Field("zero", description=TARGET_DESCRIPTION + "; read when encoder_weight > 0")
    t_min: float = Field(0.0, ge=0.0, le=1.0, description="smallest timestep drawn, as a fraction of the training "
                         "timesteps")
    t_max: float = Field(1.0, ge=0.0, le=1.0, description="largest timestep drawn, as a fraction of the training "
                         "timesteps (AdvDM draws from all of them)")
    norm: Norm = Field("linf", description="'linf' or 'l2' ball")
    eps: Fine = Field(16 / 255, ge=0.0, le=64.0, description="radius of the allowed perturbation in image units: "
                       "L-inf 16/255 = 0.0627 (Mist)")
    step_size: Fine = Field(1 / 255, ge=0.0, le=64.0, description="step of each iteration in image units (Mist: "
                             "1/255)")
    steps: int = Field(100, ge=1, le=MAX_ITERATIONS, description="PGD iterations (Mist: 100)")
    schedule: Schedule = Field("constant", description="'constant' or 'linear' decay to step_size / 100")
    random_start: bool = Field(True, description="start from a random point of the eps-ball (seeded)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the random start, the timesteps and noises, and "
                      "EOT draws (CPU)")
    eot_samples: int = Field(1, ge=1, le=64, description="gradient averaged over this many draws of timestep, "
                             "noise and defense randomness per iteration")
    eot_transform: EOTTransform = Field("none", description="random transform applied before the loss: 'noise' "
                                        "or 'translate'")
    eot_strength: Fine = Field(0.05, ge=0.0, le=1.0, description="strength of eot_transform")
    defense_gradient: DefenseGradient = Field("bpda", description=GRADIENT_DESCRIPTION)
    target_image: Image | None = Field(None, description=TARGET_IMAGE_DESCRIPTION)
    conditioning: ConditioningSocket | None = Field(None, description="prompt embeddings for a conditional "
                                                    "denoiser; leave empty for an unconditional one")
    mask: Mask | None = Field(None, description=MASK_DESCRIPTION)
    defense: Defense | None = Field(None, description=DEFENSE_DESCRIPTION)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = _check_eps(constants)
        if constants.get("t_min", 0.0) > constants.get("t_max", 1.0):
            problems.append(("t_min", f"t_min {constants['t_min']} is above t_max {constants['t_max']}"))
        if constants.get("diffusion_weight", 1.0) == 0 and constants.get("encoder_weight", 0.0) == 0:
            problems.append(("diffusion_weight", "diffusion_weight and encoder_weight are both 0: nothing to "
                                                 "attack; raise one of them"))
        return problems

    def run(self, ctx: RunContext) -> AttackOutputs:
        for name, message in self.check_constants(self.__dict__, ctx):
            raise ValueError(f"input {name!r}: {message}")
        model = grad_ready(pick_autoencoder(self.vqmodel, self.autoencoder))
        unet = grad_ready(self.denoiser.model)
        clean = _images(self.image, "image", next(model.parameters()).device)
        total = int(self.scheduler.config.get("num_train_timesteps", 1000))
        t_range = (round(self.t_min * (total - 1)), round(self.t_max * (total - 1)))
        text = prepare_guidance(self.denoiser, self.conditioning, 1.0, clean.shape[0]).model_kwargs()
        text = {k: v.clone() for k, v in text.items()}
        # Timesteps and noise draw from their own stream, so the random start matches the encoder attack's.
        noise_generator = torch.Generator(device="cpu").manual_seed((self.seed + 1) % (SEED_MAX + 1))
        diffusion = DiffusionLoss(model, self.denoiser, unet, self.scheduler, t_range, text, noise_generator)
        encoder = None
        if self.encoder_weight > 0:
            target = target_latent(model, self.target, clean, _target_images(self.target_image, clean))
            encoder = encoder_loss(model, self.target, target)
        dw, ew = self.diffusion_weight, self.encoder_weight

        def objective(images: torch.Tensor) -> torch.Tensor:
            loss = dw * diffusion(images) if dw > 0 else torch.zeros((), device=images.device)
            return loss + ew * encoder(images) if encoder is not None else loss

        return _run_attack(self, ctx, clean, objective, self.steps, "pgd")
