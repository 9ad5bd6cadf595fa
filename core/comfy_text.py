"""ComfyUI's CLIPTextEncode for SD 1.x on a transformers CLIP: prompt weights, 77-token chunks, the CONDITIONING list.

Matched (ComfyUI v0.3.64, `comfy/sd1_clip.py`): "(text)" weighs 1.1 per level, "(text:w)" sets w, "\\(" and "\\)"
are literal; each weighted segment is tokenized whole; tokens go into chunks of 75 between the start and end
tokens (a word of fewer than 8 tokens that does not fit moves to the next chunk), padded with the end token to
77; all chunks are encoded in one batch (final layer norm, no attention mask), a weighted token becomes
(z - z_empty) * w + z_empty with z_empty the empty prompt's embedding; chunks are concatenated along the tokens.
Not matched: textual-inversion embeddings ("embedding:name"), which are refused.
"""
from __future__ import annotations

from typing import Any

import torch

from .handles import TextEncoderHandle

MAX_LENGTH = 77
MAX_WORD_LENGTH = 8


def _parse_parentheses(string: str) -> list[str]:
    result, current, level = [], "", 0
    for char in string:
        if char == "(":
            if level == 0:
                if current:
                    result.append(current)
                current = "("
            else:
                current += char
            level += 1
        elif char == ")":
            level -= 1
            if level == 0:
                result.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        result.append(current)
    return result


def token_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """(segment, weight) pairs of a prompt, as ComfyUI parses its parentheses."""
    out: list[tuple[str, float]] = []
    for part in _parse_parentheses(text):
        w = weight
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            inner = part[1:-1]
            colon = inner.rfind(":")
            w *= 1.1
            if colon > 0:
                try:
                    w = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out += token_weights(inner, w)
        else:
            out.append((part, weight))
    return out


def tokenize_with_weights(tokenizer: Any, text: str) -> list[list[tuple[int, float]]]:
    """Chunks of 77 (token id, weight) pairs, ComfyUI's SD1Tokenizer layout."""
    if "embedding:" in text:
        raise ValueError("input 'text' names a textual-inversion embedding ('embedding:...'), which the headless "
                         "CLIP Text Encode does not load; remove it or run the workflow inside ComfyUI")
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    text = text.replace("\\)", "\0\1").replace("\\(", "\0\2")
    groups = []
    for segment, weight in token_weights(text):
        segment = segment.replace("\0\1", ")").replace("\0\2", "(")
        if segment:
            groups.append([(t, weight) for t in tokenizer(segment)["input_ids"][1:-1]])
    batch: list[tuple[int, float]] = [(start, 1.0)]
    batches = [batch]
    for group in groups:
        is_large = len(group) >= MAX_WORD_LENGTH
        while group:
            if len(group) + len(batch) > MAX_LENGTH - 1:
                remaining = MAX_LENGTH - len(batch) - 1
                if is_large:
                    batch.extend(group[:remaining])
                    batch.append((end, 1.0))
                    group = group[remaining:]
                else:
                    batch.append((end, 1.0))
                    batch.extend([(end, 1.0)] * remaining)
                batch = [(start, 1.0)]
                batches.append(batch)
            else:
                batch.extend(group)
                group = []
    batch.append((end, 1.0))
    batch.extend([(end, 1.0)] * (MAX_LENGTH - len(batch)))
    return batches


def encode_prompt(handle: TextEncoderHandle, text: str) -> list[list[Any]]:
    """ComfyUI's CONDITIONING for `text`: [[embeddings [1, 77 * chunks, dim] float32, {"pooled_output": [1, dim]}]]."""
    chunks = tokenize_with_weights(handle.tokenizer, text)
    weighted = any(w != 1.0 for chunk in chunks for _, w in chunk)
    ids = [[t for t, _ in chunk] for chunk in chunks]
    if weighted:
        eos = handle.tokenizer.eos_token_id
        ids.append([handle.tokenizer.bos_token_id, eos] + [eos] * (MAX_LENGTH - 2))
    out = handle.text_encoder(torch.tensor(ids, device=handle.device))
    hidden, pooled = out.last_hidden_state.float(), out.pooler_output.float()
    parts = []
    for k, chunk in enumerate(chunks):
        z = hidden[k:k + 1].clone()
        if weighted:
            empty = hidden[-1]
            for j, (_, w) in enumerate(chunk):
                if w != 1.0:
                    z[0, j] = (z[0, j] - empty[j]) * w + empty[j]
        parts.append(z)
    return [[torch.cat(parts, dim=-2).cpu(), {"pooled_output": pooled[0:1].cpu()}]]
