"""GAN training: the losses against hand computations, bit-identical resume, the loss curve, the node."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import emoji_like_folder


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_losses_equal_hand_computations():
    from comfyui_genart.core.gan_losses import discriminator_loss, generator_loss
    from comfyui_genart.core.vqgan_losses import hinge_d_loss

    # WGAN critic: mean D(fake) - mean D(real) (+ drift * mean D(real)^2).
    assert float(discriminator_loss("wgan-gp", REAL, FAKE)) == pytest.approx(-1.5 / 3 - 1.5 / 3)
    assert float(discriminator_loss("wgan-gp", REAL, FAKE, drift=0.1)) == pytest.approx(-1.0 + 0.1 * 5.25 / 3)
    # Hinge: mean relu(1 - D(real)) + mean relu(1 + D(fake)) = (0 + 2 + 0.5) / 3 + (0 + 1 + 2.5) / 3.
    assert float(discriminator_loss("hinge", REAL, FAKE)) == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert float(hinge_d_loss(REAL, FAKE)) == pytest.approx(0.5 * (2.5 / 3 + 3.5 / 3)), "taming's is half of it"
    # Non-saturating logistic: mean softplus(-D(real)) + mean softplus(D(fake)); generator mean softplus(-D(fake)).
    d = sum(softplus(-r) for r in REAL.tolist()) / 3 + sum(softplus(f) for f in FAKE.tolist()) / 3
    assert float(discriminator_loss("logistic", REAL, FAKE)) == pytest.approx(d)
    assert float(generator_loss("logistic", FAKE)) == pytest.approx(sum(softplus(-f) for f in FAKE.tolist()) / 3)
    assert float(generator_loss("wgan-gp", FAKE)) == pytest.approx(-FAKE.mean().item())
    assert float(generator_loss("hinge", FAKE)) == pytest.approx(-FAKE.mean().item())


def test_gradient_penalty_and_r1_equal_closed_forms():
    from comfyui_genart.core.gan_losses import gradient_penalty, r1_penalty

    # A critic D(x) = sum(w * x^2) / 2 has gradient w * x: the penalty is known in closed form.
    w = torch.tensor([[[[1.0, 2.0], [0.5, -1.0]]]])

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (w * x * x / 2).flatten(1).sum(1)

    real = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]]], [[[0.0, 1.0], [1.0, -2.0]]]])
    fake = torch.tensor([[[[-1.0, 1.0], [0.0, 0.0]]], [[[2.0, 2.0], [0.0, 1.0]]]])
    mix = torch.tensor([0.25, 0.6])
    x_hat = mix.view(-1, 1, 1, 1) * real + (1 - mix.view(-1, 1, 1, 1)) * fake
    norms = (w * x_hat).flatten(1).norm(dim=1)
    expected = ((norms - 1) ** 2).mean()
    assert float(gradient_penalty(critic, real, fake, mix).detach()) == pytest.approx(float(expected), rel=1e-6)
    # R1: mean ||grad D(real)||^2 = mean ||w * real||^2.
    x = real.clone().requires_grad_(True)
    penalty = r1_penalty(critic(x), x)
    assert float(penalty.detach()) == pytest.approx(float((w * real).flatten(1).square().sum(1).mean()), rel=1e-6)
    penalty.backward()  # the penalty keeps its graph: it can be trained through
    assert x.grad is not None


def test_gradient_penalty_of_a_linear_critic_equals_autograd_by_hand():
    from comfyui_genart.core.gan_losses import gradient_penalty

    # A linear critic D(x) = <a, x> + b has gradient a at every x_hat: the penalty is (||a|| - 1)^2 for every mix,
    # and its gradient with respect to a is 2 (||a|| - 1) a / ||a||.
    a = torch.tensor([[[[0.5, -1.0], [2.0, 0.25]]]], requires_grad=True)
    b = torch.tensor(0.3, requires_grad=True)

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (a * x).flatten(1).sum(1) + b

    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    mix = torch.tensor([0.0, 0.4, 1.0])
    # By hand: interpolates, the critic's gradient there with torch.autograd.grad, the mean (||g|| - 1)^2.
    t = mix.view(-1, 1, 1, 1)
    x_hat = (t * real + (1 - t) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    assert torch.equal(grad, a.detach().expand(3, 1, 2, 2)), "a linear critic's gradient is its weight"
    norm = a.detach().norm()
    by_hand = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert float(by_hand) == pytest.approx(float((norm - 1) ** 2), rel=1e-6)
    penalty = gradient_penalty(critic, real, fake, mix)
    assert float(penalty.detach()) == pytest.approx(float(by_hand), rel=1e-6)
    penalty.backward()
    torch.testing.assert_close(a.grad, 2 * (norm - 1) * a.detach() / norm)
    assert b.grad is None or float(b.grad) == 0.0, "the bias does not move the gradient"
    # The WGAN-GP critic loss with lambda = 10 on the same critic: E[D(fake)] - E[D(real)] + 10 * penalty.
    from comfyui_genart.core.gan_losses import discriminator_loss

    with torch.no_grad():
        total = discriminator_loss("wgan-gp", critic(real), critic(fake)) + 10 * (norm - 1) ** 2
        by_hand_total = (a * (fake - real)).flatten(1).sum(1).mean() + 10 * (norm - 1) ** 2
    assert float(total) == pytest.approx(float(by_hand_total), rel=1e-5, abs=1e-6)


def tiny_config(**changes):
    from comfyui_genart.core.gan_trainer import GANConfig

    base = dict(g_channels=(16, 8, 8), d_channels=(8, 8, 16), mapping_layers=1, z_dim=16, batch_size=4,
                steps=4, checkpoint_every=2, r1_every=2)
    return GANConfig(**{**base, **changes})


@pytest.fixture()
def data(tmp_path):
    from comfyui_genart.core.dataset import open_image_folder

    return open_image_folder(emoji_like_folder(tmp_path / "data"), 16, 0.3, flip=True)


@pytest.mark.parametrize("loss", ["logistic", "wgan-gp"])
def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path, data, loss):
    from comfyui_genart.core.gan_trainer import train_gan

    config = tiny_config(loss=loss, critic_steps=2 if loss == "wgan-gp" else 1)
    whole = train_gan(config, data, tmp_path / "a", tmp_path / "a-ck")

    def stop_at_3(step, logs):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gan(config, data, tmp_path / "b", tmp_path / "b-ck", on_step=stop_at_3)
    resumed = train_gan(config, data, tmp_path / "b", tmp_path / "b-ck")
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert whole.history == resumed.history, "the log of a resumed run equals the uninterrupted one's"
    assert [e["step"] for e in whole.history] == [0, 1, 2, 3]
    assert (tmp_path / "b" / "config.json").is_file()


def test_cached_real_batches_equal_the_dataset_loader(data):
    from comfyui_genart.core.dataset import train_batches
    from comfyui_genart.core.gan_trainer import RealImages

    config = tiny_config(batch_size=5)
    source = RealImages(data, config, 0, 1)
    for draw, batch in enumerate(train_batches(data, 5, config.seed, 0, 4)):
        assert torch.equal(source.batch(draw), (batch * 2 - 1).contiguous(memory_format=torch.channels_last))


def test_loss_curve_draws_each_key():
    from comfyui_genart.core.plots import CURVE_COLOURS, loss_curve

    history = [{"step": s, "d_loss": 1.0 / (s + 1), "g_loss": float(s % 3)} for s in range(50)]
    image = loss_curve(history, width=200, height=160)
    assert image.shape == (1, 160, 200, 3)
    pixels = (image[0] * 255).round().to(torch.int64)
    for colour in CURVE_COLOURS[:2]:
        assert (pixels == torch.tensor(colour)).all(dim=-1).sum() > 50, colour
    assert not torch.equal(image, loss_curve(history[:10], width=200, height=160))
    assert loss_curve([], width=100, height=50).shape == (1, 50, 100, 3)


def test_train_gan_node_runs_and_a_second_run_only_reloads(pack, paths):
    import json

    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor

    emoji_like_folder(paths.input_dir / "data", size=16)
    prompt = {
        "1": {"class_type": "GenArtLoadImageFolder", "inputs": {"folder": "data", "resolution": 16}},
        "2": {"class_type": "GenArtTrainGAN", "inputs": {
            "dataset": ["1", 0], "filename_prefix": "gan/test", "steps": 3, "batch_size": 4, "g_channels": "16,8,8",
            "d_channels": "8,8,16", "z_dim": 16, "checkpoint_every": 2}}}
    first = Executor(pack.REGISTRY, RunSettings(paths=paths)).run(prompt, keep=["2"])
    summary = json.loads(first.ui["2"]["text"][0])
    assert summary["steps"] == 3 and summary["loss"] == "logistic"
    assert len(first.ui["2"]["images"]) == 2, "samples and the loss curve are shown"
    out = first.outputs["2"]
    assert out["samples"].shape[-1] == 3 and out["loss_curve"].shape == (1, 360, 640, 3)
    assert (paths.output_dir / "gan" / "test" / "config.json").is_file()
    again = Executor(pack.REGISTRY, RunSettings(paths=paths)).run(prompt)
    assert json.loads(again.ui["2"]["text"][0])["steps"] == 3
    # Fine-tuning: the trained generator as init_gan of a second run whose own generator fields differ.
    tuned = {**prompt, "3": {"class_type": "GenArtTrainGAN", "inputs": {
        "dataset": ["1", 0], "init_gan": ["2", 0], "filename_prefix": "gan/tuned", "steps": 1, "batch_size": 4,
        "g_channels": "64,64,64", "d_channels": "8,8,16", "z_dim": 64}}}
    third = Executor(pack.REGISTRY, RunSettings(paths=paths)).run(tuned, keep=["3"])
    assert third.outputs["3"]["gan"].model.config.z_dim == 16, "the given generator's architecture is kept"
    saved = json.loads((paths.output_dir / "gan" / "tuned-checkpoints" / "step-0000001" / "trainer_state.json")
                       .read_text())["config"]
    assert saved["init_from"].endswith("test") and saved["g_channels"] == [16, 8, 8]
    bad = {**prompt, "2": {**prompt["2"], "inputs": {**prompt["2"]["inputs"], "d_channels": "8,16"}}}
    from comfyui_genart.graph.errors import WorkflowInvalid

    with pytest.raises(WorkflowInvalid, match="give both the same number of levels"):
        Executor(pack.REGISTRY, RunSettings(paths=paths)).run(bad)


def test_tensorboard_events_hold_the_logged_losses(tmp_path, data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from comfyui_genart.core.gan_trainer import train_gan

    config = tiny_config(steps=4, checkpoint_every=2)

    def stop_at_3(step, logs):
        if step == 3:
            raise KeyboardInterrupt

    board = tmp_path / "tb"
    with pytest.raises(KeyboardInterrupt):
        train_gan(config, data, tmp_path / "m", tmp_path / "ck", on_step=stop_at_3, tensorboard=board)
    result = train_gan(config, data, tmp_path / "m", tmp_path / "ck", tensorboard=board)
    events = EventAccumulator(str(board))
    events.Reload()
    for key in ("d_loss", "g_loss"):
        logged = {e["step"]: e[key] for e in result.history}
        seen = {s.step: s.value for s in events.Scalars(key)}
        assert sorted(seen) == [0, 1, 2, 3], "each step once, the resumed one too"
        assert all(seen[s] == pytest.approx(v, rel=1e-6) for s, v in logged.items())


def test_tensorboard_without_the_package_names_the_extra(pack, paths, monkeypatch):
    import importlib.util

    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.errors import WorkflowInvalid
    from comfyui_genart.graph.executor import Executor

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    emoji_like_folder(paths.input_dir / "data", size=16)
    prompt = {"1": {"class_type": "GenArtLoadImageFolder", "inputs": {"folder": "data", "resolution": 16}},
              "2": {"class_type": "GenArtTrainGAN", "inputs": {"dataset": ["1", 0], "tensorboard": True,
                                                               "g_channels": "16,8,8", "d_channels": "8,8,16"}}}
    with pytest.raises(WorkflowInvalid, match=r"pip install comfyui-genart\[tensorboard\]"):
        Executor(pack.REGISTRY, RunSettings(paths=paths)).run(prompt)


def test_training_can_start_from_a_generator(tmp_path, data):
    from comfyui_genart.core.gan_trainer import generator_settings, train_gan

    first = train_gan(tiny_config(steps=2), data, tmp_path / "a", tmp_path / "a-ck")
    settings = generator_settings(first.model)
    assert settings["g_channels"] == (16, 8, 8) and settings["z_dim"] == 16
    config = tiny_config(steps=1, seed=5, init_from="a")
    tuned = train_gan(config, data, tmp_path / "b", tmp_path / "b-ck", init_model=first.model)
    fresh = train_gan(tiny_config(steps=1, seed=5), data, tmp_path / "c", tmp_path / "c-ck")
    start = first.model.state_dict()

    def distance(model):
        return sum(float((v - start[k]).abs().sum()) for k, v in model.state_dict().items())

    # One Adam step (lr 2e-4) from the given weights stays next to them; a fresh seed-5 generator does not.
    assert 0 < distance(tuned.model) < 0.05 * distance(fresh.model)
    with pytest.raises(ValueError, match="z_dim: 16 vs 32"):
        train_gan(tiny_config(z_dim=32), data, tmp_path / "d", tmp_path / "d-ck", init_model=first.model)


def test_progress_bar_shows_both_losses():
    from comfyui_genart.nodes.train import progress_callback

    class Bar:
        def __init__(self):
            self.n, self.text = 0, ""

        def update(self, n=1):
            self.n += n

        def set_postfix_str(self, text, refresh=True):
            self.text = text

    class Checked:  # the engine's wrapper around the bar (graph.context._CheckedProgress)
        def __init__(self):
            self.inner = Bar()

        def update(self, n=1):
            self.inner.update(n)

    bar = Checked()
    on_step = progress_callback(bar, ("d_loss", "g_loss"))
    on_step(3, {"d_loss": 1.25, "g_loss": 0.5, "r1": 0.1})
    assert bar.inner.n == 3 and bar.inner.text == "d_loss=1.25 g_loss=0.5"
    progress_callback(Bar(), ("loss",))(1, {"loss": 2.0})  # a bar without the wrapper works too
