"""Image and latent metrics: PSNR, SSIM, MS-SSIM (torchmetrics' conventions, skimage's border as an option),
latent distance and cosine, perturbation norms."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

# Wang et al. 2003 scale weights (finest first), as torchmetrics and the reference implementation.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


SSIM_K1, SSIM_K2 = 0.01, 0.03


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per item in dB (inf for identical items), skimage's formula."""
    mse = _flat((a - b) ** 2).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torchmetrics' SSIM window: int(3.5 * sigma + 0.5) * 2 + 1 taps, normalized, 1-D."""
    size = int(3.5 * sigma + 0.5) * 2 + 1
    x = torch.arange((1 - size) / 2, (1 + size) / 2, 1, dtype=dtype, device=device)
    g = torch.exp(-((x / sigma) ** 2) / 2)
    return g / g.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


SSIMBorder = Literal["reflect", "valid"]


def ssim_and_cs(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5, data_range: float = 1.0,
                border: SSIMBorder = "reflect") -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure per item of NCHW images, with an int(3.5 sigma + 0.5) * 2 + 1 tap Gaussian.

    border 'reflect' is torchmetrics' way: reflect padding, SSIM averaged over the whole map, contrast-structure
    over the unpadded interior. 'valid' is skimage's (structural_similarity with gaussian_weights, sigma,
    use_sample_covariance=False): only window positions inside the image count. On 32x32 images the two
    differ by about 1e-2, since a third of the pixels lie within 5 of the border.
    """
    window = gaussian_window(sigma, a.dtype, a.device)
    pad = (window.numel() - 1) // 2
    if min(a.shape[-2:]) <= (pad if border == "reflect" else 2 * pad):
        raise ValueError(f"images of {a.shape[-1]}x{a.shape[-2]} are too small for an SSIM window of "
                         f"{window.numel()} pixels (sigma {sigma}, border {border!r}); lower sigma or compare "
                         "larger images")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    if border == "reflect":
        a = F.pad(a, (pad, pad, pad, pad), mode="reflect")
        b = F.pad(b, (pad, pad, pad, pad), mode="reflect")
    mu_a, mu_b, aa, bb, ab = _filter(torch.cat([a, b, a * a, b * b, a * b]), window).split(a.shape[0])
    mu_aa, mu_bb, mu_ab = mu_a.pow(2), mu_b.pow(2), mu_a * mu_b
    var_a = torch.clamp(aa - mu_aa, min=0.0)
    var_b = torch.clamp(bb - mu_bb, min=0.0)
    cov = ab - mu_ab
    upper = 2 * cov + c2
    lower = var_a + var_b + c2
    ssim_map = ((2 * mu_ab + c1) * upper) / ((mu_aa + mu_bb + c1) * lower)
    cs_map = (upper / lower)[..., pad:-pad, pad:-pad] if border == "reflect" else upper / lower
    return _flat(ssim_map).mean(dim=1), _flat(cs_map).mean(dim=1)


def ms_ssim_weights(scales: int) -> tuple[float, ...]:
    """The standard weights for 5 scales; the first `scales` of them renormalized to sum to 1 for fewer."""
    if scales == len(MS_SSIM_WEIGHTS):
        return MS_SSIM_WEIGHTS
    head = MS_SSIM_WEIGHTS[:scales]
    return tuple(w / sum(head) for w in head)


def ms_ssim(a: torch.Tensor, b: torch.Tensor, scales: int = 5, sigma: float = 1.5,
            data_range: float = 1.0) -> torch.Tensor:
    """Multi-scale SSIM per item (torchmetrics' algorithm with normalize='relu'): contrast-structure at the
    finer scales, SSIM at the coarsest, each clipped at 0, raised to the scale weights and multiplied."""
    weights = torch.tensor(ms_ssim_weights(scales), dtype=a.dtype, device=a.device)
    values = []
    for s in range(scales):
        sim, cs = ssim_and_cs(a, b, sigma, data_range)
        values.append(torch.relu(sim) if s == scales - 1 else torch.relu(cs))
        if s < scales - 1:
            a, b = F.avg_pool2d(a, (2, 2)), F.avg_pool2d(b, (2, 2))
    return torch.stack(values).pow(weights.view(-1, 1)).prod(dim=0)


def check_ms_ssim_size(height: int, width: int, scales: int, sigma: float) -> None:
    size = int(3.5 * sigma + 0.5) * 2 + 1
    coarsest = min(height, width) // 2 ** (scales - 1)
    if coarsest < size:
        need = size * 2 ** (scales - 1)
        raise ValueError(f"input 'scales' = {scales}: {width}x{height} images shrink to {coarsest} pixels at the "
                         f"coarsest scale, smaller than the {size}-pixel window; compare images of at least "
                         f"{need}x{need} or lower scales (or sigma)")


def latent_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance per item."""
    return _flat(a - b).norm(dim=1)


def latent_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the flattened items (0 where one of them is all zeros)."""
    return F.cosine_similarity(_flat(a), _flat(b), dim=1, eps=1e-12)


def perturbation_norms(image: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L-inf, L2) norms of image - reference per item, image units."""
    delta = _flat(image - reference)
    return delta.abs().amax(dim=1), delta.norm(dim=1)
