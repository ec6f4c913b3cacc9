"""The plugins' models in PyTorch for training, computing what the daemon's plugins compute: the embedded model
loaded from its shipped checkpoint; its UNet run with a ControlNet's residuals and AnimateDiff's block hook (the
points numbered as the engine numbers them, daemon/engine/models/unet.h); a ControlNet (cldm.ControlNet, v1.1
names below control_model.); AnimateDiff v2 motion modules (TemporalTransformer3DModel, the released names)."""

import math
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config  # noqa: E402
import ldm_models  # noqa: E402
import st_io  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EMBEDDED = os.path.join(HERE, "..", "assets", "models", "Stable-diffusion", "atelier-shapes.safetensors")


def scale_factor(yaml_path):
    for line in open(yaml_path):
        if line.strip().startswith("scale_factor:"):
            return float(line.split(":")[1])
    raise ValueError(f"no scale_factor in {yaml_path}")


def load_embedded(path=EMBEDDED):
    """(unet, text, vae, scale) of the shipped embedded model, float32, frozen."""
    tensors, _ = st_io.load(path)
    parts = {"model.diffusion_model.": {}, "first_stage_model.": {}, "cond_stage_model.transformer.text_model.": {}}
    for k, v in tensors.items():
        for prefix, out in parts.items():
            if k.startswith(prefix):
                out[k[len(prefix):]] = v if k.endswith("position_ids") else v.float()
    unet = ldm_models.UNetModel(**config.UNET)
    unet.load_state_dict(parts["model.diffusion_model."])
    vae = ldm_models.AutoencoderKL(config.VAE["ddconfig"], config.VAE["embed_dim"])
    vae.load_state_dict(parts["first_stage_model."])
    text = ldm_models.ClipTextModel(**config.TEXT)
    text.load_state_dict(parts["cond_stage_model.transformer.text_model."])
    for m in (unet, vae, text):
        m.eval().requires_grad_(False)
    return unet, text, vae, scale_factor(path[:-len(".safetensors")] + ".yaml")


def _is_downsample(block):
    return len(block) == 1 and isinstance(block[0], ldm_models.UnetDownsample)


def unet_forward(unet, x, t, context, residuals=None, hook=None):
    """eps of the UNet with a ControlNet's residuals (one per input block, in order, then the middle block's; None
    entries add nothing) added to the skips and the middle output as sd-webui-controlnet's hooked forward does, and
    `hook(point, h)` replacing the hidden state at AnimateDiff's points: after each ResBlock input block, before the
    middle block's last ResBlock, at the end of each output block (before its upsampler)."""
    emb = unet.time_embed(ldm_models.timestep_embedding(t, unet.model_channels))
    hs, h, point = [], x, 0
    for i, block in enumerate(unet.input_blocks):
        h = block(h, emb, context)
        if i > 0 and not _is_downsample(block):
            if hook is not None:
                h = hook(point, h)
            point += 1
        hs.append(h)
    middle = unet.middle_block
    for j, layer in enumerate(middle):
        if j == len(middle) - 1 and hook is not None:
            h = hook(point, h)
        h = layer(h, emb, context)
    point += 1
    if residuals is not None and residuals[-1] is not None:
        h = h + residuals[-1]
    for block in unet.output_blocks:
        skip = hs.pop()
        if residuals is not None and residuals[len(hs)] is not None:
            skip = skip + residuals[len(hs)]
        h = torch.cat([h, skip], 1)
        upsample = isinstance(block[-1], ldm_models.UnetUpsample)
        for j, layer in enumerate(block):
            if upsample and j == len(block) - 1 and hook is not None:
                h = hook(point, h)
            h = layer(h, emb, context)
        if not upsample and hook is not None:
            h = hook(point, h)
        point += 1
    return unet.out(h)


@torch.no_grad()
def ddim_decode(eps_cfg, x, alphas_cumprod, vae, scale, steps=20):
    """DDIM (eta 0) over `steps` evenly spaced timesteps from 999, with `eps_cfg(x, t)` the guided prediction; the
    result decoded to uint8 images [n, H, W, 3]."""
    ts = torch.linspace(999, 0, steps).round().long().tolist()
    for i, t in enumerate(ts):
        eps = eps_cfg(x, t)
        a = alphas_cumprod[t]
        a_prev = alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    images = vae.decode(x / scale)
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- ControlNet

HINT_WIDTHS = (16, 16, 32, 32, 96, 96, 256)  # input_hint_block's convolutions before the last (cldm)
HINT_STRIDED = (2, 4, 6)


def zero_conv(c):
    conv = nn.Conv2d(c, c, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv)


class ControlNet(nn.Module):
    """cldm.ControlNet: the UNet's encoder (time_embed, input_blocks, middle_block; 8 heads, as sd-webui-controlnet
    assumes for SD1.x files without a yaml), the hint encoder (input_hint_block) and zero convolutions."""

    def __init__(self, hint_channels=3, unet_config=None):
        super().__init__()
        cfg = dict(unet_config or config.UNET, num_heads=8)
        base = ldm_models.UNetModel(**cfg)
        self.model_channels = base.model_channels
        self.time_embed, self.input_blocks, self.middle_block = base.time_embed, base.input_blocks, base.middle_block
        layers, cin = [], hint_channels
        for k, width in enumerate(HINT_WIDTHS + (base.model_channels,)):
            layers.append(nn.Conv2d(cin, width, 3, 2 if k in HINT_STRIDED else 1, 1))
            if k < len(HINT_WIDTHS):
                layers.append(nn.SiLU())
            cin = width
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.input_hint_block = nn.Sequential(*layers)
        chans = []
        for block in self.input_blocks:
            last = block[-1]
            chans.append(last.op.out_channels if isinstance(last, ldm_models.UnetDownsample) else
                         last.proj_out.out_channels if isinstance(last, ldm_models.SpatialTransformer) else
                         last.out_layers[3].out_channels if isinstance(last, ldm_models.ResBlock) else
                         last.out_channels)
        self.zero_convs = nn.ModuleList(zero_conv(c) for c in chans)
        self.middle_block_out = zero_conv(chans[-1])

    def init_from(self, unet):
        """The encoder copied from the base UNet (the ControlNet recipe)."""
        own = self.state_dict()
        for k, v in unet.state_dict().items():
            if k.startswith(("time_embed.", "input_blocks.", "middle_block.")):
                own[k] = v.clone()
        self.load_state_dict(own)

    def forward(self, x, hint, t, context):
        """hint [n, 3, 8h, 8w] in [0, 1] -> residuals (one per input block, then the middle block's)."""
        emb = self.time_embed(ldm_models.timestep_embedding(t, self.model_channels))
        guided = self.input_hint_block(hint)
        out, h = [], x
        for i, (block, zero) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guided
            out.append(zero(h))
        h = self.middle_block(h, emb, context)
        out.append(self.middle_block_out(h))
        return out


# ---------------------------------------------------------------- AnimateDiff motion modules (v2 layout)

def position_encoding(positions, c):
    position = torch.arange(positions, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, c, 2, dtype=torch.float32) * (-math.log(10000.0) / c))
    pe = torch.zeros(1, positions, c)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, c, positions):
        super().__init__()
        self.register_buffer("pe", position_encoding(positions, c))


class TemporalAttention(nn.Module):
    def __init__(self, c, positions):
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Linear(c, c, bias=False) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(c, c), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(c, positions)


class FF(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.net = nn.ModuleList([ldm_models.GEGLU(c, 4 * c), nn.Dropout(0.0), nn.Linear(4 * c, c)])


class TemporalBlock(nn.Module):
    def __init__(self, c, positions):
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(c, positions) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(c) for _ in range(2))
        self.ff = FF(c)
        self.ff_norm = nn.LayerNorm(c)


class TemporalTransformer(nn.Module):
    def __init__(self, c, positions):
        super().__init__()
        self.norm = nn.GroupNorm(32, c, eps=1e-6)
        self.proj_in = nn.Linear(c, c)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(c, positions)])
        self.proj_out = nn.Linear(c, c)
        nn.init.zeros_(self.proj_out.weight)  # AnimateDiff's zero_initialize: the module starts as the identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, hidden, frames, heads=8):
        rows, c, h, w = hidden.shape
        videos, hw, d = rows // frames, h * w, c // heads
        x = self.proj_in(self.norm(hidden).permute(0, 2, 3, 1).reshape(rows, hw, c))
        block = self.transformer_blocks[0]
        for attn, norm in zip(block.attention_blocks, block.norms):
            n = norm(x).view(videos, frames, hw, c) + attn.pos_encoder.pe[:, :frames].view(1, frames, 1, c)

            def split(t):  # -> [videos, hw, heads, frames, d]
                return t.view(videos, frames, hw, heads, d).permute(0, 2, 3, 1, 4)

            q, k, v = split(attn.to_q(n)), split(attn.to_k(n)), split(attn.to_v(n))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) @ v
            x = attn.to_out[0](a.permute(0, 3, 1, 2, 4).reshape(rows, hw, c)) + x
        x = block.ff.net[2](block.ff.net[0](block.ff_norm(x))) + x
        x = self.proj_out(x)
        return x.view(rows, h, w, c).permute(0, 3, 1, 2) + hidden


class MotionModule(nn.Module):
    def __init__(self, c, positions):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(c, positions)


class MotionModules(nn.Module):
    """down_blocks.<level>.motion_modules.<i>, mid_block.motion_modules.0, up_blocks.<level>.motion_modules.<i> for
    the embedded UNet's shape (levels of num_res_blocks; the up blocks one more each), v2 (32 positions)."""

    def __init__(self, positions=32, unet_config=None, mid=True):
        super().__init__()
        cfg = unet_config or config.UNET
        mc, mult, r = cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"]
        self.names = []
        self.down_blocks = nn.ModuleList()
        for m in mult:
            level = nn.Module()
            level.motion_modules = nn.ModuleList(MotionModule(mc * m, positions) for _ in range(r))
            self.down_blocks.append(level)
            self.names += [level.motion_modules[i] for i in range(r)]
        if mid:  # v2; v3 has none (its point is skipped)
            self.mid_block = nn.Module()
            self.mid_block.motion_modules = nn.ModuleList([MotionModule(mc * mult[-1], positions)])
        self.names.append(self.mid_block.motion_modules[0] if mid else None)
        self.up_blocks = nn.ModuleList()
        for m in reversed(mult):
            level = nn.Module()
            level.motion_modules = nn.ModuleList(MotionModule(mc * m, positions) for _ in range(r + 1))
            self.up_blocks.append(level)
            self.names += [level.motion_modules[i] for i in range(r + 1)]

    def hook(self, frames):
        modules = self.names

        def run(point, h):
            return h if modules[point] is None else modules[point].temporal_transformer(h, frames)
        return run
