"""The ComfyUI side: V1 node classes and /object_info entries generated from node specs.

Nothing here imports ComfyUI at module level; inside ComfyUI the generated classes reach its
folder_paths, progress bar and interruption check lazily, at run time.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .context import RunContext, RunSettings
from .executor import invoke
from .node import Node
from .registry import Registry
from .safety import Paths
from .spec import NodeSpec

# ComfyUI fills hidden inputs by their value and passes them under their key: prefixed keys, so they
# can never shadow a node input (a text node's `prompt` widget was once overwritten by PROMPT).
HIDDEN = {"genart_prompt": "PROMPT", "genart_extra_pnginfo": "EXTRA_PNGINFO", "genart_unique_id": "UNIQUE_ID"}
# Our model kinds -> ComfyUI's folder_paths names that also hold such files.
COMFY_MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "vae": ("vae",), "unet": ("diffusion_models", "unet"),
    "checkpoints": ("checkpoints",), "text_encoders": ("text_encoders", "clip"),
}


def object_info_entry(spec: NodeSpec, python_module: str = "custom_nodes.ComfyUI-GenArt") -> dict[str, Any]:
    """The node as ComfyUI's GET /object_info describes it (used by the UI-format converter)."""
    types = spec.input_types()
    return {
        "input": {**types, "hidden": dict(HIDDEN)},
        "input_order": {section: list(entries) for section, entries in types.items()} | {"hidden": list(HIDDEN)},
        "output": [o.type for o in spec.outputs],
        "output_is_list": [False for _ in spec.outputs],
        "output_name": [o.name for o in spec.outputs],
        "output_tooltips": [o.description for o in spec.outputs],
        "name": spec.class_type,
        "display_name": spec.display_name,
        "description": spec.description,
        "python_module": python_module,
        "category": spec.category,
        "output_node": spec.output_node,
    }


def object_info(registry: Registry) -> dict[str, dict[str, Any]]:
    return {name: object_info_entry(cls.spec) for name, cls in registry.items()}


def comfyui_settings() -> RunSettings:
    """Run settings that use ComfyUI's folders, device, progress bar and interrupt flag."""
    import comfy.model_management as mm  # type: ignore[import-not-found]
    import folder_paths  # type: ignore[import-not-found]

    def extra_roots(kind: str) -> list[Path]:
        roots: list[Path] = []
        for name in COMFY_MODEL_FOLDERS.get(kind, (kind,)):
            try:
                roots.extend(Path(p) for p in folder_paths.get_folder_paths(name))
            except KeyError:  # a folder name this ComfyUI version does not know
                continue
        return roots

    paths = Paths(input_dir=Path(folder_paths.get_input_directory()),
                  output_dir=Path(folder_paths.get_output_directory()),
                  temp_dir=Path(folder_paths.get_temp_directory()),
                  models_dirs=[Path(folder_paths.models_dir)], extra_model_roots=extra_roots)
    return RunSettings(paths=paths, device=mm.get_torch_device(), progress_factory=_ComfyProgress,
                       interrupt_hook=mm.throw_exception_if_processing_interrupted)


class _ComfyProgress:
    def __init__(self, total: int, desc: str) -> None:
        import comfy.utils  # type: ignore[import-not-found]

        self.bar = comfy.utils.ProgressBar(total)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        pass


def _in_comfyui() -> bool:
    try:
        import folder_paths  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def comfy_class(cls: type[Node], settings_factory: Any = None) -> type:
    """A ComfyUI V1 node class for `cls`, generated from its spec."""
    spec = cls.spec
    get_settings = settings_factory or (comfyui_settings if _in_comfyui() else RunSettings)

    def input_types(_: type) -> dict[str, Any]:
        types = spec.input_types()
        settings = get_settings()
        for ins in spec.file_inputs:
            if ins.file is None or not ins.file.listed:
                continue
            section = "required" if ins.required else "optional"
            _, opts = types[section][ins.name]
            files = settings.paths.list_files(ins.file.folder, ins.file.extensions, ins.file.folders)
            if opts.get("default") not in files:  # a default file the user does not have: the list's first
                opts = {k: v for k, v in opts.items() if k != "default"}
            types[section][ins.name] = (files or [""], opts)
        return {**types, "hidden": dict(HIDDEN)}

    def is_changed(_: type, **kwargs: Any) -> Any:
        if not spec.cacheable:
            return math.nan
        settings = get_settings()
        parts = []
        for ins in spec.file_inputs:
            name = kwargs.get(ins.name)
            if isinstance(name, str) and name and ins.file is not None:
                from .cache import file_fingerprint

                parts.append(file_fingerprint(settings.paths.resolve_input(ins.file.folder, name)))
        return "|".join(parts)

    def execute(self: Any, genart_prompt: Any = None, genart_extra_pnginfo: Any = None,
                genart_unique_id: Any = None, **kwargs: Any) -> Any:
        pnginfo = genart_extra_pnginfo
        workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
        ctx = RunContext(get_settings(), str(genart_unique_id or ""), spec.class_type, genart_prompt, workflow)
        outputs, ui = invoke(cls, kwargs, ctx, validated=False)
        return {"ui": ui, "result": outputs} if ui else outputs

    attrs: dict[str, Any] = {
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(o.type for o in spec.outputs),
        "RETURN_NAMES": tuple(o.name for o in spec.outputs),
        "OUTPUT_TOOLTIPS": tuple(o.description for o in spec.outputs),
        "FUNCTION": "execute",
        "CATEGORY": spec.category,
        "DESCRIPTION": spec.description,
        "OUTPUT_NODE": spec.output_node,
        "execute": execute,
        "GENART_NODE": cls,
        "__doc__": spec.description,
    }
    if spec.file_inputs or not spec.cacheable:
        attrs["IS_CHANGED"] = classmethod(is_changed)
    if not spec.cacheable:
        attrs["NOT_IDEMPOTENT"] = True
    return type(spec.class_type, (), attrs)


def node_class_mappings(registry: Registry) -> tuple[dict[str, type], dict[str, str]]:
    """NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS; headless-only stand-ins are left out."""
    classes = {n: comfy_class(c) for n, c in registry.items() if not c.HEADLESS_ONLY}
    names = {n: registry.spec(n).display_name for n in classes}  # type: ignore[union-attr]
    return classes, names
