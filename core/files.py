"""Files the library writes for users (model folders, checkpoints) get the modes a plain open() would give."""
from __future__ import annotations

import functools
import os
from pathlib import Path


@functools.cache
def default_modes() -> tuple[int, int]:
    """(file, folder) modes a plain open() / mkdir() gives under the process umask (0644 / 0755 usually).

    Temp files and folders are created private (0600 / 0700), and safetensors writes 0600 too; what we
    hand users gets these, as ComfyUI's own outputs have. Read on first use: reading the umask means
    setting it, which should not happen at import time.
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask, 0o777 & ~mask


def share_modes(path: Path) -> None:
    """Give `path` (a file, or a folder and everything in it) the default permissions."""
    file_mode, dir_mode = default_modes()
    if path.is_dir():
        os.chmod(path, dir_mode)
        for entry in path.rglob("*"):
            os.chmod(entry, dir_mode if entry.is_dir() else file_mode)
    else:
        os.chmod(path, file_mode)
