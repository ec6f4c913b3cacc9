#!/usr/bin/env python3
"""Checks that plugin_models.py computes what the references compute (and so what the daemon's plugins compute, which
the unit tests hold to the same goldens): on the fixtures' plugin cases (ATELIER_FIXTURES), the hooked UNet forward
without plugins (plugin-base-unet), the ControlNet's 13 raw residuals and eps with them in Balanced mode
(controlnet-tiny), single motion modules and the whole UNet with the v2 modules at the 21 points (motion-module-tiny),
train_rife.py's IFNet at t = 0.5 and 0.25, and padded as the plugin pads (rife-v4), within each case's tolerance. Run before training whenever plugin_models.py changes.

    python3 training/plugin_parity_check.py --fixtures ../shared/fixtures"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldm_models  # noqa: E402
import plugin_models  # noqa: E402
import st_io  # noqa: E402
import train_rife  # noqa: E402


def close(name, got, want, tol):
    err = (got - want).abs().max().item()
    ok = torch.allclose(got, want, atol=tol["atol"], rtol=tol["rtol"])
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs error {err:.2e}")
    return ok


def load_case(fx, name):
    d = os.path.join(fx, name)
    weights, _ = st_io.load(os.path.join(d, "weights.safetensors"))
    io, _ = st_io.load(os.path.join(d, "io.safetensors"))
    return json.load(open(os.path.join(d, "case.json"))), {k: v.float() for k, v in weights.items()}, \
        {k: v.float() for k, v in io.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures"))
    args = parser.parse_args()
    fx = args.fixtures
    ok = True
    with torch.no_grad():
        base_case, base_w, base_io = load_case(fx, "plugin-base-unet")
        unet = ldm_models.UNetModel(**base_case["config"])
        unet.load_state_dict({k[len("model.diffusion_model."):]: v for k, v in base_w.items()})
        ok &= close("plugin-base-unet eps", plugin_models.unet_forward(
            unet, base_io["x"], base_io["timesteps"], base_io["context"]), base_io["eps"], base_case["tolerance"])

        cn_case, cn_w, cn_io = load_case(fx, "controlnet-tiny")
        net = plugin_models.ControlNet(unet_config=base_case["config"])
        net.load_state_dict({k[len("control_model."):]: v for k, v in cn_w.items()})
        residuals = net(cn_io["x"], cn_io["hint"], cn_io["timesteps"], cn_io["context"])
        for i, r in enumerate(residuals):
            ok &= close(f"controlnet-tiny control_{i:02d}", r, cn_io[f"control_{i:02d}"], cn_case["tolerance"])
        for name, unit in cn_case["values"]["units"].items():
            if unit["control_mode"] != "Balanced":
                continue  # the other modes weight rows and scales in the plugin (tested in C++)
            eps = plugin_models.unet_forward(unet, cn_io["x"], cn_io["timesteps"], cn_io["context"],
                                             residuals=[r * unit["weight"] for r in residuals])
            ok &= close(f"controlnet-tiny {name}", eps, cn_io[name], cn_case["tolerance"])

        mm_case, mm_w, mm_io = load_case(fx, "motion-module-tiny")
        frames = mm_case["config"]["video_length"]
        positions = mm_w["down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks."
                         "0.pos_encoder.pe"].shape[1]
        mm = plugin_models.MotionModules(positions, unet_config=base_case["config"])
        mm.load_state_dict(mm_w)
        ok &= close("motion-module-tiny single down", mm.down_blocks[0].motion_modules[0].temporal_transformer(
            mm_io["single_down_blocks_in"], frames), mm_io["single_down_blocks_out"], mm_case["tolerance"])
        ok &= close("motion-module-tiny single mid", mm.mid_block.motion_modules[0].temporal_transformer(
            mm_io["single_mid_block_in"], frames), mm_io["single_mid_block_out"], mm_case["tolerance"])
        ok &= close("motion-module-tiny eps_v2", plugin_models.unet_forward(
            unet, mm_io["x"], mm_io["timesteps"], mm_io["context"], hook=mm.hook(frames)), mm_io["eps_v2"],
            mm_case["tolerance"])
        ok &= close("motion-module-tiny eps_v2_cfg", plugin_models.unet_forward(
            unet, mm_io["x_cfg"], mm_io["timesteps_cfg"], mm_io["context_cfg"], hook=mm.hook(frames)),
            mm_io["eps_v2_cfg"], mm_case["tolerance"])
        rife_case, rife_w, rife_io = load_case(fx, "rife-v4")
        ifnet = train_rife.IFNet(tuple(rife_w[f"module.block{i}.conv0.1.0.weight"].shape[0] for i in range(4)))
        ifnet.load_state_dict({k[len("module."):]: v for k, v in rife_w.items()})
        for name, t in (("out_t050", 0.5), ("out_t025", 0.25)):
            ok &= close(f"rife-v4 {name}", ifnet(rife_io["img0"], rife_io["img1"], torch.tensor([t])), rife_io[name],
                        rife_case["tolerance"])
        h, w = rife_io["pad_img0"].shape[2:]
        padded = train_rife.F.pad
        out = ifnet(padded(rife_io["pad_img0"], (0, 128 - w, 0, 128 - h)), padded(rife_io["pad_img1"], (0, 128 - w, 0, 128 - h)),
                    torch.tensor([0.5]))[:, :, :h, :w]
        ok &= close("rife-v4 pad_out_t050", out, rife_io["pad_out_t050"], rife_case["tolerance"])
    print("parity: " + ("all cases within tolerance" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
