#!/usr/bin/env python3
"""Proves the training modules compute what the engine computes: loads the fixtures' tiny SD1.x checkpoint into
ldm_models (every tensor name must match, none left over) and runs the unet-tiny, vae-tiny and clip-text-tiny
cases within their tolerances. Run before training whenever ldm_models.py changes.

    python3 training/parity_check.py [--fixtures ../shared/fixtures]"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldm_models  # noqa: E402
import st_io  # noqa: E402


def close(name, got, want, atol, rtol):
    ok = torch.all((got - want).abs() <= atol + rtol * want.abs()).item()
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max |diff| {(got - want).abs().max().item():.2e}")
    return ok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", default=os.environ.get("ATELIER_FIXTURES", "../shared/fixtures"))
    args = parser.parse_args()
    fx = args.fixtures
    case = lambda name: json.load(open(os.path.join(fx, name, "case.json")))  # noqa: E731
    unet_case, vae_case, clip_case = case("unet-tiny"), case("vae-tiny"), case("clip-text-tiny")
    model = ldm_models.StableDiffusion(unet_case["config"], vae_case["config"],
                                       clip_case["config"]["hf_clip_text_config"])
    weights, _ = st_io.load(os.path.join(fx, "tiny-sd", "weights.safetensors"))
    state = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()
             if k.startswith(("model.", "first_stage_model.", "cond_stage_model."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"names: {len(state)} in the file, missing {missing}, unexpected {unexpected}")
    ok = not missing and not unexpected
    model.eval()
    with torch.no_grad():
        io, _ = st_io.load(os.path.join(fx, "unet-tiny", "io.safetensors"))
        tol = unet_case["tolerance"]
        unet = model.model
        ok &= close("unet eps", unet(io["x"], io["timesteps"], io["context"]), io["eps"], **tol)
        ok &= close("unet 154", unet(io["x"], io["timesteps"], io["context_154"]), io["eps_context_154"], **tol)
        ok &= close("unet frac", unet(io["x"], io["timesteps_frac"], io["context"]), io["eps_timesteps_frac"], **tol)
        ok &= close("unet nonsquare", unet(io["x_nonsquare"], io["timesteps_nonsquare"], io["context_nonsquare"]),
                    io["eps_nonsquare"], **tol)
        io, _ = st_io.load(os.path.join(fx, "vae-tiny", "io.safetensors"))
        tol = vae_case["tolerance"]
        vae = model.first_stage_model
        mean, logvar = vae.encode(io["image"])
        ok &= close("vae mean", mean, io["posterior_mean"], **tol)
        ok &= close("vae logvar", logvar, io["posterior_logvar"], **tol)
        ok &= close("vae decode", vae.decode(io["latent"]), io["decoded"], **tol)
        ok &= close("vae decode nonsquare", vae.decode(io["latent_nonsquare"]), io["decoded_nonsquare"], **tol)
        io, _ = st_io.load(os.path.join(fx, "clip-text-tiny", "io.safetensors"))
        tol = clip_case["tolerance"]
        # This case has its own text-encoder weights (same names).
        text = model.cond_stage_model
        clip_weights, _ = st_io.load(os.path.join(fx, "clip-text-tiny", "weights.safetensors"))
        prefix = "cond_stage_model."
        text.load_state_dict({k[len(prefix):]: v.float() if v.is_floating_point() else v
                              for k, v in clip_weights.items() if k.startswith(prefix)})
        ok &= close("clip last", text(io["input_ids"]), io["last_hidden_state"], **tol)
        ok &= close("clip skip 2", text(io["input_ids"], 2), io["clip_skip2"], **tol)
        ok &= close("clip skip 3", text(io["input_ids"], 3), io["clip_skip3"], **tol)
    print("parity:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
