"""Model loaders and the save node: bit-exact round trips, schedulers equal to diffusers', SD 1.x
single-file checkpoints (built here in the LDM layout from tiny diffusers models) loaded with the network
blocked, and clear errors for bad inputs. Every test runs with sockets refused."""
from __future__ import annotations

import copy
import json
import logging
import shutil
import socket
from pathlib import Path

import pytest
import torch
from tiny_models import COND_UNET_CONFIG, KL_CONFIG, tiny_clip, write_all

from comfyui_genart.core.formats.sd1_export import clip_to_ldm, unet_to_ldm, vae_to_ldm

SD15_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}  # published SD 1.5 sizes


class NetworkAttempt(OSError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse and record every connection or DNS lookup; a test that tried one fails at teardown."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise NetworkAttempt(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield attempts
    assert not attempts, f"the test tried to reach the network: {attempts}"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP threads spin for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    write_all(root)
    return root


@pytest.fixture()
def mpaths(paths, tiny_dir):
    """Paths with two models folders: this test's own (writable) and the shared tiny models."""
    paths.models_dirs = [paths.models_dirs[0], tiny_dir]
    return paths


def ctx_for(paths, class_type="GenArtTest"):
    from comfyui_genart.graph.context import RunContext, RunSettings

    return RunContext(RunSettings(paths=paths), "1", class_type)


def run_node(paths, class_type, **inputs):
    """Validate (field types, check_constants) and run one node inside inference mode, as the engine does."""
    from comfyui_genart.graph.executor import invoke
    from comfyui_genart.nodes import REGISTRY

    cls = REGISTRY.get(class_type)
    ctx = ctx_for(paths, class_type)
    problems = cls.check_constants({**cls.spec.defaults, **inputs}, ctx)
    if problems:
        raise ValueError("; ".join(f"{name}: {msg}" for name, msg in problems))
    with torch.inference_mode():
        outputs, _ = invoke(cls, inputs, ctx, validated=False)
    return outputs


def executor(paths):
    from comfyui_genart.graph.cache import OutputCache
    from comfyui_genart.graph.context import RunSettings
    from comfyui_genart.graph.executor import Executor
    from comfyui_genart.nodes import REGISTRY

    return Executor(REGISTRY, RunSettings(paths=paths), cache=OutputCache())


def owned(model):
    """`model` with its weights copied into torch's own (aligned) memory: from_pretrained leaves them in a
    memory map at addresses that follow the file layout, where CPU kernels round differently."""
    return copy.deepcopy(model)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def forward(model, seed=0):
    """A deterministic output of any of the tiny models, for bit-exact comparisons."""
    g = torch.Generator().manual_seed(seed)
    name = type(model).__name__
    with torch.no_grad():
        if name == "VQModel":
            h = model.encode(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1).latents
            return model.decode(h).sample
        if name == "AutoencoderKL":
            z = model.encode(torch.rand(1, 3, 32, 32, generator=g) * 2 - 1).latent_dist.mean
            return torch.cat([z.flatten(), model.decode(z).sample.flatten()])
        sample = torch.randn(1, 4, 16, 16, generator=g)
        if name == "UNet2DConditionModel":
            cond = torch.randn(1, 5, model.config.cross_attention_dim, generator=g)
            return model(sample, 500, encoder_hidden_states=cond).sample
        return model(sample, 500).sample


LOADERS = {  # tiny model folder -> (loader, output field, diffusers class)
    "vqgan/tiny-vq": ("GenArtLoadVQModel", "VQModel"),
    "vae/tiny-kl": ("GenArtLoadAutoencoder", "AutoencoderKL"),
    "unet/tiny-unet": ("GenArtLoadDenoiser", "UNet2DModel"),
    "unet/tiny-cond-unet": ("GenArtLoadDenoiser", "UNet2DConditionModel"),
}


def test_models_network_guard_catches_connections(no_network):
    import urllib.request

    with pytest.raises(OSError, match="network access attempted"):
        urllib.request.urlopen("https://huggingface.co/api/models", timeout=5)
    assert no_network, "the guard did not see the connection attempt"
    no_network.clear()


@pytest.mark.parametrize("folder", list(LOADERS))
def test_models_diffusers_folder_loads_bit_exactly(mpaths, tiny_dir, folder):
    import diffusers

    class_type, class_name = LOADERS[folder]
    name = folder.split("/")[1]
    reference = owned(getattr(diffusers, class_name).from_pretrained(tiny_dir / folder, local_files_only=True))
    warnings: list[logging.LogRecord] = []
    listener = logging.Handler(logging.WARNING)
    listener.emit = warnings.append  # diffusers' logger does not propagate to pytest's caplog
    logging.getLogger("diffusers").addHandler(listener)
    try:
        (handle,) = run_node(mpaths, class_type, model_name=name)
    finally:
        logging.getLogger("diffusers").removeHandler(listener)
    assert not [w.getMessage() for w in warnings], "loading a model should print no diffusers warnings"
    assert type(handle.model).__name__ == class_name
    assert not handle.model.training and not any(p.requires_grad for p in handle.model.parameters())
    assert not any(p.is_inference() for p in handle.model.parameters()), "weights must be usable by autograd nodes"
    assert handle.source == folder
    assert_same_weights(reference, handle.model)
    assert torch.equal(forward(reference), forward(handle.model))


@pytest.mark.parametrize("folder", list(LOADERS))
def test_models_save_node_single_file_round_trips_bit_exactly(mpaths, tiny_dir, folder):
    import diffusers
    from safetensors import safe_open

    class_type, class_name = LOADERS[folder]
    kind, name = folder.split("/")
    socket_name = {"GenArtLoadVQModel": "vqmodel", "GenArtLoadAutoencoder": "autoencoder",
                   "GenArtLoadDenoiser": "denoiser"}[class_type]
    prompt = {"1": {"class_type": class_type, "inputs": {"model_name": name}},
              "2": {"class_type": "GenArtSaveModel", "inputs": {socket_name: ["1", 0], "filename_prefix": "rt/tiny"}}}
    report = executor(mpaths).run(prompt)
    saved = report.ui["2"]["models"]
    assert [(s["filename"], s["subfolder"], s["kind"], s["class_name"]) for s in saved] == [
        (f"tiny_{socket_name}_00001_.safetensors", "rt", socket_name, class_name)]
    file = mpaths.output_dir / "rt" / saved[0]["filename"]
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata()
    assert meta["class_name"] == class_name and json.loads(meta["config"])["_class_name"] == class_name

    (mpaths.models_dirs[0] / kind).mkdir()
    shutil.copy(file, mpaths.models_dirs[0] / kind / "saved.safetensors")
    (handle,) = run_node(mpaths, class_type, model_name="saved.safetensors")
    reference = owned(getattr(diffusers, class_name).from_pretrained(tiny_dir / folder, local_files_only=True))
    assert type(handle.model).__name__ == class_name
    assert_same_weights(reference, handle.model)
    assert torch.equal(forward(reference), forward(handle.model))

    executor(mpaths).run(prompt)  # a second save never overwrites the first
    assert sorted(p.name for p in (mpaths.output_dir / "rt").iterdir()) == [
        f"tiny_{socket_name}_00001_.safetensors", f"tiny_{socket_name}_00002_.safetensors"]


def test_models_save_node_writes_each_connected_model(mpaths):
    prompt = {"1": {"class_type": "GenArtLoadVQModel", "inputs": {"model_name": "tiny-vq"}},
              "2": {"class_type": "GenArtLoadDenoiser", "inputs": {"model_name": "tiny-unet"}},
              "3": {"class_type": "GenArtSaveModel", "inputs": {"vqmodel": ["1", 0], "denoiser": ["2", 0],
                                                                "filename_prefix": "pair"}}}
    saved = executor(mpaths).run(prompt).ui["3"]["models"]
    assert [s["filename"] for s in saved] == ["pair_vqmodel_00001_.safetensors", "pair_denoiser_00001_.safetensors"]


def test_models_save_node_without_models_is_refused(mpaths):
    from comfyui_genart.graph.errors import NodeExecutionError

    with pytest.raises(NodeExecutionError, match="connect at least one of vqmodel, autoencoder or denoiser"):
        executor(mpaths).run({"1": {"class_type": "GenArtSaveModel", "inputs": {"filename_prefix": "x"}}})


def test_models_denoiser_carries_latent_scale_and_dtype(mpaths):
    (handle,) = run_node(mpaths, "GenArtLoadDenoiser", model_name="tiny-cond-unet", latent_scale=0.18215,
                         dtype="bfloat16")
    assert handle.latent_scale == 0.18215 and handle.conditional
    assert handle.dtype == torch.bfloat16 and handle.device == torch.device("cpu")
    assert handle.prediction_type is None, "a plain UNet folder does not say what it predicts"


def test_models_denoiser_knows_its_prediction_type_where_its_folder_says(mpaths, tiny_dir):
    (shipped,) = run_node(mpaths, "GenArtLoadDenoiser", model_name="genart-emoji32", latent_scale=0.87034)
    assert shipped.prediction_type == "v_prediction"  # from genart_training.json
    pipe = mpaths.models_dirs[0] / "unet" / "v-pipe"
    shutil.copytree(tiny_dir / "unet" / "tiny-unet", pipe / "unet")
    (pipe / "scheduler").mkdir()
    (pipe / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}))
    (pipe / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DModel"],
                                                       "scheduler": ["diffusers", "DDIMScheduler"]}))
    (handle,) = run_node(mpaths, "GenArtLoadDenoiser", model_name="v-pipe")
    assert handle.prediction_type == "v_prediction"  # from the pipeline's scheduler, as diffusers reads it


def test_models_denoiser_latent_scale_auto_reads_what_the_folder_records(mpaths, tiny_dir):
    from conftest import REPO

    recorded = json.loads((REPO / "models" / "unet" / "genart-emoji32" / "genart_training.json").read_text())
    (shipped,) = run_node(mpaths, "GenArtLoadDenoiser", model_name="genart-emoji32", latent_scale=0.0)
    assert shipped.latent_scale == recorded["latent_scale"]  # genart_training.json
    (typed,) = run_node(mpaths, "GenArtLoadDenoiser", model_name="genart-emoji32", latent_scale=0.5)
    assert typed.latent_scale == 0.5, "a value typed in wins"
    pipe = mpaths.models_dirs[0] / "unet" / "ldm-pipe"
    shutil.copytree(tiny_dir / "unet" / "tiny-unet", pipe / "unet")
    (pipe / "vqvae").mkdir()
    (pipe / "vqvae" / "config.json").write_text(json.dumps({"_class_name": "VQModel", "scaling_factor": 0.25}))
    (pipe / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DModel"],
                                                       "vqvae": ["diffusers", "VQModel"]}))
    (handle,) = run_node(mpaths, "GenArtLoadDenoiser", model_name="ldm-pipe")
    assert handle.latent_scale == 0.25  # the pipeline's autoencoder, as diffusers' pipelines read it
    (bare,) = run_node(mpaths, "GenArtLoadDenoiser", model_name="tiny-unet")
    assert bare.latent_scale == 1.0, "nothing recorded: raw latents"


def test_models_pipeline_folder_gives_its_component(mpaths, tiny_dir):
    pipe = mpaths.models_dirs[0] / "vae" / "pipe"
    shutil.copytree(tiny_dir / "vae" / "tiny-kl", pipe / "vae")
    shutil.copytree(tiny_dir / "unet" / "tiny-cond-unet", pipe / "unet")
    (pipe / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"], "safety_checker": [None, None]}))
    (vae,) = run_node(mpaths, "GenArtLoadAutoencoder", model_name="pipe")
    assert type(vae.model).__name__ == "AutoencoderKL"
    shutil.copytree(pipe, mpaths.models_dirs[0] / "unet" / "pipe")
    (unet,) = run_node(mpaths, "GenArtLoadDenoiser", model_name="pipe")
    assert type(unet.model).__name__ == "UNet2DConditionModel"
    shutil.copytree(pipe, mpaths.models_dirs[0] / "vqgan" / "pipe")
    with pytest.raises(ValueError, match=r"pipeline folder without a VQModel component \(it has: vae"):
        run_node(mpaths, "GenArtLoadVQModel", model_name="pipe")


def test_models_text_encoder_loads_bit_exactly(mpaths, tiny_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = tiny_dir / "text_encoders" / "tiny-clip"
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    encoder = owned(CLIPTextModel.from_pretrained(str(folder), local_files_only=True).eval())
    (handle,) = run_node(mpaths, "GenArtLoadTextEncoder", model_name="tiny-clip")
    prompts = ["a photo of a cat", "red star"]
    ids = handle.tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids)
    assert_same_weights(encoder, handle.text_encoder)
    with torch.no_grad():
        assert torch.equal(encoder(ids).last_hidden_state, handle.text_encoder(ids).last_hidden_state)
    assert not handle.text_encoder.training


# ---------------------------------------------------------------------------------------------------
# Schedulers

KINDS = {"DDPM": "DDPMScheduler", "DDIM": "DDIMScheduler", "Euler": "EulerDiscreteScheduler",
         "EulerAncestral": "EulerAncestralDiscreteScheduler", "DPMSolverMultistep": "DPMSolverMultistepScheduler",
         "UniPC": "UniPCMultistepScheduler", "LCM": "LCMScheduler"}


def public(config):
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


@pytest.mark.parametrize("kind", list(KINDS))
def test_models_scheduler_kind_equals_diffusers_from_config(mpaths, kind):
    import diffusers

    settings = dict(num_train_timesteps=800, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                    prediction_type="v_prediction")
    (handle,) = run_node(mpaths, "GenArtLoadScheduler", kind=kind, **settings)
    extra = {"clip_sample": False} if kind in ("DDPM", "DDIM", "LCM") else {}
    reference = getattr(diffusers, KINDS[kind]).from_config({**settings, **extra})
    fresh = handle.fresh()
    assert handle.class_name == KINDS[kind] and type(fresh) is type(reference)
    assert public(fresh.config) == public(reference.config)
    fresh.set_timesteps(10)
    reference.set_timesteps(10)
    assert torch.equal(fresh.timesteps, reference.timesteps)
    assert handle.fresh() is not fresh  # every user gets its own (stateful schedulers)


def test_models_scheduler_clip_sample_only_where_it_exists(mpaths):
    (ddim,) = run_node(mpaths, "GenArtLoadScheduler", kind="DDIM", clip_sample=True)
    assert ddim.fresh().config.clip_sample is True
    assert run_node(mpaths, "GenArtLoadScheduler", kind="DDIM")[0].fresh().config.clip_sample is False
    with pytest.raises(ValueError, match="clip_sample=True has no effect on Euler"):
        run_node(mpaths, "GenArtLoadScheduler", kind="Euler", clip_sample=True)
    with pytest.raises(ValueError, match=r"beta_end 0\.001 must be larger than beta_start 0\.01"):
        run_node(mpaths, "GenArtLoadScheduler", beta_start=0.01, beta_end=0.001)


def test_models_scheduler_folder_equals_from_pretrained(mpaths):
    import diffusers

    folder = mpaths.models_dirs[0] / "schedulers" / "my-euler"
    diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", timestep_spacing="trailing",
                                     steps_offset=1).save_config(folder)
    for name in ("my-euler", "my-euler/scheduler_config.json"):
        (handle,) = run_node(mpaths, "GenArtLoadSchedulerConfig", scheduler_name=name)
        reference = diffusers.EulerDiscreteScheduler.from_pretrained(folder, local_files_only=True)
        assert handle.class_name == "EulerDiscreteScheduler"
        assert public(handle.fresh().config) == public(reference.config)
        handle_steps, reference_steps = handle.fresh(), reference
        handle_steps.set_timesteps(7)
        reference_steps.set_timesteps(7)
        assert torch.equal(handle_steps.timesteps, reference_steps.timesteps)


def test_models_scheduler_folder_refuses_non_scheduler_class(mpaths):
    folder = mpaths.models_dirs[0] / "schedulers" / "evil"
    folder.mkdir(parents=True)
    (folder / "scheduler_config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="'UNet2DModel' is not a diffusers scheduler class"):
        run_node(mpaths, "GenArtLoadSchedulerConfig", scheduler_name="evil")


# ---------------------------------------------------------------------------------------------------
# Stable Diffusion 1.x single-file checkpoints: the LDM key layout, written from the tiny diffusers models

SD_UNET = {**COND_UNET_CONFIG, "block_out_channels": (16, 32, 32), "layers_per_block": 2,
           "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
           "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")}
SD_VAE = {**KL_CONFIG, "block_out_channels": (16, 32, 32), "layers_per_block": 2, "scaling_factor": 0.18215,
          "down_block_types": ("DownEncoderBlock2D",) * 3, "up_block_types": ("UpDecoderBlock2D",) * 3}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """Tiny SD 1.x-shaped models (two layers per level, attention + upsampler levels) and their config folder."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    root = tmp_path_factory.mktemp("tiny-sd")
    config = root / "configs" / "tiny-sd"
    torch.manual_seed(10)
    unet = UNet2DConditionModel(**SD_UNET).eval()
    vae = AutoencoderKL(**SD_VAE).eval()
    tokenizer, clip = tiny_clip(root / "vocab")
    unet.save_config(config / "unet")
    vae.save_config(config / "vae")
    clip.config.save_pretrained(config / "text_encoder")
    tokenizer.save_pretrained(config / "tokenizer")
    shutil.copy(Path(__file__).resolve().parents[1] / "models/configs/stable-diffusion-v1-5/model_index.json", config)
    PNDMScheduler.from_pretrained(Path(__file__).resolve().parents[1] / "models/configs/stable-diffusion-v1-5",
                                  subfolder="scheduler", local_files_only=True).save_config(config / "scheduler")
    return {"root": root, "unet": unet, "vae": vae, "clip": clip, "tokenizer": tokenizer}


def ldm_checkpoint(tiny_sd, with_text_model=True, ema_unet=None):
    state = {**unet_to_ldm(tiny_sd["unet"].state_dict(), SD_UNET),
             **vae_to_ldm(tiny_sd["vae"].state_dict(), SD_VAE),
             **clip_to_ldm(tiny_sd["clip"].state_dict(), with_text_model),
             "alphas_cumprod": torch.linspace(1, 0, 1000), "model_ema.decay": torch.tensor(0.9999)}
    if ema_unet is not None:
        for key, value in unet_to_ldm(ema_unet.state_dict(), SD_UNET).items():
            state["model_ema." + key.removeprefix("model.").replace(".", "")] = value
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


@pytest.fixture()
def sd_paths(mpaths, tiny_sd):
    shutil.copytree(tiny_sd["root"] / "configs", mpaths.models_dirs[0] / "configs")
    (mpaths.models_dirs[0] / "checkpoints").mkdir()
    return mpaths


def write_checkpoint(paths, state, name):
    from safetensors.torch import save_file

    path = paths.models_dirs[0] / "checkpoints" / name
    if name.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 470000}, path)
    return path


def assert_close_outputs(tiny_sd, vae, denoiser, text_encoder):
    prompts = ["a photo of a cat", "a blue star"]
    ids = tiny_sd["tokenizer"](prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(text_encoder.tokenizer(prompts, padding="max_length", max_length=77,
                                              return_tensors="pt").input_ids, ids)
    with torch.no_grad():
        cond = tiny_sd["clip"](ids).last_hidden_state
        torch.testing.assert_close(text_encoder.text_encoder(ids).last_hidden_state, cond, atol=1e-5, rtol=0)
        sample = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(denoiser.model(sample, 321, encoder_hidden_states=cond).sample,
                                   tiny_sd["unet"](sample, 321, encoder_hidden_states=cond).sample, atol=1e-5, rtol=0)
        torch.testing.assert_close(forward(vae.model), forward(tiny_sd["vae"]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "with_text_model"), [("tiny-sd.safetensors", True),
                                                       ("tiny-sd-old-clip-keys.safetensors", False),
                                                       ("tiny-sd.ckpt", True)])
def test_models_sd15_checkpoint_loads_offline_and_matches_diffusers(sd_paths, tiny_sd, no_network, name,
                                                                    with_text_model):
    write_checkpoint(sd_paths, ldm_checkpoint(tiny_sd, with_text_model), name)
    vae, denoiser, text_encoder, scheduler = run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name=name,
                                                      config="tiny-sd")
    assert not no_network
    assert_same_weights(tiny_sd["unet"], denoiser.model)
    assert_same_weights(tiny_sd["vae"], vae.model)
    assert_same_weights(tiny_sd["clip"], text_encoder.text_encoder)
    assert_close_outputs(tiny_sd, vae, denoiser, text_encoder)
    assert denoiser.latent_scale == 0.18215 and denoiser.source == f"checkpoints/{name}"
    assert denoiser.prediction_type == "epsilon", "SD 1.x predicts noise: a v-prediction scheduler is refused"
    assert scheduler.class_name == "PNDMScheduler" and scheduler.config["steps_offset"] == 1
    for model in (vae.model, denoiser.model, text_encoder.text_encoder):
        assert not model.training and not any(p.requires_grad or p.is_inference() for p in model.parameters())


def test_models_sd15_checkpoint_equals_diffusers_from_single_file(sd_paths, tiny_sd, no_network):
    """diffusers' own single-file loader, given the local config folder, reads the same weights offline."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    path = write_checkpoint(sd_paths, ldm_checkpoint(tiny_sd), "tiny-sd.safetensors")
    config = str(sd_paths.models_dirs[0] / "configs" / "tiny-sd")
    vae, denoiser, text_encoder, _ = run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name=path.name,
                                              config="tiny-sd")
    assert_same_weights(UNet2DConditionModel.from_single_file(str(path), config=config, subfolder="unet",
                                                              local_files_only=True), denoiser.model)
    assert_same_weights(AutoencoderKL.from_single_file(str(path), config=config, subfolder="vae",
                                                       local_files_only=True), vae.model)
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=config, local_files_only=True,
                                                    safety_checker=None, feature_extractor=None)
    assert_same_weights(pipe.text_encoder, text_encoder.text_encoder)
    assert not no_network


def test_models_sd15_use_ema_loads_the_ema_unet(sd_paths, tiny_sd):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(11)
    ema = UNet2DConditionModel(**SD_UNET).eval()
    write_checkpoint(sd_paths, ldm_checkpoint(tiny_sd, ema_unet=ema), "both.safetensors")
    _, plain, _, _ = run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="both.safetensors", config="tiny-sd")
    _, averaged, _, _ = run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="both.safetensors",
                                 config="tiny-sd", use_ema=True)
    assert_same_weights(tiny_sd["unet"], plain.model)
    assert_same_weights(ema, averaged.model)
    write_checkpoint(sd_paths, ldm_checkpoint(tiny_sd), "no-ema.safetensors")
    with pytest.raises(ValueError, match=r"use_ema is on but ckpt_name 'no-ema\.safetensors' has no EMA copy"):
        run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="no-ema.safetensors", config="tiny-sd",
                 use_ema=True)


class Callback:
    """Stands for the training objects (Lightning callbacks, hparams) that pickled checkpoints carry."""


def test_models_ckpt_with_non_tensor_pickle_is_refused(sd_paths, tiny_sd):
    from comfyui_genart.core.weights import UnsafeWeightsError

    path = sd_paths.models_dirs[0] / "checkpoints" / "pickled.ckpt"
    torch.save({"state_dict": ldm_checkpoint(tiny_sd), "callbacks": Callback()}, path)
    with pytest.raises(UnsafeWeightsError, match="holds more than tensors"):
        run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="pickled.ckpt", config="tiny-sd")


def test_models_sd15_checkpoint_errors_name_the_problem(sd_paths, tiny_sd):
    from comfyui_genart.core.formats.common import ModelLoadError

    state = ldm_checkpoint(tiny_sd)
    sd2 = {k.replace("cond_stage_model.transformer.", "cond_stage_model.model."): v for k, v in state.items()}
    write_checkpoint(sd_paths, sd2, "sd2.safetensors")
    with pytest.raises(ModelLoadError, match=r"no CLIP text encoder weights under 'cond_stage_model.transformer.'.*"
                                             r"SD 2.x keeps OpenCLIP"):
        run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="sd2.safetensors", config="tiny-sd")
    partial = dict(state)
    del partial["model.diffusion_model.output_blocks.2.1.conv.weight"]
    write_checkpoint(sd_paths, partial, "partial.safetensors")
    with pytest.raises(ModelLoadError, match=r"UNet: the weights do not match the config: 2 weights missing "
                                             r"\(e\.g\. up_blocks\.0\.upsamplers\.0\.conv\.weight, "
                                             r"up_blocks\.0\.upsamplers\.0\.conv\.bias\)"):
        run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="partial.safetensors", config="tiny-sd")
    extra = {**state, "model.diffusion_model.input_blocks.1.2.weight": torch.zeros(1)}
    write_checkpoint(sd_paths, extra, "extra.safetensors")
    with pytest.raises(ModelLoadError, match="495 UNet weights in the file but only 494 belong to the config"):
        run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="extra.safetensors", config="tiny-sd")
    # The real SD 1.5 config on the tiny checkpoint: the mismatch is named before anything is loaded.
    write_checkpoint(sd_paths, state, "tiny.safetensors")
    with pytest.raises(ModelLoadError, match=r"UNet: the weights do not match the config: .* with another shape "
                                             r"\(e\.g\. conv_in\.weight: \(16, 4, 3, 3\) in the file, "
                                             r"\(320, 4, 3, 3\)"):
        run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="tiny.safetensors")
    with pytest.raises(ValueError, match=r"config: config 'nope' was not found in .*stable-diffusion-v1-5"):
        run_node(sd_paths, "GenArtLoadSD15Checkpoint", ckpt_name="tiny.safetensors", config="nope")


def test_models_shipped_sd15_config_accepts_the_real_sd15_layout():
    """The shipped config builds SD 1.5's published architecture, and an LDM checkpoint of that size (meta
    tensors: no memory) converts and fills it with no key left over or missing."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from comfyui_genart.core.formats.sd1_checkpoint import SD15_CONFIG, SHIPPED_CONFIGS, build_sd1_models

    folder = SHIPPED_CONFIGS / SD15_CONFIG
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder"), local_files_only=True))
    state = {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config),
             **clip_to_ldm(clip.state_dict())}
    known = {  # keys and shapes of the released SD 1.5 checkpoints
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": (1, 77),
    }
    assert {k: tuple(state[k].shape) for k in known} == known
    assert (len(state), sum(k.startswith("model.diffusion_model.") for k in state)) == (1131, 686)
    unet, vae, clip = build_sd1_models(state, "sd15-layout", folder, use_ema=False)
    counts = {part: sum(p.numel() for p in m.parameters()) for part, m in
              (("unet", unet), ("vae", vae), ("text_encoder", clip))}
    assert counts == SD15_PARAMS
    assert vae.config.scaling_factor == 0.18215


def test_models_shipped_tokenizer_is_clips():
    from comfyui_genart.core.formats.sd1_checkpoint import SHIPPED_CONFIGS
    from comfyui_genart.core.formats.text_encoders import load_tokenizer

    tokenizer = load_tokenizer(SHIPPED_CONFIGS / "stable-diffusion-v1-5" / "tokenizer")
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    # CLIP ViT-L/14's ids: <|startoftext|> a photo of a cat <|endoftext|>
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.pad_token_id == 49407


# ---------------------------------------------------------------------------------------------------
# Bad inputs


def validation_errors(paths, class_type, **inputs):
    """The engine's validation messages for one loader feeding a save node."""
    from comfyui_genart.graph.errors import WorkflowInvalid

    socket_name = {"GenArtLoadVQModel": "vqmodel", "GenArtLoadAutoencoder": "autoencoder",
                   "GenArtLoadDenoiser": "denoiser"}[class_type]
    prompt = {"1": {"class_type": class_type, "inputs": inputs},
              "2": {"class_type": "GenArtSaveModel", "inputs": {socket_name: ["1", 0]}}}
    with pytest.raises(WorkflowInvalid) as info:
        executor(paths).validate(prompt)
    return [(e["extra_info"]["input_name"], e["message"]) for e in info.value.node_errors["1"]["errors"]]


def test_models_missing_model_is_a_validation_error(mpaths):
    [(name, message)] = validation_errors(mpaths, "GenArtLoadVQModel", model_name="nope")
    assert name == "model_name"
    assert "model_name 'nope' was not found in the vqgan model folders" in message
    assert str(mpaths.models_dirs[0] / "vqgan") in message
    assert "there: " in message and "genart-emoji32" in message, "the error lists the models that do exist"
    [(_, tiny)] = validation_errors(mpaths, "GenArtLoadVQModel", model_name="tiny-nope")
    assert "python tests/tiny_models.py DIR" in tiny


def test_models_wrong_class_names_the_right_loader(mpaths, tiny_dir):
    shutil.copytree(tiny_dir / "vae" / "tiny-kl", mpaths.models_dirs[0] / "vqgan" / "kl-here")
    [(_, message)] = validation_errors(mpaths, "GenArtLoadVQModel", model_name="kl-here")
    assert message.endswith("model_name 'kl-here' holds a model of class AutoencoderKL; GenArtLoadVQModel loads "
                            "VQModel: load it with GenArtLoadAutoencoder instead")
    shutil.copytree(tiny_dir / "text_encoders" / "tiny-clip", mpaths.models_dirs[0] / "unet" / "clip-here")
    [(_, message)] = validation_errors(mpaths, "GenArtLoadDenoiser", model_name="clip-here")
    assert "no '_class_name', so it is not a diffusers model folder (it describes clip_text_model)" in message


def test_models_foreign_safetensors_are_explained(mpaths, tiny_dir):
    from safetensors.torch import save_file

    (mpaths.models_dirs[0] / "vae").mkdir()
    save_file({"w": torch.zeros(2)}, str(mpaths.models_dirs[0] / "vae" / "plain.safetensors"))
    [(_, message)] = validation_errors(mpaths, "GenArtLoadAutoencoder", model_name="plain.safetensors")
    assert "has no 'config' in its safetensors metadata" in message and "GenArt Load SD1.5 Checkpoint" in message
    [(_, message)] = validation_errors(mpaths, "GenArtLoadAutoencoder",
                                       model_name="tiny-kl/diffusion_pytorch_model.safetensors")
    assert "is the weights file inside the diffusers folder 'tiny-kl'; choose the folder 'tiny-kl' instead" in message


def test_models_single_file_with_wrong_weights_is_refused(mpaths, tiny_dir):
    from diffusers import VQModel
    from safetensors import safe_open
    from safetensors.torch import load, save

    from comfyui_genart.core.formats.single_file import single_file_bytes

    folder = mpaths.models_dirs[0] / "vqgan"
    folder.mkdir()
    (folder / "ok.safetensors").write_bytes(single_file_bytes(
        VQModel.from_pretrained(tiny_dir / "vqgan" / "tiny-vq", local_files_only=True)))
    with safe_open(str(folder / "ok.safetensors"), framework="pt") as f:
        meta = f.metadata()
    state = load((folder / "ok.safetensors").read_bytes())
    state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"][:8]
    del state["decoder.conv_out.bias"]
    (folder / "bad.safetensors").write_bytes(save(state, metadata=meta))
    with pytest.raises(ValueError, match=r"'bad\.safetensors': the weights do not match the config: 1 weights "
                                         r"missing \(e\.g\. decoder\.conv_out\.bias\); 1 with another shape "
                                         r"\(e\.g\. encoder\.conv_in\.weight: \(8, 3, 3, 3\) in the file, "
                                         r"\(32, 3, 3, 3\) in the config\)"):
        run_node(mpaths, "GenArtLoadVQModel", model_name="bad.safetensors")
    assert run_node(mpaths, "GenArtLoadVQModel", model_name="ok.safetensors")[0].num_codes == 128


def test_models_text_encoder_and_device_errors(mpaths, tiny_dir):
    shutil.copytree(tiny_dir / "vqgan" / "tiny-vq", mpaths.models_dirs[0] / "text_encoders" / "vq")
    with pytest.raises(ValueError, match="holds a model of type VQModel; this node loads CLIP text encoders"):
        run_node(mpaths, "GenArtLoadTextEncoder", model_name="vq")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' was chosen but torch sees no CUDA GPU"):
            run_node(mpaths, "GenArtLoadVQModel", model_name="tiny-vq", device="cuda")


def test_models_paths_cannot_leave_the_models_folders(mpaths):
    from comfyui_genart.graph.errors import WorkflowInvalid

    prompt = {"1": {"class_type": "GenArtLoadSD15Checkpoint", "inputs": {"ckpt_name": "../../etc/passwd",
                                                                         "config": "../secrets"}},
              "2": {"class_type": "GenArtSaveModel", "inputs": {"denoiser": ["1", 1]}}}
    with pytest.raises(WorkflowInvalid) as info:
        executor(mpaths).validate(prompt)
    messages = " ".join(e["message"] for e in info.value.node_errors["1"]["errors"])
    assert "'../../etc/passwd' is refused: it contains '..'" in messages
    assert "'../secrets' is refused: it contains '..'" in messages


# ---------------------------------------------------------------------------------------------------
# Weights live in torch's own memory: the same bits wherever a model file puts its data


def padded_safetensors(data: bytes, pad: int) -> bytes:
    """The same safetensors file with `pad` more spaces after its header: its data then starts at another
    offset, as a longer or shorter config in the metadata would move it."""
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n].rstrip(b" ") + b" " * pad
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def data_offset(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def all_aligned(*models) -> bool:
    return all(t.data_ptr() % 64 == 0 for m in models for t in (*m.parameters(), *m.buffers()))


@pytest.mark.parametrize("folder", list(LOADERS))
def test_models_single_file_bits_do_not_depend_on_the_data_offset(mpaths, tiny_dir, folder):
    """Every offset mod 64 of the data section: weights aligned, forward bit-identical to a reference
    whose weights torch allocated (CPU kernels round differently on unaligned memory)."""
    import diffusers

    from comfyui_genart.core.formats.single_file import single_file_bytes

    class_type, class_name = LOADERS[folder]
    kind = folder.split("/")[0]
    reference = owned(getattr(diffusers, class_name).from_pretrained(tiny_dir / folder, local_files_only=True))
    expected = forward(reference)
    saved = single_file_bytes(reference)
    (mpaths.models_dirs[0] / kind).mkdir()
    offsets = set()
    for pad in range(64):
        data = padded_safetensors(saved, pad)
        offsets.add(data_offset(data) % 64)
        (mpaths.models_dirs[0] / kind / f"pad{pad}.safetensors").write_bytes(data)
        (handle,) = run_node(mpaths, class_type, model_name=f"pad{pad}.safetensors")
        assert all_aligned(handle.model), f"weights not aligned with the data at offset {data_offset(data)}"
        assert torch.equal(forward(handle.model), expected), f"other bits with the data at offset {data_offset(data)}"
    assert offsets == set(range(64))


PADS = (0, 9, 18, 27, 36, 45, 54, 63)  # eight data offsets, every residue mod 8


@pytest.mark.parametrize("folder", [*LOADERS, "text_encoders/tiny-clip"])
def test_models_folder_bits_do_not_depend_on_the_data_offset(mpaths, tiny_dir, folder):
    """diffusers/transformers folders (from_pretrained reads them through a memory map) end up aligned too."""
    kind, name = folder.split("/")
    target = mpaths.models_dirs[0] / kind / name
    shutil.copytree(tiny_dir / folder, target)
    (weights,) = target.glob("*.safetensors")
    original = weights.read_bytes()
    class_type = LOADERS.get(folder, ("GenArtLoadTextEncoder",))[0]
    outputs = []
    for pad in PADS:
        weights.write_bytes(padded_safetensors(original, pad))
        (handle,) = run_node(mpaths, class_type, model_name=name)
        model = handle.model
        assert all_aligned(model), f"weights not aligned with the data at offset {data_offset(original) + pad}"
        if class_type == "GenArtLoadTextEncoder":
            ids = handle.tokenizer(["a red star"], padding="max_length", max_length=77, return_tensors="pt").input_ids
            with torch.no_grad():
                outputs.append(model(ids).last_hidden_state)
        else:
            outputs.append(forward(model))
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])


def test_models_sd15_checkpoint_bits_do_not_depend_on_the_data_offset(sd_paths, tiny_sd):
    from safetensors.torch import save

    saved = save(ldm_checkpoint(tiny_sd))
    reference = owned(tiny_sd["unet"])
    g = torch.Generator().manual_seed(5)
    sample, cond = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        expected = (reference(sample, 321, encoder_hidden_states=cond).sample, forward(owned(tiny_sd["vae"])))
    for pad in PADS:
        data = padded_safetensors(saved, pad)
        (sd_paths.models_dirs[0] / "checkpoints" / f"pad{pad}.safetensors").write_bytes(data)
        vae, denoiser, text_encoder, _ = run_node(sd_paths, "GenArtLoadSD15Checkpoint",
                                                  ckpt_name=f"pad{pad}.safetensors", config="tiny-sd")
        assert all_aligned(vae.model, denoiser.model, text_encoder.text_encoder), f"offset {data_offset(data)}"
        with torch.no_grad():
            got = (denoiser.model(sample, 321, encoder_hidden_states=cond).sample, forward(vae.model))
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), f"offset {data_offset(data)}"


def test_models_read_safetensors_equals_load_file_and_refuses_bad_headers(tmp_path):
    from safetensors.torch import load_file, save

    from comfyui_genart.core.weights import WeightsFormatError, read_safetensors

    tensors = {"f": torch.randn(3, 5), "h": torch.randn(7).half(), "b": torch.randn(2, 2).bfloat16(),
               "i": torch.arange(6).reshape(2, 3), "m": torch.tensor([True, False]), "e": torch.zeros(0, 4),
               "s": torch.tensor(2.5)}
    data = save(tensors, metadata={"config": "{}"})
    for pad in (0, 5):
        file = tmp_path / f"t{pad}.safetensors"
        file.write_bytes(padded_safetensors(data, pad))
        got, metadata = read_safetensors(file)
        reference = load_file(str(file))
        assert list(got) == list(reference) and metadata == {"config": "{}"}
        for k, v in reference.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape and torch.equal(got[k], v), k
            assert got[k].numel() == 0 or got[k].data_ptr() % 64 == 0, k
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    bad_cases = {
        "truncated": data[:-4],
        "short": data[:5],
        "huge header": (10**12).to_bytes(8, "little") + data[8:],
        "not json": len(b"{nope").to_bytes(8, "little") + b"{nope" + data[8 + n:],
        "offsets past the end": json.dumps({**header, "f": {**header["f"], "data_offsets": [0, 10**9]}}).encode(),
        "shape mismatch": json.dumps({**header, "f": {**header["f"], "shape": [4, 5]}}).encode(),
        "unknown dtype": json.dumps({**header, "f": {**header["f"], "dtype": "Q7"}}).encode(),
    }
    for case, value in bad_cases.items():
        if value.startswith(b"{"):
            value = len(value).to_bytes(8, "little") + value + data[8 + n:]
        file = tmp_path / "bad.safetensors"
        file.write_bytes(value)
        with pytest.raises(WeightsFormatError):
            read_safetensors(file)
            pytest.fail(case)
