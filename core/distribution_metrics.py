"""Metrics between two sets of feature vectors: Frechet distance (FID when the features are Inception's),
kernel distance (KID), precision / recall / density / coverage, and nearest neighbours for memorization.

All in float64. Conventions follow the references the tests compare against: torchmetrics' FID and KID
(KID's standard deviation over subsets is the population one, unbiased=False), the `prdc` package
(Naeem et al. 2020: k-th neighbour radii within each set, strict '<').
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def mean_and_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (N - 1) of [N, D] features, float64."""
    x = features.double()
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {x.shape[0]}")
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)) of the Gaussians fitted to [N, D] features.

    The trace of the root is the sum of the square roots of the eigenvalues of S_a S_b (real and
    non-negative for covariances, up to rounding: the real part is taken, as torchmetrics does)."""
    mu_a, s_a = mean_and_covariance(a)
    mu_b, s_b = mean_and_covariance(b)
    root_trace = torch.linalg.eigvals(s_a @ s_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * root_trace)


def polynomial_mmd(a: torch.Tensor, b: torch.Tensor, degree: int = 3, gamma: float | None = None,
                   coef: float = 1.0) -> torch.Tensor:
    """Unbiased MMD^2 of two equal-size samples with the kernel (gamma <x, y> + coef)^degree, gamma 1 / D by
    default (Binkowski et al. 2018)."""
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    k_aa = (a @ a.T * gamma + coef) ** degree
    k_bb = (b @ b.T * gamma + coef) ** degree
    k_ab = (a @ b.T * gamma + coef) ** degree
    m = a.shape[0]
    within = (k_aa.sum() - k_aa.diagonal().sum() + k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_ab.sum() / m**2


def kernel_distance(real: torch.Tensor, generated: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0, degree: int = 3, gamma: float | None = None,
                    coef: float = 1.0) -> tuple[float, float]:
    """KID: mean and (population) standard deviation of polynomial_mmd over `subsets` random subsets.

    Each subset draws randperm(real) then randperm(generated) from one generator seeded with `seed`, the
    order torchmetrics draws them from torch's global generator."""
    for x, name in ((real, "real"), (generated, "generated")):
        if x.shape[0] < subset_size:
            raise ValueError(f"subset_size {subset_size} is larger than the {name} set ({x.shape[0]} images); "
                             f"lower subset_size to at most {min(real.shape[0], generated.shape[0])}")
    if subset_size < 2:
        raise ValueError("subset_size must be at least 2 (the unbiased estimate leaves the diagonal out)")
    generator = torch.Generator().manual_seed(seed)
    real, generated = real.double(), generated.double()
    scores = []
    for _ in range(subsets):
        a = real[torch.randperm(real.shape[0], generator=generator)[:subset_size]]
        b = generated[torch.randperm(generated.shape[0], generator=generator)[:subset_size]]
        scores.append(polynomial_mmd(a, b, degree, gamma, coef))
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distances [len(a), len(b)], float64, exact (no |a|^2 + |b|^2 - 2ab cancellation)."""
    a, b = a.double(), b.double()
    return torch.cat([torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist")
                      for i in range(0, a.shape[0], chunk)]) if a.shape[0] else torch.zeros(0, b.shape[0])


def kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each vector to its k-th nearest other vector of the same set."""
    if x.shape[0] <= k:
        raise ValueError(f"k = {k} needs more than {k} feature vectors per set, got {x.shape[0]}")
    return pairwise_distances(x, x).kthvalue(k + 1, dim=1).values  # +1: the vector itself at distance 0


@dataclass(frozen=True)
class PRDC:
    precision: float
    recall: float
    density: float
    coverage: float


def precision_recall_density_coverage(real: torch.Tensor, generated: torch.Tensor, k: int = 5) -> PRDC:
    """Kynkaanniemi et al. 2019 (precision, recall) and Naeem et al. 2020 (density, coverage), with k-NN
    balls in each set: precision = generated inside some real ball; recall = real inside some generated
    ball; density = real balls holding each generated vector / k; coverage = real balls holding some
    generated vector."""
    real_radii = kth_neighbour_radii(real, k)
    generated_radii = kth_neighbour_radii(generated, k)
    d = pairwise_distances(real, generated)
    inside_real = d < real_radii[:, None]
    return PRDC(
        precision=float(inside_real.any(dim=0).double().mean()),
        recall=float((d < generated_radii[None, :]).any(dim=1).double().mean()),
        density=float(inside_real.sum(dim=0).double().mean() / k),
        coverage=float((d.min(dim=1).values < real_radii).double().mean()),
    )


def nearest_neighbours(queries: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query its two nearest vectors in `pool`: (distances [N, 2], indices [N, 2])."""
    if pool.shape[0] < 2:
        raise ValueError(f"the training set needs at least 2 images for a distance ratio, got {pool.shape[0]}")
    found = pairwise_distances(queries, pool).topk(2, dim=1, largest=False)
    return found.values, found.indices
