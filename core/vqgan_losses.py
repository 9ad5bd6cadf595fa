"""The VQGAN objective (taming-transformers): PatchGAN discriminator, hinge loss, adaptive generator
weight, and an optional perceptual loss read from a local weights file.

Generator: rec + codebook + disc_weight * lambda * disc_factor * (-mean D(x_hat)), where
rec = l1 * |x - x_hat| + l2 * (x - x_hat)^2 + perceptual * P(x, x_hat),
lambda = ||grad_last rec|| / (||grad_last G|| + 1e-4), clamped to [0, 1e4], disc_factor 0 before
disc_start. Discriminator: 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .gan_losses import hinge_discriminator_loss
from .weights import load_state_dict


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / taming's NLayerDiscriminator): 4x4 convolutions, LeakyReLU 0.2.

    Args:
        in_channels (`int`, defaults to 3): image channels.
        base_channels (`int`, defaults to 64): channels of the first layer, doubled per layer up to 8x.
        num_layers (`int`, defaults to 3): stride-2 layers after the first; each halves the resolution.

    Maps images [B, C, H, W] in [-1, 1] to patch logits [B, 1, h, w].
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, num_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(base_channels * prev, base_channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(base_channels * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(base_channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """taming-transformers' hinge: half the GAN hinge loss."""
    return 0.5 * hinge_discriminator_loss(logits_real, logits_fake)


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float) -> torch.Tensor:
    """disc_weight * ||d rec / d last|| / (||d G / d last|| + 1e-4), clamped to [0, 1e4], no gradient."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(rec_grad) / (torch.norm(g_grad) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * disc_weight


# VGG16's feature extractor (torchvision's `features` layout): convolution widths, "M" = max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in `features` after which LPIPS taps activations (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_TAPS = (3, 8, 15, 22, 29)
_TAP_CHANNELS = (64, 128, 256, 512, 512)


class PerceptualLoss(nn.Module):
    """LPIPS-style distance on VGG16 features, from a local weights file (never downloaded).

    The file (.safetensors, or a weights-only .pth) holds torchvision's VGG16 `features.<i>.weight/bias`,
    optionally with LPIPS's linear heads `lin<k>.model.1.weight` ([1, C, 1, 1], k = 0..4); without the
    heads every channel weighs the same. Images [B, 3, H, W] in [-1, 1]; returns a scalar mean distance.
    """

    def __init__(self, weights_path: Path) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.heads = nn.ParameterList([nn.Parameter(torch.ones(1, c, 1, 1) / c) for c in _TAP_CHANNELS])
        state = load_state_dict(weights_path)
        vgg = {k: v for k, v in state.items() if k.startswith("features.")}
        missing = [k for k in self.features.state_dict() if f"features.{k}" not in vgg]
        if missing:
            raise ValueError(f"perceptual weights {weights_path.name}: no VGG16 features ({len(missing)} tensors "
                             f"missing, e.g. features.{missing[0]}); give torchvision's vgg16 state dict "
                             "saved as .safetensors")
        self.features.load_state_dict({k[len("features."):]: v for k, v in vgg.items()})
        for k in range(len(_TAP_CHANNELS)):
            head = state.get(f"lin{k}.model.1.weight")
            if head is not None:
                self.heads[k].data.copy_(head.reshape(1, -1, 1, 1))
        self.shift: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h)
            if i == _TAPS[-1]:
                break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for head, fx, fy in zip(self.heads, self._taps(x), self._taps(y), strict=True):
            nx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            ny = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            total = total + ((nx - ny) ** 2 * head).sum(1).mean()
        return total
