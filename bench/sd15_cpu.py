"""Full-size SD 1.5 on the CPU: GenArt's graph vs the diffusers pipeline vs ComfyUI's KSampler (when a ComfyUI is
given), txt2img, euler, cfg 7.5, on a seeded random SD 1.5 built from the shipped config (never committed).

    python bench/sd15_cpu.py [--sizes 256 512] [--steps 4] [--repeats 2] [--comfyui /path/to/ComfyUI]

Each measurement runs in its own process (peak RSS = that process's ru_maxrss): loading the checkpoint at the
file's precision and in float32 (seconds, peak RSS / file size and / the bytes of weights it ends up holding:
an fp16 file upcast to float32 holds twice the file), then per size and side the seconds per step (the
sampler's time / steps, model already loaded) and the peak RSS of the whole run (load, text encoding, sampling,
VAE decode). Ratios are printed against the diffusers pipeline, measured in the same run. ComfyUI runs under its
own interpreter (GENART_COMFYUI_PYTHON, default <dir>/.venv/bin/python), GenArt and diffusers under this one:
compare the torch versions printed before reading the ComfyUI ratio, or run this script with ComfyUI's
interpreter (it needs the pack's requirements there, as inside ComfyUI) so all three sides share one torch.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from graph.run import load_pack  # noqa: E402  (the pack as comfyui_genart, installed or not)

load_pack()
PROMPT, NEGATIVE, SEED, CFG = "beautiful scenery nature glass bottle landscape", "text, watermark", 1, 7.5


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def _load(path: Path, dtype_name: str) -> dict:
    import diffusers  # noqa: F401  (imported before the baseline: the loader needs them)
    import torch
    import transformers  # noqa: F401

    from comfyui_genart.core.formats.sd1_checkpoint import SD15_CONFIG, SHIPPED_CONFIGS, load_sd1_checkpoint

    base = _peak_rss_gb()  # the interpreter with torch, diffusers and transformers imported
    t = time.perf_counter()
    models = load_sd1_checkpoint(path, path.name, SHIPPED_CONFIGS / SD15_CONFIG, False, torch.device("cpu"),
                                 getattr(torch, dtype_name))
    seconds = time.perf_counter() - t
    held = sum(p.numel() * p.element_size() for m in (models.unet, models.vae, models.text_encoder)
               for p in m.state_dict().values())
    return {"seconds": seconds, "peak_rss_gb": _peak_rss_gb(), "file_gb": path.stat().st_size / 1e9,
            "model_gb": held / 1e9, "base_rss_gb": base}


def _genart(path: Path, size: int, steps: int) -> dict:
    from comfyui_genart.graph.api import make_settings, registry
    from comfyui_genart.graph.executor import Executor

    models = Path(tempfile.mkdtemp(prefix="genart-bench-")) / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / path.name).symlink_to(path)
    prompt = {
        "1": {"class_type": "GenArtLoadSD15Checkpoint", "inputs": {"ckpt_name": path.name, "dtype": "float32"}},
        "2": {"class_type": "GenArtEncodeText", "inputs": {"text_encoder": ["1", 2], "prompt": PROMPT,
                                                            "negative_prompt": NEGATIVE}},
        "3": {"class_type": "GenArtEmptyLatent", "inputs": {"width": size, "height": size, "downscale_factor": 8,
                                                            "channels": 4, "batch_size": 1}},
        "4": {"class_type": "GenArtLoadScheduler", "inputs": {"kind": "Euler", "beta_schedule": "scaled_linear",
                                                              "beta_start": 0.00085, "beta_end": 0.012}},
        "5": {"class_type": "GenArtSampleLatent", "inputs": {"denoiser": ["1", 1], "scheduler": ["4", 0],
                                                             "latent": ["3", 0], "conditioning": ["2", 0],
                                                             "seed": SEED, "steps": steps, "cfg": CFG}},
    }
    prompt["6"] = {"class_type": "GenArtDecodeKL", "inputs": {"autoencoder": ["1", 0], "latent": ["5", 0]}}
    prompt["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    temp = models.parent / "temp"
    report = Executor(registry(), make_settings(models_dirs=[models], temp_dir=temp, output_dir=temp)).run(prompt)
    seconds = next(n.seconds for n in report.nodes if n.node_id == "5")
    return {"s_per_step": seconds / steps, "peak_rss_gb": _peak_rss_gb()}


def _diffusers(path: Path, size: int, steps: int) -> dict:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from comfyui_genart.core.formats.sd1_checkpoint import SD15_CONFIG, SHIPPED_CONFIGS, load_sd1_checkpoint

    m = load_sd1_checkpoint(path, path.name, SHIPPED_CONFIGS / SD15_CONFIG, False, torch.device("cpu"), torch.float32)
    scheduler = EulerDiscreteScheduler.from_pretrained(SHIPPED_CONFIGS / SD15_CONFIG, subfolder="scheduler",
                                                       local_files_only=True)
    pipe = StableDiffusionPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    stamps: list[float] = []

    def on_step(pipe_: object, i: int, t: object, kwargs: dict) -> dict:
        stamps.append(time.perf_counter())
        return kwargs

    start = time.perf_counter()
    with torch.inference_mode():
        pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=steps,
             guidance_scale=CFG, generator=torch.Generator().manual_seed(SEED), output_type="np",
             callback_on_step_end=on_step)
    # Text encoding falls inside the first interval: milliseconds against seconds per step.
    return {"s_per_step": (stamps[-1] - start) / steps, "peak_rss_gb": _peak_rss_gb()}


COMFY_SCRIPT = r"""
import json, resource, sys, time, torch
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, COMFY)
import comfy.options; comfy.options.enable_args_parsing()
import comfy.sd, nodes
with torch.inference_mode():
    t = time.perf_counter()
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(PATH, output_vae=True, output_clip=True)
    load = time.perf_counter() - t
    load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    pos = nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
    neg = nodes.CLIPTextEncode().encode(clip, NEGATIVE)[0]
    lat = nodes.EmptyLatentImage().generate(SIZE, SIZE, 1)[0]
    t = time.perf_counter()
    out = nodes.KSampler().sample(model, SEED, STEPS, CFG, "euler", "normal", pos, neg, lat)[0]
    sampling = time.perf_counter() - t
    nodes.VAEDecode().decode(vae, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # ComfyUI's own run, before the bridge's
    bridged = None
    if BRIDGE:  # the same MODEL through GenArt Denoiser From MODEL and GenArt's sampler, in ComfyUI's process
        sys.path.insert(0, REPO)
        from graph.run import load_pack
        load_pack()
        from comfyui_genart.nodes.comfy_bridge import ConditioningFromComfy, DenoiserFromModel
        from comfyui_genart.core.denoising import begin_denoising, prepare_guidance
        handles = DenoiserFromModel(model=model, kind="Euler").run(None)
        cond = ConditioningFromComfy(positive=pos, negative=neg).run(None).conditioning
        denoising = begin_denoising(handles.denoiser, handles.scheduler, {"samples": lat["samples"]}, seed=SEED,
                                    steps=STEPS, start=0, add_noise=True, noise=None, start_input="start_step")
        guidance = prepare_guidance(handles.denoiser, cond, CFG, 1)
        t = time.perf_counter()
        denoising.run(handles.denoiser.model, guidance, denoising.total)
        bridged = (time.perf_counter() - t) / STEPS
print(json.dumps({"torch": torch.__version__, "s_per_step": sampling / STEPS, "bridged_s_per_step": bridged,
                  "peak_rss_gb": peak, "load_seconds": load, "load_peak_rss_gb": load_rss}))
"""


def _comfyui(comfy: Path, path: Path, size: int, steps: int, bridge: bool = False) -> dict:
    python = Path(os.environ.get("GENART_COMFYUI_PYTHON") or comfy / ".venv" / "bin" / "python")
    head = (f"COMFY, PATH, PROMPT, NEGATIVE = {str(comfy)!r}, {str(path)!r}, {PROMPT!r}, {NEGATIVE!r}\n"
            f"SIZE, STEPS, SEED, CFG = {size}, {steps}, {SEED}, {CFG}\nREPO, BRIDGE = {str(REPO)!r}, {bridge}\n")
    done = subprocess.run([str(python), "-c", head + COMFY_SCRIPT], capture_output=True, text=True, cwd=comfy)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(kind: str, path: Path, size: int, steps: int, dtype: str = "float32") -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", kind, "--checkpoint", str(path), "--sizes", str(size),
                           "--steps", str(steps), "--dtype", dtype], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512], help="none: the load only")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="runs per side and size, alternating (median)")
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("GENART_COMFYUI_DIR"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: build/reuse the random SD 1.5")
    parser.add_argument("--one", choices=["load", "genart", "diffusers"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        size = args.sizes[0]
        result = (_load(args.checkpoint, args.dtype) if args.one == "load" else
                  _genart(args.checkpoint, size, args.steps) if args.one == "genart" else
                  _diffusers(args.checkpoint, size, args.steps))
        print(json.dumps(result))
        return

    import torch

    from comfyui_genart.core.formats.sd1_export import write_random_sd15

    path = args.checkpoint or write_random_sd15(Path(os.environ.get("GENART_SD15_CACHE") or
                                                     Path(tempfile.gettempdir()) / "genart-sd15")
                                                / "v1-5-random-seed0-fp16.safetensors")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; checkpoint {path} "
          f"({path.stat().st_size / 1e9:.2f} GB, random weights)")
    file_dtype = "float16" if "fp16" in path.name else "float32"
    for dtype in dict.fromkeys([file_dtype, "float32"]):  # the file's own precision, then what the CPU runs
        load = _child("load", path, 0, args.steps, dtype)
        added = load["peak_rss_gb"] - load["base_rss_gb"]
        print(f"load as {dtype}: {load['seconds']:.1f} s, peak RSS {load['peak_rss_gb']:.2f} GB = "
              f"{load['peak_rss_gb'] / load['file_gb']:.2f}x the file; loading added {added:.2f} GB to the "
              f"{load['base_rss_gb']:.2f} GB before it = {added / load['file_gb']:.2f}x the file, "
              f"{added / load['model_gb']:.2f}x the {load['model_gb']:.2f} GB of weights it holds")
    sides = {"diffusers": lambda size: _child("diffusers", path, size, args.steps),
             "genart": lambda size: _child("genart", path, size, args.steps)}
    if args.comfyui:
        sides["comfyui"] = lambda size: _comfyui(args.comfyui, path, size, args.steps, bridge=True)
    for size in args.sizes:
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for repeat in range(args.repeats):  # the order turns each round: no side always runs first
            names = list(sides)[repeat % len(sides):] + list(sides)[:repeat % len(sides)]
            for name in names:
                runs[name].append(sides[name](size))
        rows = {name: {**found[0], "s_per_step": statistics.median(r["s_per_step"] for r in found),
                       "all": [r["s_per_step"] for r in found],
                       "peak_rss_gb": max(r["peak_rss_gb"] for r in found)} for name, found in runs.items()}
        ref = rows["diffusers"]
        print(f"{size}x{size}, euler, {args.steps} steps, cfg {CFG} (median of {args.repeats} runs per side):")
        for name, row in rows.items():
            print(f"  {name:9s} {row['s_per_step']:6.2f} s/step ({row['s_per_step'] / ref['s_per_step']:.3f}x "
                  f"diffusers; runs {', '.join(f'{v:.2f}' for v in row['all'])}), peak RSS "
                  f"{row['peak_rss_gb']:.2f} GB ({row['peak_rss_gb'] / ref['peak_rss_gb']:.2f}x)")
        if "comfyui" in rows:
            bridged = statistics.median(r["bridged_s_per_step"] for r in runs["comfyui"])
            print(f"  bridged   {bridged:6.2f} s/step ({bridged / ref['s_per_step']:.3f}x diffusers): ComfyUI's MODEL "
                  "through GenArt Denoiser From MODEL and GenArt's sampler, in ComfyUI's process")
            c, g = rows["comfyui"], rows["genart"]
            print(f"  GenArt vs ComfyUI: {c['s_per_step'] / g['s_per_step']:.2f}x faster per step, "
                  f"{c['peak_rss_gb'] / g['peak_rss_gb']:.2f}x less peak RSS; ComfyUI load {c['load_seconds']:.1f} s "
                  f"(peak RSS {c['load_peak_rss_gb']:.2f} GB), ComfyUI's torch {c['torch']}")


if __name__ == "__main__":
    main()
