"""The library: the math and the models of the pack, usable from Python without the graph.

Attacks (PGD, FGSM, EOT, BPDA) and their losses, defenses, metrics, noise, the denoising state machine,
the vector quantizer, the trainers and their loop, datasets, and the model formats (`core.formats`).
It imports torch, diffusers and the like, never `graph/` or `nodes/`; every import inside is relative,
so it works as `comfyui_genart.core` (installed, or inside ComfyUI) and as `core` from the repository root.
"""
