"""What both trainers share: checkpoints that resume bit for bit, EMA weights, the learning-rate
schedule, the run folder's log, and Hugging Face accelerate for one or many processes.

Determinism: no trainer draws from torch's global RNG. Every random choice (batch order, crops,
flips, noise, timesteps, codebook restarts) comes from a generator seeded by (seed, step, ...), so the
state to save is the step counter plus tensors; a run resumed from the checkpoint of step k goes on
exactly as the uninterrupted run would have.

Run folder layout (inside the output directory):
    <name>/                          the trained model, diffusers format (what the loaders read)
    <name>-checkpoints/step-NNNNNNN/ state.safetensors + trainer_state.json (written last)
    <name>-checkpoints/log.jsonl     one JSON line per step (losses, codebook usage, ...)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .files import share_modes
from .weights import read_safetensors

STATE_FILE = "state.safetensors"
META_FILE = "trainer_state.json"
LOG_FILE = "log.jsonl"
# Config fields that may change between a run and its resumption.
RESUMABLE_FIELDS = frozenset({"steps", "checkpoint_every", "keep_checkpoints", "num_workers"})

StepCallback = Callable[[int, dict[str, float]], None]


class ResumeMismatchError(ValueError):
    """A checkpoint was made with other settings than the run trying to resume from it."""


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))


def check_resumable(saved: dict[str, Any], current: Any, folder: Path) -> None:
    now = config_dict(current)
    # A setting added after the checkpoint was written counts as saved with its default value.
    defaults = {f.name: now[f.name] for f in fields(current) if f.default == getattr(current, f.name)}
    resumable = RESUMABLE_FIELDS - ({"steps"} if now.get("lr_schedule") == "cosine" else set())
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in resumable and saved.get(k, defaults.get(k)) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ResumeMismatchError(
            f"the checkpoints in {folder} were made with other settings ({detail}); only "
            f"{', '.join(sorted(resumable))} may change on resume. Use another filename_prefix for a "
            "new run, set those inputs back, or delete that folder to start over")


class Checkpoints:
    """Numbered checkpoint folders in `folder`, written atomically (temp folder, then rename)."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder, self.keep = folder, keep

    def _complete(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.glob("step-*"):
            if p.is_dir() and (p / META_FILE).is_file() and p.name[5:].isdigit():
                found.append((int(p.name[5:]), p))
        return sorted(found)

    def latest(self) -> tuple[int, Path] | None:
        done = self._complete()
        return done[-1] if done else None

    def save(self, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"step-{step:07d}"
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-step-", dir=self.folder))
        try:
            save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, str(tmp / STATE_FILE))
            (tmp / META_FILE).write_text(json.dumps({**meta, "step": step}, indent=1) + "\n")
            share_modes(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, old in self._complete()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    @staticmethod
    def load(path: Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return read_safetensors(path / STATE_FILE, device)[0], json.loads((path / META_FILE).read_text())


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    start = prefix + "."
    module.load_state_dict({k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}, strict=True)


def optimizer_state(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state split into tensors (for safetensors) and JSON (the rest); an optimizer that
    accelerate wrapped is unwrapped first."""
    sd = getattr(optimizer, "optimizer", optimizer).state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{pid}.{key}"] = value
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": plain}


def load_optimizer_state(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    start = prefix + "."
    for name, value in tensors.items():
        if name.startswith(start):
            pid, key = name[len(start):].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta["state"].items():
        state.setdefault(int(pid), {}).update(extra)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


class CheckpointCadence:
    """When a training loop checkpoints: every `every` steps before the last, and whenever the step
    callback raises (a cancel between two steps: ours, ComfyUI's or Ctrl-C), so that a resumed run
    loses no finished step."""

    def __init__(self, save: Callable[[int], None], every: int, total: int, start: int,
                 on_step: StepCallback | None) -> None:
        self.save, self.every, self.total, self.on_step = save, every, total, on_step
        self.saved = start

    def step_done(self, done: int, logs: dict[str, float]) -> None:
        if self.every and done % self.every == 0 and done < self.total:
            self.save(done)
            self.saved = done
        if self.on_step is not None:
            try:
                self.on_step(done, logs)
            except BaseException:
                if done > self.saved:
                    self.save(done)
                raise


class EMAWeights:
    """Exponential moving average of a model's parameters; decay warms up as min(decay, (1+n)/(10+n))."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def update(self, parameters: Iterable[torch.nn.Parameter], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, parameters, strict=True):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow, parameters, strict=True):
            p.copy_(s)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{i}": s for i, s in enumerate(self.shadow)}

    def load(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, s in enumerate(self.shadow):
                s.copy_(tensors[f"{prefix}.{i}"])


def learning_rate(base: float, step: int, warmup_steps: int, total_steps: int = 0) -> float:
    """Linear warm-up over `warmup_steps`, then constant, or (total_steps > 0) a cosine decay to zero
    at total_steps: a pure function of the step."""
    if warmup_steps > 0 and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if total_steps > warmup_steps:
        done = (step - warmup_steps) / (total_steps - warmup_steps)
        return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
    return base


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_accelerator(device: torch.device) -> Any:
    """An accelerate Accelerator: one process, or the processes `accelerate launch` started."""
    from accelerate import Accelerator

    return Accelerator(cpu=device.type == "cpu")


class RunLog:
    """The per-step log of a run; lines reach log.jsonl only with a checkpoint, so the file always
    matches the latest checkpoint and a resumed run's log equals an uninterrupted run's."""

    def __init__(self, folder: Path, resumed_step: int, tensorboard: Path | None = None) -> None:
        self.path = folder / LOG_FILE
        self.pending: list[dict[str, Any]] = []
        if self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) < resumed_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer: Any = None
        if tensorboard is not None:
            # TensorBoard event files beside the checkpoints, written with each checkpoint (watch them with
            # `tensorboard --logdir`); purge_step drops what a resumed run redoes.
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard), purge_step=resumed_step or None)

    def add(self, entry: dict[str, Any]) -> None:
        self.pending.append(entry)

    def flush(self) -> None:
        if self.pending:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.writelines(json.dumps(e) + "\n" for e in self.pending)
            if self.writer is not None:
                for entry in self.pending:
                    for key, value in entry.items():
                        if key != "step":
                            self.writer.add_scalar(key, value, entry["step"])
                self.writer.flush()
            self.pending.clear()

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def dataclass_from(cls: type, values: dict[str, Any]) -> Any:
    """A config dataclass from a dict, lists turned back into tuples where the field is a tuple."""
    out = {}
    for f in fields(cls):
        if f.name in values:
            v = values[f.name]
            out[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**out)


@dataclass
class TrainResult:
    """What a trainer returns: the trained model (eval mode), its log, and figures for the summary."""

    model: Any
    history: list[dict[str, Any]]
    summary: dict[str, Any]
