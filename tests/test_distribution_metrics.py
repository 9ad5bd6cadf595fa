"""Distribution metrics against their references on the same feature vectors: torchmetrics' FID and KID
(given the feature module), pytorch-fid's calculate_frechet_distance, the prdc package."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def features(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / dim**0.5
    return torch.randn(n, dim, generator=gen, dtype=torch.float64) @ mix + shift


class Lookup(torch.nn.Module):
    """A 'feature extractor' for torchmetrics: the 'images' are row numbers into a fixed feature table."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.num_features = table.shape[1]
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.table[rows.reshape(-1).long()]


def test_frechet_distance_equals_torchmetrics_and_pytorch_fid():
    from torchmetrics.image.fid import FrechetInceptionDistance

    from comfyui_genart.core.distribution_metrics import frechet_distance

    from references import run_reference

    real, fake = features(300, 32, 0), features(250, 32, 1, shift=0.3)
    ours = frechet_distance(real, fake)
    fid = FrechetInceptionDistance(feature=Lookup(torch.cat([real, fake])))
    fid.update(torch.arange(300), real=True)
    fid.update(torch.arange(300, 550), real=False)
    theirs = float(fid.compute())
    assert ours == pytest.approx(theirs, rel=1e-6) and ours > 1.0
    reference = run_reference(
        "from pytorch_fid.fid_score import calculate_frechet_distance\n"
        "import numpy as np\n"
        "a, b = inputs['real'], inputs['fake']\n"
        "outputs['fd'] = np.array(calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False),"
        " b.mean(0), np.cov(b, rowvar=False)))\n",
        real=real.numpy(), fake=fake.numpy())
    assert ours == pytest.approx(float(reference["fd"]), rel=1e-6)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)


def test_kernel_distance_equals_torchmetrics_on_the_same_subsets():
    from torchmetrics.image.kid import KernelInceptionDistance

    from comfyui_genart.core.distribution_metrics import kernel_distance

    real, fake = features(120, 16, 2), features(90, 16, 3, shift=0.2)
    kid = KernelInceptionDistance(feature=Lookup(torch.cat([real, fake])), subsets=7, subset_size=50)
    kid.update(torch.arange(120), real=True)
    kid.update(torch.arange(120, 210), real=False)
    torch.manual_seed(11)  # torchmetrics draws its subsets from the global generator
    mean, std = (float(v) for v in kid.compute())
    ours = kernel_distance(real, fake, subsets=7, subset_size=50, seed=11)
    assert ours[0] == pytest.approx(mean, rel=1e-9) and ours[1] == pytest.approx(std, rel=1e-9)
    assert ours[0] > 0 and ours[1] > 0
    assert kernel_distance(real, fake, subsets=7, subset_size=50, seed=12) != ours  # the seed picks the subsets
    with pytest.raises(ValueError, match="subset_size 100 is larger than the generated set"):
        kernel_distance(real, fake, subset_size=100)


@pytest.mark.parametrize("k", [1, 5])
def test_precision_recall_density_coverage_equal_prdc(k, capsys):
    from prdc import compute_prdc

    from comfyui_genart.core.distribution_metrics import precision_recall_density_coverage

    real, fake = features(200, 24, 4), features(150, 24, 5, shift=0.4)
    theirs = compute_prdc(real.numpy(), fake.numpy(), k)
    ours = precision_recall_density_coverage(real, fake, k)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(ours, name) == pytest.approx(float(theirs[name]), abs=1e-6), name
    assert 0 < ours.precision < 1 and 0 < ours.recall < 1 and 0 < ours.coverage < 1


def test_nearest_neighbours_find_a_planted_copy():
    from comfyui_genart.core.distribution_metrics import nearest_neighbours

    pool = features(50, 8, 6)
    queries = torch.cat([features(3, 8, 7), pool[17:18] + 1e-3])
    distances, indices = nearest_neighbours(queries, pool)
    assert int(indices[3, 0]) == 17 and float(distances[3, 0] / distances[3, 1]) < 0.01
    brute = torch.cdist(queries, pool)
    assert torch.allclose(distances[:, 0], brute.min(dim=1).values)
    assert np.all((distances[:, 0] <= distances[:, 1]).numpy())
