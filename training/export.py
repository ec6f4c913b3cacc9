#!/usr/bin/env python3
"""Writes the trained embedded model as one SD1.x single-file checkpoint and its LDM yaml:
model.diffusion_model.* (the EMA UNet), first_stage_model.* (the VAE), cond_stage_model.transformer.text_model.*
(the EMA text encoder), the schedule buffers, F16 weights (as released SD files), and metadata declaring the native
size (modelspec.resolution) and the text encoder's head count. Token-embedding rows of tokens the captions never use
are zeroed: an unknown word then means nothing instead of noise (and the file compresses).

    python3 training/export.py --run training/runs/main --out assets/models/Stable-diffusion/atelier-shapes"""

import argparse
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config  # noqa: E402
import ldm_models  # noqa: E402
import st_io  # noqa: E402
import tokens  # noqa: E402
import world  # noqa: E402

YAML = """# The embedded default model: a tiny SD1.x checkpoint trained by training/ (see training/README.md) on a
# procedurally drawn world of shapes and colours at {native}x{native}. LDM config format, like WebUI's
# v1-inference.yaml; cond_stage_config.params carries the CLIP text tower's sizes (Hugging Face names).
model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: {linear_start}
    linear_end: {linear_end}
    timesteps: {timesteps}
    scale_factor: {scale_factor:.6f}
    conditioning_key: crossattn
    parameterization: eps
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
{unet}
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: {embed_dim}
        ddconfig:
{ddconfig}
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
      params:
{text}
"""


def yaml_block(d, indent):
    out = []
    for k, v in d.items():
        value = str(v).lower() if isinstance(v, bool) else v
        out.append(" " * indent + f"{k}: {value}")
    return "\n".join(out)


def used_token_ids():
    ids = set(tokens.encode(""))
    rng = random.Random(0)
    for _ in range(20000):
        ids.update(tokens.encode(world.caption(world.random_scene(rng), rng)))
    for scene in world.all_scenes(False):
        ids.update(tokens.encode(world.caption(scene).replace("centre", "center")))
    return ids


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", required=True, help="path without extension")
    args = parser.parse_args()
    vae_state = torch.load(os.path.join(args.run, "vae.pt"))["model"]
    ldm = torch.load(os.path.join(args.run, "ldm.pt"))
    scale = ldm["state"]["scale"]
    tensors = {}
    for k, v in ldm["ema_unet"].items():
        tensors["model.diffusion_model." + k] = v.half()
    for k, v in vae_state.items():
        tensors["first_stage_model." + k] = v.half()
    keep = torch.zeros(config.TEXT["vocab_size"], dtype=torch.bool)
    keep[sorted(used_token_ids())] = True
    for k, v in ldm["ema_text"].items():
        if k == "embeddings.token_embedding.weight":
            v = v * keep[:, None]
        tensors["cond_stage_model.transformer.text_model." + k] = v if k.endswith("position_ids") else v.half()
    for k, v in ldm_models.sd_schedule(**config.SCHEDULE).items():
        tensors[k] = v
    native = config.NATIVE
    metadata = {
        "format": "pt",
        "modelspec.resolution": f"{native}x{native}",
        "modelspec.title": "Atelier shapes (tiny SD1.x)",
        "modelspec.architecture": "stable-diffusion-v1",
        "num_attention_heads": str(config.TEXT["num_attention_heads"]),
        "num_heads": str(config.UNET["num_heads"]),
        "atelier.training": f"VAE {vae_state and 'trained'}; UNet+text {ldm['state']['step']} steps, "
                            f"{ldm['state']['seconds'] / 60:.0f} min",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    st_io.save(args.out + ".safetensors", tensors, metadata)
    unet = {k: v for k, v in config.UNET.items()}
    with open(args.out + ".yaml", "w") as f:
        f.write(YAML.format(native=native, scale_factor=scale, **config.SCHEDULE, embed_dim=config.VAE["embed_dim"],
                            unet=yaml_block(unet, 8), ddconfig=yaml_block(config.VAE["ddconfig"], 10),
                            text=yaml_block(config.TEXT, 8)))
    size = os.path.getsize(args.out + ".safetensors")
    print(f"wrote {args.out}.safetensors ({size / 1e6:.1f} MB, {len(tensors)} tensors, "
          f"{int(keep.sum())} token rows kept) and {args.out}.yaml (scale_factor {scale:.5f})")


if __name__ == "__main__":
    main()
