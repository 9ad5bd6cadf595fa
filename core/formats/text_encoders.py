"""CLIP text encoders and their tokenizers, from a folder or a pipeline's text_encoder/ and tokenizer/."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import ModelLoadError, read_json

TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))


def find_text_encoder(path: Path, name: str, input_name: str) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder): one folder holding both, or a pipeline's text_encoder/ + tokenizer/."""
    if not path.is_dir():
        raise ModelLoadError(f"{input_name} {name!r} is a file; a CLIP text encoder is a folder (config.json, "
                             "weights, vocab.json + merges.txt)")
    if (path / "config.json").is_file():
        encoder, tokenizer = path, path
    elif (path / "text_encoder" / "config.json").is_file():
        encoder, tokenizer = path / "text_encoder", path / "tokenizer"
    else:
        raise ModelLoadError(f"{input_name} {name!r} holds neither config.json nor text_encoder/config.json")
    config = read_json(encoder / "config.json", input_name)
    model_type = config.get("model_type")
    if model_type not in ("clip_text_model", "clip"):
        found = model_type or config.get("_class_name") or "unknown"
        raise ModelLoadError(f"{input_name} {name!r} holds a model of type {found}; this node loads CLIP text "
                             "encoders (model_type 'clip_text_model')")
    if not any(all((tokenizer / f).is_file() for f in files) for files in TOKENIZER_FILES):
        raise ModelLoadError(f"{input_name} {name!r}: no CLIP tokenizer in {tokenizer} (needs vocab.json + "
                             "merges.txt, or tokenizer.json)")
    return encoder, tokenizer


def load_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
