"""GAN objectives as plain functions of logits and images.

Logits are the discriminator's raw outputs [B] (higher = more real). Each discriminator loss is what
the discriminator minimizes, each generator loss what the generator minimizes:

- wgan-gp (Gulrajani et al. 2017): critic E[D(G(z))] - E[D(x)] (+ drift * E[D(x)^2], Karras et al. 2018)
  + lambda * E[(||grad D(x_hat)|| - 1)^2] on interpolates x_hat; generator -E[D(G(z))].
- hinge (Lim & Ye 2017): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]; generator -E[D(G(z))].
- logistic, non-saturating (Goodfellow et al. 2014): E[softplus(-D(x))] + E[softplus(D(G(z)))]
  (+ gamma / 2 * E[||grad D(x)||^2], R1, Mescheder et al. 2018); generator E[softplus(-D(G(z)))].
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

GANLoss = Literal["wgan-gp", "hinge", "logistic"]
GAN_LOSSES: tuple[str, ...] = ("wgan-gp", "hinge", "logistic")


def wgan_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, drift: float = 0.0) -> torch.Tensor:
    """mean D(fake) - mean D(real) + drift * mean D(real)^2 (the drift keeps the logits near 0)."""
    return fake_logits.mean() - real_logits.mean() + drift * real_logits.square().mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def logistic_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean softplus(-D(real)) + mean softplus(D(fake)): binary cross-entropy with real = 1, fake = 0."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def discriminator_loss(kind: GANLoss, real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       drift: float = 0.0) -> torch.Tensor:
    """The discriminator's loss for `kind`, without penalties; `drift` applies to wgan-gp only."""
    if kind == "wgan-gp":
        return wgan_critic_loss(real_logits, fake_logits, drift)
    if kind == "hinge":
        return hinge_discriminator_loss(real_logits, fake_logits)
    if kind == "logistic":
        return logistic_discriminator_loss(real_logits, fake_logits)
    raise ValueError(f"loss only supports {', '.join(GAN_LOSSES)} but was given {kind!r}")


def generator_loss(kind: GANLoss, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's loss for `kind`: -mean D(fake) (wgan-gp, hinge) or mean softplus(-D(fake)) (logistic)."""
    if kind in ("wgan-gp", "hinge"):
        return -fake_logits.mean()
    if kind == "logistic":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"loss only supports {', '.join(GAN_LOSSES)} but was given {kind!r}")


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     mix: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's mean (||grad_x D(x_hat)||_2 - 1)^2 over x_hat = mix * real + (1 - mix) * fake.

    `mix` [B] in [0, 1] (uniform in WGAN-GP) comes from the caller so that it can be seeded; the result
    keeps its graph (create_graph) so that it can be added to the critic's loss; multiply by lambda (10).
    """
    t = mix.to(real.dtype).view(-1, *([1] * (real.dim() - 1)))
    x_hat = (t * real.detach() + (1 - t) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1's mean ||grad_x D(x)||^2 over real images `real` (which must require grad and have given
    `real_logits`); keeps its graph. Multiply by gamma / 2."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.flatten(1).square().sum(dim=1).mean()
