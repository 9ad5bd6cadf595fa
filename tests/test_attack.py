"""Attacks: bit-identity with torchattacks, adaptive attacks (BPDA, EOT) against defenses, the encoder
attack's effect on a trained autoencoder, and the attack nodes inside inference mode."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tiny_models import tiny_kl, tiny_unet, tiny_vq

from comfyui_genart.core import attacks, autoencoders, defenses
from comfyui_genart.core.attack_losses import DiffusionLoss
from comfyui_genart.core.handles import AutoencoderHandle, DenoiserHandle, SchedulerHandle, VQModelHandle
from comfyui_genart.graph.context import RunContext, RunSettings
from comfyui_genart.nodes import defense as D
from comfyui_genart.nodes.attack import AttackDiffusionPGD, AttackEncoderFGSM, AttackEncoderPGD


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (two stall at barriers on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



class CountingProgress:
    bars: ClassVar[list[CountingProgress]] = []

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.n = total, 0
        CountingProgress.bars.append(self)

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def _ctx() -> RunContext:
    return RunContext(RunSettings(progress_factory=CountingProgress))


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()


@pytest.fixture(scope="module")
def classification():
    model = _classifier()
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    return model, images, labels, lambda x: F.cross_entropy(model(x), labels)


# Bit-identity with torchattacks 3.5.1 (torchattacks draws its random start from the global CPU generator;
# ours from a generator seeded the same way: the same stream).

@pytest.mark.parametrize("seed", [0, 7])
def test_pgd_linf_is_bit_identical_to_torchattacks(classification, seed):
    torchattacks = pytest.importorskip("torchattacks")
    model, images, labels, loss = classification
    for random_start in (True, False):
        torch.manual_seed(seed)
        ref = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=random_start)(images, labels)
        ours = attacks.pgd(images, loss, eps=8 / 255, step_size=2 / 255, steps=10, norm="linf",
                           random_init=random_start, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(ours, ref)
        assert not torch.equal(ours, images)


@pytest.mark.parametrize("seed", [0, 7])
def test_pgd_l2_is_bit_identical_to_torchattacks(classification, seed):
    torchattacks = pytest.importorskip("torchattacks")
    model, images, labels, loss = classification
    for random_start in (True, False):
        torch.manual_seed(seed)
        ref = torchattacks.PGDL2(model, eps=0.5, alpha=0.1, steps=10, random_start=random_start)(images, labels)
        ours = attacks.pgd(images, loss, eps=0.5, step_size=0.1, steps=10, norm="l2", random_init=random_start,
                        generator=torch.Generator().manual_seed(seed))
        assert torch.equal(ours, ref)


def test_fgsm_is_bit_identical_to_torchattacks(classification):
    torchattacks = pytest.importorskip("torchattacks")
    model, images, labels, loss = classification
    for eps in (2 / 255, 8 / 255, 0.3):
        assert torch.equal(attacks.fgsm(images, loss, eps=eps), torchattacks.FGSM(model, eps=eps)(images, labels))


def test_fgsm_and_pgd_linf_are_bit_identical_to_art(classification):
    pytest.importorskip("art")
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    model, images, labels, loss = classification
    art_model = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(3, 16, 16), nb_classes=10,
                                  clip_values=(0.0, 1.0))
    ref = FastGradientMethod(art_model, eps=8 / 255).generate(images.numpy(), y=labels.numpy())
    assert torch.equal(attacks.fgsm(images, loss, eps=8 / 255), torch.from_numpy(ref))
    # ART draws its random start from numpy's global generator: compared without one
    ref = ProjectedGradientDescent(art_model, norm=np.inf, eps=8 / 255, eps_step=2 / 255, max_iter=10,
                                   num_random_init=0, verbose=False).generate(images.numpy(), y=labels.numpy())
    ours = attacks.pgd(images, loss, eps=8 / 255, step_size=2 / 255, steps=10, random_init=False)
    assert torch.equal(ours, torch.from_numpy(ref))


def test_pgd_stays_in_the_ball_and_the_mask(classification):
    _, images, _, loss = classification
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    adv = attacks.pgd(images, loss, eps=8 / 255, step_size=2 / 255, steps=5, generator=torch.Generator().manual_seed(0),
                   mask=mask)
    delta = adv - images
    assert delta.abs().max() <= 8 / 255 + 1e-6
    assert torch.equal(delta * (1 - mask), torch.zeros_like(delta)) and delta[..., 4:12, 4:12].abs().max() > 0
    adv2 = attacks.pgd(images, loss, eps=0.5, step_size=0.2, steps=5, norm="l2",
                    generator=torch.Generator().manual_seed(0))
    assert (adv2 - images).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert 0 <= adv2.min() and adv2.max() <= 1


def test_linear_schedule_decays_to_a_hundredth():
    sizes = [attacks.step_size_at(0.1, i, 10, "linear") for i in range(10)]
    assert sizes[0] == 0.1 and sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == pytest.approx(0.1 - 0.099 * 9 / 10)
    assert attacks.step_size_at(0.1, 5, 10, "constant") == 0.1


# Adaptive attacks: a small classifier trained on sklearn's digits (offline), defended.

@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(data.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=g)
    train, test = order[:1400], order[1400:1600]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(300):
        idx = train[torch.randint(len(train), (64,), generator=g)]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    return model, x[test], y[test]


def _error_rate(model, images, labels, defense, draws=1) -> float:
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        votes = torch.stack([model(defense(images, g)).argmax(1) for _ in range(draws)])
    return float((votes.mode(dim=0).values != labels).float().mean())


def test_bpda_breaks_bit_depth_that_the_non_adaptive_attack_cannot(digits):
    """Feature squeezing to 1 bit zeroes the gradient: PGD through it (non-adaptive) changes nothing, PGD on the
    bare model transfers; BPDA (straight-through) attacks the defended model itself and does at least as well."""
    model, x, y = digits
    loss = lambda a: F.cross_entropy(model(a), y)  # noqa: E731
    squeeze = lambda a, g: defenses.reduce_bit_depth(a, 1)  # noqa: E731
    kw = dict(eps=0.2, step_size=0.05, steps=10, generator=torch.Generator().manual_seed(0))
    clean = _error_rate(model, x, y, squeeze)
    naive = attacks.pgd(x, attacks.through_defense(loss, squeeze, "exact", torch.Generator()), **kw)
    oblivious = attacks.pgd(x, loss, **kw)
    bpda = attacks.pgd(x, attacks.through_defense(loss, squeeze, "bpda", torch.Generator()), **kw)
    rates = {name: _error_rate(model, x, y, squeeze) if name == "clean" else _error_rate(model, adv, y, squeeze)
             for name, adv in (("clean", x), ("naive", naive), ("oblivious", oblivious), ("bpda", bpda))}
    # measured: clean 0.05, naive 0.06, oblivious 0.89-0.90, bpda 0.89-0.90 (this small classifier is nearly
    # linear, so the transfer attack is as strong as BPDA; the gap that matters is naive vs BPDA)
    assert clean < 0.1 and rates["naive"] < 0.15
    assert rates["bpda"] > rates["naive"] + 0.6
    assert rates["bpda"] >= rates["oblivious"] - 0.03


def test_eot_beats_single_draw_attacks_on_a_randomized_defense(digits):
    """Gaussian noise (std 0.5) before the classifier, evaluated by a majority of 15 draws: averaging the gradient
    over 8 draws per step (EOT) succeeds more often than one draw per step or than ignoring the defense."""
    model, x, y = digits
    loss = lambda a: F.cross_entropy(model(a), y)  # noqa: E731
    noise = lambda a, g: a + 0.5 * torch.randn(a.shape, generator=g)  # noqa: E731
    kw = dict(eps=0.1, step_size=0.025, steps=10, generator=torch.Generator().manual_seed(0))
    oblivious = attacks.pgd(x, loss, **kw)
    single = attacks.pgd(x, attacks.through_defense(loss, noise, "exact", torch.Generator().manual_seed(1)), **kw)
    eot = attacks.pgd(x, attacks.through_defense(loss, noise, "exact", torch.Generator().manual_seed(1)), eot_samples=8,
                   **kw)
    rates = {name: _error_rate(model, adv, y, noise, draws=15)
             for name, adv in (("oblivious", oblivious), ("single", single), ("eot", eot))}
    # measured: oblivious 0.70, single draw 0.72, EOT-8 0.79
    assert rates["eot"] >= max(rates["oblivious"], rates["single"]) + 0.04


# The encoder attack on a trained autoencoder.

AE_CONFIG = dict(block_out_channels=(8, 16, 32), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                 mid_block_add_attention=False, down_block_types=("DownEncoderBlock2D",) * 3,
                 up_block_types=("UpDecoderBlock2D",) * 3)


def _smooth_images(n: int, g: torch.Generator) -> torch.Tensor:
    """Synthetic 32x32 RGB images: coarse colour fields plus finer detail."""
    coarse = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bicubic", align_corners=False)
    fine = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=32, mode="bilinear", align_corners=False)
    return (0.75 * coarse + 0.25 * fine).clamp(0, 1)


@pytest.fixture(scope="module")
def trained_kl():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(**AE_CONFIG).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(250):
        x = _smooth_images(8, g) * 2 - 1
        posterior = model.encode(x).latent_dist
        loss = F.mse_loss(model.decode(posterior.mean).sample, x) + 1e-5 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    held_out = _smooth_images(16, torch.Generator().manual_seed(9)) * 2 - 1
    with torch.no_grad():
        error = F.mse_loss(model.decode(model.encode(held_out).latent_dist.mean).sample, held_out)
    assert error < 0.1, f"the fixture autoencoder did not learn to reconstruct (held-out MSE {error:.3f})"  # 0.067
    with torch.inference_mode():  # as the loader nodes hand it out (inference tensors)
        frozen = AutoencoderKL(**AE_CONFIG)
        frozen.load_state_dict(model.state_dict())
    return frozen.eval().requires_grad_(False)


def _latent_distance(model, images, target):
    with torch.no_grad():
        return (autoencoders.encode_images(model, images) - target).flatten(1).norm(dim=1)


def test_encoder_attack_moves_a_trained_latent_toward_its_target(trained_kl):
    g = torch.Generator().manual_seed(123)
    clean, target = _smooth_images(4, g), _smooth_images(1, g)
    eps = 16 / 255
    with torch.inference_mode():
        target_latent = autoencoders.encode_images(trained_kl, target)
    effects = {}
    for mode in ("target_image", "zero"):
        out = AttackEncoderPGD(image=clean.movedim(1, -1), autoencoder=AutoencoderHandle(trained_kl), target=mode,
                               target_image=target.movedim(1, -1), eps=eps, step_size=2 / 255, steps=50,
                               seed=0).run(_ctx())
        adv = out.image.movedim(-1, 1)
        assert (adv - clean).abs().max() <= eps + 1e-6
        goal = target_latent if mode == "target_image" else torch.zeros_like(target_latent)
        before, after = _latent_distance(trained_kl, clean, goal), _latent_distance(trained_kl, adv, goal)
        noise = (torch.rand(clean.shape, generator=g) * 2 - 1).sign() * eps
        random = _latent_distance(trained_kl, (clean + noise).clamp(0, 1), goal)
        effects[mode] = (before / after, (before - after) / (before - random).abs().clamp(min=1e-6))
    # measured (one thread): distance to the target image's latent / 1.20-1.37 (mean 1.30), to the zero latent
    # / 1.32-1.70 (mean 1.44); 5-400x the change a random sign perturbation of the same size makes. A small
    # autoencoder is much more robust than Stable Diffusion's: 16/255 cannot carry a content change.
    for mode, (shrink, versus_random) in effects.items():
        assert shrink.mean() >= 1.2 and shrink.min() >= 1.1, (mode, shrink)
        assert versus_random.min() >= 3, (mode, versus_random)


def _linearized_best_factor(model, image: torch.Tensor, eps: float, iterations: int = 2000) -> float:
    """The most any L-inf eps perturbation can shrink ||E(x)|| if E were its own linearization at x:
    min ||z + J d|| over |d| <= eps and 0 <= x + d <= 1, a convex problem solved by FISTA."""
    x = image.flatten()
    model = autoencoders.grad_ready(model)  # the fixture holds inference tensors, as loaders hand models out
    encode = lambda v: autoencoders.encode_images(model, v.view(1, *image.shape[1:])).flatten()  # noqa: E731
    with torch.inference_mode(False):
        z = encode(x).detach()
        jac = torch.autograd.functional.jacobian(encode, x.clone())
    lo, hi = torch.clamp(-x, min=-eps), torch.clamp(1 - x, max=eps)
    lipschitz = torch.linalg.matrix_norm(jac, 2) ** 2
    d = torch.zeros_like(x)
    y, t = d.clone(), 1.0
    for _ in range(iterations):
        d_next = (y - jac.T @ (z + jac @ y) / lipschitz).clamp(lo, hi)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y, d, t = d_next + (t - 1) / t_next * (d_next - d), d_next, t_next
    return float(z.norm() / (z + jac @ d).norm())


def test_encoder_attack_reaches_the_best_a_linear_model_allows(trained_kl):
    """Why the effect above is a factor under 2, not PhotoGuard's large one on Stable Diffusion's VAE: a
    small trained autoencoder is robust, and even the best 16/255 perturbation of its linearization shrinks
    the latent little. PGD beats that bound, so the limit is the model, not the attack."""
    g = torch.Generator().manual_seed(123)
    clean = _smooth_images(2, g)
    eps = 16 / 255
    out = AttackEncoderPGD(image=clean.movedim(1, -1), autoencoder=AutoencoderHandle(trained_kl), target="zero",
                           eps=eps, step_size=2 / 255, steps=100, schedule="linear", seed=0).run(_ctx())
    goal = torch.zeros(())
    achieved = _latent_distance(trained_kl, clean, goal) / _latent_distance(trained_kl, out.image.movedim(-1, 1), goal)
    bound = torch.tensor([_linearized_best_factor(trained_kl, clean[i:i + 1], eps) for i in range(len(clean))])
    # measured: PGD 1.98 and 1.45 where the linear bound is 1.46 and 1.26 (the shipped VQ model, two held-out
    # emoji, 200 steps: 1.11 and 1.11 where the bound is 1.09 and 1.09)
    assert (achieved >= bound).all(), (achieved, bound)


def test_encoder_attack_away_from_clean_moves_the_latent_far_more_than_noise(trained_kl):
    g = torch.Generator().manual_seed(5)
    clean = _smooth_images(4, g)
    eps = 16 / 255
    out = AttackEncoderPGD(image=clean.movedim(1, -1), autoencoder=AutoencoderHandle(trained_kl),
                           target="away_from_clean", eps=eps, step_size=2 / 255, steps=30, seed=0).run(_ctx())
    with torch.no_grad():
        z = autoencoders.encode_images(trained_kl, clean)
    moved = _latent_distance(trained_kl, out.image.movedim(-1, 1), z)
    noise = (torch.rand(clean.shape, generator=g) * 2 - 1).sign() * eps
    random = _latent_distance(trained_kl, (clean + noise).clamp(0, 1), z)
    # measured: 6.7-7.6x the random displacement, 0.7-1.7x the clean latent's own norm
    assert (moved / random).min() >= 4
    assert (moved / z.flatten(1).norm(dim=1)).min() >= 0.5


def test_encoder_attack_on_the_shipped_vq_model():
    """The same effect on the project's trained VQ model (skipped until it ships)."""
    from diffusers import VQModel

    from conftest import REPO

    folder = REPO / "models" / "vqgan" / "genart-emoji32"
    if not (folder / "config.json").is_file():
        pytest.skip("the default VQ model is not in models/vqgan/genart-emoji32")
    with torch.inference_mode():
        model = VQModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(123)
    clean = _smooth_images(4, g)
    out = AttackEncoderPGD(image=clean.movedim(1, -1), vqmodel=VQModelHandle(model), target="zero",
                           eps=16 / 255, step_size=2 / 255, steps=50, seed=0).run(_ctx())
    goal = torch.zeros(())
    before, after = _latent_distance(model, clean, goal), _latent_distance(model, out.image.movedim(-1, 1), goal)
    noise = (torch.rand(clean.shape, generator=g) * 2 - 1).sign() * 16 / 255
    random = _latent_distance(model, (clean + noise).clamp(0, 1), goal)
    # measured: / 1.18-1.29 (1.07-1.11 on emoji from its training set)
    assert (before / after).min() >= 1.1
    assert ((before - after) / (before - random).abs().clamp(min=1e-6)).min() >= 3


# The nodes: VQ and KL, inference tensors, determinism, progress, errors.

@pytest.fixture(scope="module")
def models():
    with torch.inference_mode():
        return {"vq": VQModelHandle(tiny_vq()), "kl": AutoencoderHandle(tiny_kl()),
                "denoiser": DenoiserHandle(tiny_unet()), "scheduler": SchedulerHandle("DDIMScheduler", {})}


def _image(seed=0, size=32) -> torch.Tensor:
    with torch.inference_mode():
        return torch.rand(2, size, size, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("key,name", [("vq", "vqmodel"), ("kl", "autoencoder")])
def test_encoder_pgd_node_on_vq_and_kl_is_seeded_and_counts_iterations(models, key, name):
    image = _image()
    CountingProgress.bars.clear()
    kwargs = dict(image=image, eps=8 / 255, step_size=2 / 255, steps=4, **{name: models[key]})
    first = AttackEncoderPGD(seed=3, **kwargs).run(_ctx())
    assert CountingProgress.bars[-1].n == CountingProgress.bars[-1].total == 4
    again = AttackEncoderPGD(seed=3, **kwargs).run(_ctx())
    other = AttackEncoderPGD(seed=4, **kwargs).run(_ctx())
    assert torch.equal(first.image, again.image) and not torch.equal(first.image, other.image)
    assert (first.image - image).abs().max() <= 8 / 255 + 1e-6
    assert first.perturbation.shape == image.shape
    assert 0 <= first.perturbation.min() and first.perturbation.max() <= 1
    model = models[key].model
    with torch.no_grad():
        before = autoencoders.encode_images(model, image.movedim(-1, 1).clone()).norm()
        after = autoencoders.encode_images(model, first.image.movedim(-1, 1)).norm()
    assert after < before  # target 'zero'


def test_encoder_fgsm_node_takes_one_step(models):
    image = _image(1)
    out = AttackEncoderFGSM(image=image, vqmodel=models["vq"], eps=4 / 255).run(_ctx())
    delta = (out.image - image).abs()
    assert delta.max() <= 4 / 255 + 1e-6 and (delta > 3.9 / 255).float().mean() > 0.5


def test_attack_node_through_a_defense_uses_bpda_and_refuses_exact_for_jpeg(models):
    image = _image(2)
    jpeg = D.DefendJPEG(image=image, quality=50).run(_ctx()).defense
    kwargs = dict(image=image, autoencoder=models["kl"], eps=8 / 255, step_size=2 / 255, steps=2, defense=jpeg)
    direct = AttackEncoderPGD(**{**kwargs, "defense": None}).run(_ctx())
    adaptive = AttackEncoderPGD(**kwargs).run(_ctx())
    assert not torch.equal(direct.image, adaptive.image)
    with pytest.raises(ValueError, match=r"'exact' but the defense 'jpeg quality=50' is not differentiable.*'bpda'"):
        AttackEncoderPGD(**kwargs, defense_gradient="exact").run(_ctx())
    blur = D.DefendGaussianBlur(image=image).run(_ctx()).defense
    AttackEncoderPGD(**{**kwargs, "defense": blur}, defense_gradient="exact", eot_samples=2,
                     eot_transform="noise").run(_ctx())


def test_attack_node_errors_name_the_input(models):
    image = _image(3)
    with pytest.raises(ValueError, match=r"'target_image' is not connected"):
        AttackEncoderPGD(image=image, vqmodel=models["vq"], target="target_image", steps=1).run(_ctx())
    with pytest.raises(ValueError, match=r"both connected"):
        AttackEncoderPGD(image=image, vqmodel=models["vq"], autoencoder=models["kl"], steps=1).run(_ctx())
    with pytest.raises(ValueError, match=r"input 'mask' has shape \(1, 16, 16\).*resize"):
        AttackEncoderPGD(image=image, vqmodel=models["vq"], mask=torch.ones(1, 16, 16), steps=1).run(_ctx())
    small = torch.rand(1, 16, 16, 3)
    with pytest.raises(ValueError, match=r"'target_image' is 1 x 16x16 but 'image' is 2 x 32x32"):
        AttackEncoderPGD(image=image, vqmodel=models["vq"], target="target_image", target_image=small,
                         steps=1).run(_ctx())
    assert AttackEncoderPGD.check_constants({"eps": 8.0, "norm": "linf"}, _ctx())[0][0] == "eps"


def test_diffusion_attack_raises_the_denoiser_loss(models):
    image = _image(4)
    kwargs = dict(image=image, denoiser=models["denoiser"], scheduler=models["scheduler"], vqmodel=models["vq"],
                  eps=16 / 255, step_size=4 / 255, steps=8, t_max=0.3, seed=0)
    out = AttackDiffusionPGD(**kwargs).run(_ctx())
    assert torch.equal(out.image, AttackDiffusionPGD(**kwargs).run(_ctx()).image)
    assert (out.image - image).abs().max() <= 16 / 255 + 1e-6
    loss = DiffusionLoss(autoencoders.grad_ready(models["vq"].model), models["denoiser"],
                         autoencoders.grad_ready(models["denoiser"].model), models["scheduler"], (0, 299), {},
                         torch.Generator())

    def mean_loss(x):  # the same 8 timesteps and noises for both images
        loss.generator.manual_seed(0)
        with torch.no_grad():
            return sum(float(loss(x)) for _ in range(8))

    clean = image.movedim(-1, 1).clone()
    noise = (torch.rand(clean.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1).sign() * 16 / 255
    gain = mean_loss(out.image.movedim(-1, 1)) - mean_loss(clean)
    random_gain = mean_loss((clean + noise).clamp(0, 1)) - mean_loss(clean)
    # measured: +0.022 against +0.010 for random signs (a random UNet barely reads its input's details)
    assert gain > 0 and gain > 1.5 * random_gain
    fused = AttackDiffusionPGD(**kwargs, encoder_weight=1.0).run(_ctx())
    assert not torch.equal(fused.image, out.image)
    problems = AttackDiffusionPGD.check_constants({"t_min": 0.8, "t_max": 0.2, "diffusion_weight": 0.0}, _ctx())
    assert [p[0] for p in problems] == ["t_min", "diffusion_weight"]


def test_attack_defend_measure_report_through_the_executor(pack, paths, make_executor):
    """Loader, attack, defense, measurements and report in one workflow, run by the engine inside
    torch.inference_mode() (as ComfyUI runs everything): the attack still gets its gradients."""
    from comfyui_genart.graph.registry import Registry
    from comfyui_genart.nodes import attack, defense, metrics

    registry = Registry()
    for _, cls in pack.REGISTRY.items():
        registry.register(cls)
    registry.register_modules([attack, defense, metrics])
    tiny_kl().save_pretrained(paths.models_dirs[0] / "vae" / "tiny-kl")
    eps = 8 / 255
    prompt = {
        "1": {"class_type": "GenArtPatternImage", "inputs": {"width": 32, "height": 32}},
        "2": {"class_type": "GenArtLoadAutoencoder", "inputs": {"model_name": "tiny-kl"}},
        "3": {"class_type": "GenArtAttackEncoderPGD", "inputs": {"image": ["1", 0], "autoencoder": ["2", 0],
                                                                 "eps": eps, "steps": 3}},
        "4": {"class_type": "GenArtDefendJPEG", "inputs": {"image": ["3", 0], "quality": 75}},
        "5": {"class_type": "GenArtMeasurePSNR", "inputs": {"image_a": ["1", 0], "image_b": ["4", 0],
                                                            "label": "pgd + jpeg"}},
        "6": {"class_type": "GenArtMeasurePerturbation", "inputs": {"image": ["3", 0], "reference": ["1", 0],
                                                                    "label": "pgd"}},
        "7": {"class_type": "GenArtMetricsReport", "inputs": {"metrics_1": ["5", 0], "metrics_2": ["6", 0]}},
        "8": {"class_type": "GenArtPreviewImage", "inputs": {"images": ["3", 1]}},
    }
    report = make_executor(registry=registry).run(prompt)
    table = report.ui["7"]["text"][0]
    assert "pgd + jpeg" in table and "perturbation_linf" in table
    measured = {m["metric"]: m["value"] for m in report.ui["7"]["metrics"]}
    assert 0 < measured["perturbation_linf"] <= eps + 1e-6
    assert all((paths.output_dir / f["filename"]).is_file() for f in report.ui["7"]["files"])


def test_diffusion_attack_reads_conditioning_for_a_conditional_denoiser(models):
    from tiny_models import tiny_cond_unet

    from comfyui_genart.core.handles import Conditioning

    with torch.inference_mode():
        denoiser = DenoiserHandle(tiny_cond_unet())
        cond = Conditioning(torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(0)))
    kwargs = dict(image=_image(5), denoiser=denoiser, scheduler=models["scheduler"], autoencoder=models["kl"],
                  steps=2, seed=0)
    with pytest.raises(ValueError, match=r"'conditioning' is missing"):
        AttackDiffusionPGD(**kwargs).run(_ctx())
    out = AttackDiffusionPGD(**kwargs, conditioning=cond).run(_ctx())
    assert (out.image - kwargs["image"]).abs().max() <= 16 / 255 + 1e-6


def test_exact_gradients_through_diffpure_beat_bpda_and_the_plain_attack():
    """DiffPure is differentiable (grad-ready copies of both models; VQ quantization passes the gradient
    straight), so an attack can go through the whole purification or img2img edit (PhotoGuard's diffusion
    attack). On the shipped model the exact gradient moves the purified latent further than BPDA or no
    adaptation, averaged over purification seeds."""
    import json

    from diffusers import UNet2DModel, VQModel
    from PIL import Image

    from conftest import REPO

    models = REPO / "models"
    if not (models / "unet" / "genart-emoji32" / "config.json").is_file():
        pytest.skip("the default model is not in models/")
    with torch.inference_mode():
        vq = VQModel.from_pretrained(models / "vqgan" / "genart-emoji32", local_files_only=True)
        unet = UNet2DModel.from_pretrained(models / "unet" / "genart-emoji32", local_files_only=True)
    vq, unet = vq.eval().requires_grad_(False), unet.eval().requires_grad_(False)
    training = json.loads((models / "unet" / "genart-emoji32" / "genart_training.json").read_text())
    config = json.loads((models / "schedulers" / "genart-emoji32" / "scheduler_config.json").read_text())
    scheduler = SchedulerHandle("DDIMScheduler", {k: v for k, v in config.items() if not k.startswith("_")})
    denoiser = DenoiserHandle(unet, training["latent_scale"], prediction_type="v_prediction")
    handle = VQModelHandle(vq)
    with Image.open(REPO / "input" / "genart-example-emoji.png") as im:
        image = torch.from_numpy(np.asarray(im.convert("RGB"))).float().div(255)[None]

    def purify(x, seed):
        return D.DefendDiffPure(image=x, denoiser=denoiser, scheduler=scheduler, t_star=0.6, steps=10, seed=seed,
                              vqmodel=handle).run(_ctx()).image.movedim(-1, 1)

    defense = D.DefendDiffPure(image=image, denoiser=denoiser, scheduler=scheduler, t_star=0.6, steps=10, seed=0,
                             vqmodel=handle).run(_ctx()).defense
    assert defense.differentiable
    moved = {}
    for gradient in ("none", "bpda", "exact"):
        through = {} if gradient == "none" else {"defense": defense, "defense_gradient": gradient}
        adv = AttackEncoderPGD(image=image, vqmodel=handle, target="away_from_clean", eps=16 / 255,
                               step_size=2 / 255, steps=20, seed=0, **through).run(_ctx()).image
        with torch.no_grad():
            encode = autoencoders.encode_images
            moved[gradient] = sum(float((encode(vq, purify(adv, s)) - encode(vq, purify(image, s))).norm())
                                  for s in range(4)) / 4
    # measured: none 4.14, bpda 4.85, exact 6.10
    assert moved["exact"] >= 1.15 * max(moved["bpda"], moved["none"]), moved
