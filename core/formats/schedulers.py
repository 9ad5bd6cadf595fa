"""Diffusers noise schedulers, from a kind and its settings or from a scheduler_config.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ..handles import SchedulerHandle
from .common import ModelLoadError, read_json

SchedulerKind = Literal["DDPM", "DDIM", "Euler", "EulerAncestral", "DPMSolverMultistep", "UniPC", "LCM"]


SCHEDULER_CLASSES = {
    "DDPM": "DDPMScheduler", "DDIM": "DDIMScheduler", "Euler": "EulerDiscreteScheduler",
    "EulerAncestral": "EulerAncestralDiscreteScheduler", "DPMSolverMultistep": "DPMSolverMultistepScheduler",
    "UniPC": "UniPCMultistepScheduler", "LCM": "LCMScheduler",
}


CLIPPING_KINDS = ("DDPM", "DDIM", "LCM")  # the schedulers with a clip_sample option


def scheduler_handle(class_name: str, config: dict[str, Any], what: str) -> SchedulerHandle:
    """A handle for a diffusers scheduler class (only real scheduler classes; names come from files)."""
    import diffusers
    from diffusers import SchedulerMixin

    cls = getattr(diffusers, class_name, None) if class_name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ModelLoadError(f"{what}: {class_name!r} is not a diffusers scheduler class; use one such as "
                             "DDIMScheduler, EulerDiscreteScheduler or DPMSolverMultistepScheduler")
    try:  # fail here, not in the sampler, on a bad config
        scheduler = cls.from_config(config)
    except (TypeError, ValueError, NotImplementedError) as err:
        raise ModelLoadError(f"{what}: {class_name} refused its config: {err}") from err
    public = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return SchedulerHandle(class_name, public)


def find_scheduler_config(path: Path, name: str, input_name: str) -> Path:
    """scheduler_config.json in a scheduler folder, in a pipeline folder's scheduler/, or the file itself."""
    for candidate in (path, path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"{input_name} {name!r} holds no scheduler_config.json (nor scheduler/scheduler_config"
                         ".json); point it at a diffusers scheduler folder or its JSON file")


def load_scheduler_config(path: Path, name: str, input_name: str) -> SchedulerHandle:
    config = read_json(find_scheduler_config(path, name, input_name), input_name)
    class_name = config.get("_class_name")
    if not isinstance(class_name, str):
        raise ModelLoadError(f"{input_name} {name!r}: the scheduler config has no '_class_name'")
    return scheduler_handle(class_name, config, f"{input_name} {name!r}")
