"""Model formats, all loaded offline: diffusers folders, GenArt single files, Stable Diffusion 1.x
checkpoints, schedulers, text encoders; and the helpers they share (`common`)."""
