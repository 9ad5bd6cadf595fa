"""Attack math free of nodes: PGD (L-inf, L2), FGSM, EOT and BPDA around any differentiable loss.

Images are NCHW float32 in [0, 1]. A loss is a function of the perturbed images that returns a scalar
tensor the attack *maximizes* (cross-entropy on a classifier's logits, minus a latent distance to a
target, a diffusion training loss). PGD and FGSM follow torchattacks 3.5.1 operation by operation, so
with the same loss, images and seed they are bit-identical to it on the CPU (tests/test_attack.py).

Randomness (random starts, EOT draws, timesteps) comes from a CPU `torch.Generator` and is moved to the
images' device afterwards: a seed gives the same perturbation on any machine.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import torch

Norm = Literal["linf", "l2"]
Schedule = Literal["constant", "linear"]
EOTTransform = Literal["none", "noise", "translate"]
Loss = Callable[[torch.Tensor], torch.Tensor]
StepCallback = Callable[[int], None]

# torchattacks' PGDL2 guard against dividing by a zero gradient norm.
EPS_FOR_DIVISION = 1e-10
# PhotoGuard's linear schedule decays the step to 1/100 of its start over the run.
LINEAR_DECAY_END = 0.01


class RandomDefense(Protocol):
    """What `through_defense` needs of a defense: NCHW [0, 1] in, same shape out, randomness from `generator`."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


def step_size_at(step_size: float, i: int, steps: int, schedule: Schedule) -> float:
    """Step size of iteration `i` (0-based): constant, or PhotoGuard's linear decay from `step_size`
    to `step_size / 100` (`step_size - (step_size - step_size / 100) * i / steps`)."""
    if schedule == "constant":
        return step_size
    return step_size - (step_size - step_size * LINEAR_DECAY_END) * i / steps


def random_start(images: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """A random point of the eps-ball around `images`, clamped to [0, 1] (torchattacks' draws and order).

    L-inf: uniform in [-eps, eps] per pixel. L2: a Gaussian direction scaled to a radius uniform in
    [0, eps]. The draw is made on the CPU from `generator`; `mask` [B, 1, H, W] scales it.
    """
    batch = images.shape[0]
    if norm == "linf":
        delta = torch.empty(images.shape, dtype=images.dtype).uniform_(-eps, eps, generator=generator)
    else:
        delta = torch.empty(images.shape, dtype=images.dtype).normal_(generator=generator)
        n = delta.reshape(batch, -1).norm(p=2, dim=1).view(batch, 1, 1, 1)
        r = torch.zeros_like(n).uniform_(0, 1, generator=generator)
        delta *= r / n * eps
    delta = delta.to(images.device)
    if mask is not None:
        delta = delta * mask
    return torch.clamp(images + delta, min=0, max=1).detach()


def loss_gradient(images: torch.Tensor, loss_fn: Loss, eot_samples: int = 1) -> torch.Tensor:
    """d loss / d images, averaged over `eot_samples` evaluations of `loss_fn` (each may draw new randomness:
    expectation over transformation)."""
    images = images.detach().requires_grad_(True)
    grad = torch.autograd.grad(loss_fn(images), images, retain_graph=False, create_graph=False)[0]
    for _ in range(eot_samples - 1):
        grad = grad + torch.autograd.grad(loss_fn(images), images)[0]
    if eot_samples > 1:
        grad = grad / eot_samples
    return grad


def _per_item(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1)


def pgd(images: torch.Tensor, loss_fn: Loss, *, eps: float, step_size: float, steps: int, norm: Norm = "linf",
        random_init: bool = True, generator: torch.Generator | None = None, schedule: Schedule = "constant",
        mask: torch.Tensor | None = None, eot_samples: int = 1,
        on_step: StepCallback | None = None) -> torch.Tensor:
    """Projected gradient ascent on `loss_fn` inside the `norm` ball of radius `eps` around `images`.

    Args:
        images: clean images, [B, C, H, W] float in [0, 1].
        loss_fn: perturbed images -> scalar loss to maximize (must be differentiable in its input).
        eps: radius of the ball, in image units ([0, 1] scale; 8/255 for L-inf is common, 0.5 for L2).
        step_size: step of each iteration (torchattacks' `alpha`), before the schedule.
        steps: number of iterations.
        norm: "linf" (signed gradient step, clamp) or "l2" (normalized gradient step, rescale onto the ball).
        random_init: start at a random point of the ball (needs `generator`).
        generator: CPU generator for the random start.
        schedule: "constant" or "linear" (decay to step_size/100, PhotoGuard).
        mask: [B, 1, H, W] or broadcastable, 1 where pixels may change, 0 where they stay; values between
            scale the step (and the L-inf bound).
        eot_samples: gradient averaged over this many loss evaluations per iteration.
        on_step: called with the iteration index after each iteration (progress, interruption).

    Returns:
        the perturbed images, [B, C, H, W] in [0, 1], detached.
    """
    images = images.detach()
    batch = len(images)
    if random_init:
        if generator is None:
            raise ValueError("random_init=True needs a generator (seeded, on the CPU)")
        adv = random_start(images, eps, norm, generator, mask)
    else:
        adv = images.clone()
    bound = None if mask is None else eps * mask
    # torchattacks' arithmetic, in place: each operation rounds exactly as its out-of-place original
    # (x + y == y + x in IEEE arithmetic), so the result stays bit-identical with fewer allocations.
    for i in range(steps):
        alpha = step_size_at(step_size, i, steps, schedule)
        grad = loss_gradient(adv, loss_fn, eot_samples)
        with torch.no_grad():
            adv = adv.detach()
            if norm == "linf":
                step = grad.sign_().mul_(alpha)
                if mask is not None:
                    step.mul_(mask)
                delta = adv.add_(step).sub_(images)
                if bound is None:
                    delta.clamp_(min=-eps, max=eps)
                else:
                    delta = torch.maximum(torch.minimum(delta, bound), -bound)
            else:
                if mask is not None:
                    grad.mul_(mask)
                grad_norms = torch.norm(_per_item(grad), p=2, dim=1) + EPS_FOR_DIVISION
                step = grad.div_(grad_norms.view(batch, 1, 1, 1)).mul_(alpha)
                delta = adv.add_(step).sub_(images)
                delta_norms = torch.norm(_per_item(delta), p=2, dim=1)
                factor = torch.min(eps / delta_norms, torch.ones_like(delta_norms))
                delta.mul_(factor.view(-1, 1, 1, 1))
            adv = delta.add_(images).clamp_(min=0, max=1)
        if on_step is not None:
            on_step(i)
    return adv


def fgsm(images: torch.Tensor, loss_fn: Loss, *, eps: float, mask: torch.Tensor | None = None,
         eot_samples: int = 1) -> torch.Tensor:
    """One signed gradient step of size `eps` from `images` (Goodfellow et al.), clamped to [0, 1].

    `images` [B, C, H, W] in [0, 1]; `mask` as in `pgd`. Returns the perturbed images, detached.
    """
    images = images.clone().detach()
    grad = loss_gradient(images, loss_fn, eot_samples)
    with torch.no_grad():
        step = eps * grad.sign()
        if mask is not None:
            step = step * mask
        return torch.clamp(images + step, min=0, max=1).detach()


def bpda(defense_output: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Straight-through: the value of `defense_output`, the gradient of the identity on `images`.

    Backward pass differentiable approximation (Athalye et al. 2018) for defenses whose gradient is
    missing or useless (JPEG, quantization, median, majority votes).
    """
    return defense_output.detach() + (images - images.detach())


def eot_transform(images: torch.Tensor, kind: EOTTransform, strength: float,
                  generator: torch.Generator) -> torch.Tensor:
    """A differentiable random transform, drawn from `generator`: "noise" adds Gaussian noise of standard
    deviation `strength`; "translate" rolls the images by up to `strength * size` pixels each way."""
    if kind == "none" or strength == 0:
        return images
    if kind == "noise":
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
        return images + strength * noise
    h, w = images.shape[-2:]
    max_dy, max_dx = int(strength * h), int(strength * w)
    dy = int(torch.randint(-max_dy, max_dy + 1, (), generator=generator))
    dx = int(torch.randint(-max_dx, max_dx + 1, (), generator=generator))
    return torch.roll(images, shifts=(dy, dx), dims=(-2, -1))


def through_defense(loss_fn: Loss, defense: RandomDefense | None, gradient: Literal["bpda", "exact"],
                    generator: torch.Generator, transform: EOTTransform = "none",
                    strength: float = 0.0) -> Loss:
    """The loss seen through a defense (and an EOT transform), for adaptive attacks.

    Each call draws fresh randomness from `generator` (the defense's noise, the transform), so
    `loss_gradient(..., eot_samples=k)` averages the gradient over k draws. `gradient` says how the
    defense is differentiated: "bpda" (straight-through) or "exact" (autograd through it).
    """
    def loss(images: torch.Tensor) -> torch.Tensor:
        x = eot_transform(images, transform, strength, generator)
        if defense is not None:
            if gradient == "bpda":
                with torch.no_grad():
                    defended = defense(x.detach(), generator)
                x = bpda(defended, x)
            else:
                x = defense(x, generator)
        return loss_fn(x)

    return loss


# Autoencoders (diffusers VQModel or AutoencoderKL) as differentiable functions of NCHW images in [0, 1].


