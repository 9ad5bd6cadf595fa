"""PGD iterations per second: our attack against torchattacks 3.5.1 on the same model, in the same run.

    python bench/attack_speed.py [--steps 20] [--repeat 15] [--threads N] [--device cpu|cuda]

Two comparisons, each run --repeat times in alternating pairs (ours, theirs; then theirs, ours):
  classifier   core.attacks.pgd with cross-entropy vs torchattacks.PGD on a small CNN (batch 32, 3x32x32);
               the outputs are also checked bit-identical (CPU).
  encoder      the GenArt Attack Encoder PGD node (run as the engine runs it: model handed out under
               inference mode, so the node copies it first) vs torchattacks.PGD on the same autoencoder's
               encoder, wrapped to return its latent as logits (batch 4, 3x32x32, tiny KL autoencoder).
Prints iterations per second (best run) and the ratio ours / torchattacks: the median over the pairs of
(their time / our time), with its quartiles. Both run the same arithmetic on the same model, so the model's
forward and backward are nearly all the time; the quartiles show how much of the ratio is noise.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from graph.run import load_pack

load_pack()
import torchattacks  # noqa: E402
from tiny_models import tiny_kl  # noqa: E402

from comfyui_genart.core import attacks  # noqa: E402
from comfyui_genart.core.handles import AutoencoderHandle  # noqa: E402
from comfyui_genart.graph.context import RunContext, RunSettings  # noqa: E402
from comfyui_genart.graph.executor import invoke  # noqa: E402
from comfyui_genart.graph.registry import Registry  # noqa: E402
from comfyui_genart.nodes import attack  # noqa: E402


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 10)).eval()


class LatentAsLogits(nn.Module):
    """An autoencoder's encoder seen as a classifier: the flattened posterior mean as logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x * 2 - 1).latent_dist.mean.flatten(1)


def paired_runs(repeat: int, ours: Callable[[], object], theirs: Callable[[], object]) -> list[tuple[float, float]]:
    """(our seconds, their seconds) for `repeat` back-to-back pairs, taking turns to go first, so load drifts
    and warm caches favour neither and each ratio compares runs made under the same load."""
    pairs = []
    for r in range(repeat):
        order = [ours, theirs] if r % 2 == 0 else [theirs, ours]
        seconds = {}
        for fn in order:
            start = time.perf_counter()
            fn()
            seconds[fn] = time.perf_counter() - start
        pairs.append((seconds[ours], seconds[theirs]))
    return pairs


def report(title: str, steps: int, pairs: list[tuple[float, float]]) -> float:
    ours = steps / min(o for o, _ in pairs)
    theirs = steps / min(t for _, t in pairs)
    ratios = sorted(t / o for o, t in pairs)
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"{title:<11} ours {ours:8.1f} it/s   torchattacks {theirs:8.1f} it/s   "
          f"ratio {median:.3f}x (quartiles {q1:.3f}-{q3:.3f})")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    eps, alpha, steps = 8 / 255, 2 / 255, args.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {steps} PGD steps")

    model = classifier().to(device)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(32, 3, 32, 32, generator=g).to(device)
    labels = torch.randint(0, 10, (32,), generator=g).to(device)
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), labels)

    def ours() -> torch.Tensor:
        return attacks.pgd(images, loss, eps=eps, step_size=alpha, steps=steps,
                               generator=torch.Generator().manual_seed(0))

    def theirs() -> torch.Tensor:
        torch.manual_seed(0)
        return ta(images, labels)

    if device.type == "cpu":
        assert torch.equal(ours(), theirs()), "not bit-identical to torchattacks"
    ratios = [report("classifier", steps, paired_runs(args.repeat, ours, theirs))]

    with torch.inference_mode():  # as a loader node hands it out
        handle = AutoencoderHandle(tiny_kl().to(device).requires_grad_(False))
    plain = tiny_kl().to(device).requires_grad_(False)
    wrapped = LatentAsLogits(plain).eval()
    small = torch.rand(4, 32, 32, 3, generator=g)
    nchw = small.movedim(-1, 1).contiguous().to(device)  # a strided view would send torchattacks down
    # the channels-last convolution kernels (its random start keeps the strides), a different computation
    with torch.no_grad():
        latent_labels = torch.zeros(4, dtype=torch.long, device=device)
    ta_enc = torchattacks.PGD(wrapped, eps=eps, alpha=alpha, steps=steps, random_start=True)
    registry = Registry()
    registry.register(attack.AttackEncoderPGD)
    cls = attack.AttackEncoderPGD
    inputs = {**cls.spec.defaults, "image": small.to(device), "autoencoder": handle, "eps": eps,
              "step_size": alpha, "steps": steps}
    ctx = RunContext(RunSettings(device=device))

    def node() -> object:
        with torch.inference_mode():  # the engine runs a workflow there; invoke leaves it for NEEDS_GRAD nodes
            return invoke(cls, dict(inputs), ctx)

    def reference() -> torch.Tensor:
        torch.manual_seed(0)
        return ta_enc(nchw, latent_labels)

    ratios.append(report("encoder", steps, paired_runs(args.repeat, node, reference)))
    print(f"min median ratio {min(ratios):.3f}x (target >= 1.0)")


if __name__ == "__main__":
    main()
