"""Goldens for the ESRGAN-family upscaler tests (tests/unit/engine/upscale/esrgan_test.cc), written to
tests/data/esrgan, made with PyTorch and
Pillow from the published definitions, not from Atelier's code:
 - RRDBNet as BasicSR's rrdbnet_arch.py defines it (ResidualDenseBlock of 5 convs, RRDB of 3, conv_body, nearest x2
   + conv per doubling, conv_hr, conv_last; pixel_unshuffle first for x2), random weights, in three key layouts
   (BasicSR, the old ESRGAN sequential, BSRGAN) and a "params_ema" wrapper;
 - SRVGGNetCompact as srvgg_arch.py defines it (conv + PReLU pairs, pixel shuffle, + nearest-upsampled input);
 - WebUI's tiled upscale (upscaler_utils.upscale_with_model: images.split_grid / combine_grid with PIL's paste and
   masks) of an RGB image with the x4 RRDBNet, the model fed BGR in [0, 1] and rounded with numpy;
 - PIL's LANCZOS resizes down and up.
Run once with python3-torch and python3-pil; the outputs are committed (the tests need neither)."""

import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors_io import write

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "esrgan")
torch.manual_seed(3)


class RDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = RDB(nf, gc), RDB(nf, gc), RDB(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self, scale, nf, nb, gc):
        super().__init__()
        self.scale = scale
        in_ch = 3 * (4 if scale == 2 else 16 if scale == 1 else 1)
        self.conv_first = nn.Conv2d(in_ch, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def forward(self, x):
        if self.scale == 2:
            x = F.pixel_unshuffle(x, 2)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class Compact(nn.Module):
    def __init__(self, nf, num_conv, scale):
        super().__init__()
        self.scale = scale
        layers = [nn.Conv2d(3, nf, 3, 1, 1), nn.PReLU(num_parameters=nf)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(num_parameters=nf)]
        layers += [nn.Conv2d(nf, 3 * scale * scale, 3, 1, 1)]
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def randomize(net):
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        for m in net.modules():
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand_like(m.weight) * 0.3)


def old_layout(sd, nb):
    out = {}
    for k, v in sd.items():
        mod, param = k.rsplit(".", 1)
        if mod.startswith("body."):
            _, n, rdb, conv = mod.split(".")
            out["model.1.sub.%s.RDB%s.%s.0.%s" % (n, rdb[3:], conv, param)] = v
        else:
            idx = {"conv_first": 0, "conv_body": None, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}[mod]
            out[("model.1.sub.%d.%s" % (nb, param)) if idx is None else ("model.%d.%s" % (idx, param))] = v
    return out


def bsrgan_layout(sd):
    ren = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}
    out = {}
    for k, v in sd.items():
        mod, param = k.rsplit(".", 1)
        if mod.startswith("body."):
            _, n, rdb, conv = mod.split(".")
            out["RRDB_trunk.%s.RDB%s.%s.%s" % (n, rdb[3:], conv, param)] = v
        else:
            out["%s.%s" % (ren.get(mod, mod), param)] = v
    return out


def run_on_image(net, rgb):
    """upscaler_utils.upscale_pil_patch: BGR in [0, 1], clamped, x255, np.round, back to RGB."""
    a = rgb[:, :, ::-1].copy()
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div(255).unsqueeze(0)
    with torch.no_grad():
        y = net(t).clamp(0, 1)
    out = (255.0 * y[0].permute(1, 2, 0).numpy()).round().astype(np.uint8)
    return out[:, :, ::-1].copy()


def split_grid(image, tile, overlap):
    w, h = image.size
    non = tile - overlap
    cols, rows = math.ceil((w - overlap) / non), math.ceil((h - overlap) / non)
    dx = (w - tile) / (cols - 1) if cols > 1 else 0
    dy = (h - tile) / (rows - 1) if rows > 1 else 0
    grid = []
    for row in range(rows):
        y = int(row * dy)
        if y + tile >= h:
            y = h - tile
        cells = []
        for col in range(cols):
            x = int(col * dx)
            if x + tile >= w:
                x = w - tile
            cells.append([x, tile, image.crop((x, y, x + tile, y + tile))])
        grid.append([y, tile, cells])
    return grid


def combine_grid(grid, image_w, image_h, tile_h, overlap):
    def mask(r):
        r = r * 255 / overlap
        return Image.fromarray(r.astype(np.uint8), "L")

    mask_w = mask(np.arange(overlap, dtype=np.float32).reshape((1, overlap)).repeat(tile_h, axis=0))
    mask_h = mask(np.arange(overlap, dtype=np.float32).reshape((overlap, 1)).repeat(image_w, axis=1))
    combined = Image.new("RGB", (image_w, image_h))
    for y, h, row in grid:
        crow = Image.new("RGB", (image_w, h))
        for x, w, tile in row:
            if x == 0:
                crow.paste(tile, (0, 0))
                continue
            crow.paste(tile.crop((0, 0, overlap, h)), (x, 0), mask=mask_w)
            crow.paste(tile.crop((overlap, 0, w, h)), (x + overlap, 0))
        if y == 0:
            combined.paste(crow, (0, 0))
            continue
        combined.paste(crow.crop((0, 0, image_w, overlap)), (0, y), mask=mask_h)
        combined.paste(crow.crop((0, overlap, image_w, h)), (0, y + overlap))
    return combined


def main():
    tensors = {}
    x = torch.rand(1, 3, 14, 10)
    tensors["input"] = x
    for name, net, nb in (("rrdb_x4", RRDBNet(4, 8, 2, 4), 2), ("rrdb_x2", RRDBNet(2, 8, 1, 4), 1)):
        randomize(net)
        sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
        write(os.path.join(HERE, name + ".safetensors"), {"params_ema." + k: v for k, v in sd.items()})
        if name == "rrdb_x4":
            write(os.path.join(HERE, name + "_old.safetensors"), old_layout(sd, nb))
            write(os.path.join(HERE, name + "_bsrgan.safetensors"), bsrgan_layout(sd))
        with torch.no_grad():
            xi = x if name == "rrdb_x4" else F.pad(x, (0, 2, 0, 2), mode="reflect")  # x2: a multiple of 4
            y = net(xi)[:, :, : x.shape[2] * (4 if name == "rrdb_x4" else 2), : x.shape[3] * (4 if name == "rrdb_x4" else 2)]
        tensors["output_" + name] = y.clamp(0, 1)
        if name == "rrdb_x4":
            rrdb = net
    compact = Compact(8, 2, 4)
    randomize(compact)
    write(os.path.join(HERE, "compact_x4.safetensors"), {"params." + k: v for k, v in compact.state_dict().items()})
    with torch.no_grad():
        tensors["output_compact_x4"] = compact(x).clamp(0, 1)

    rng = np.random.RandomState(5)
    image = (rng.rand(29, 37, 3) * 255).astype(np.uint8)
    tensors["tile_input"] = torch.from_numpy(image)
    tile, overlap = 16, 4
    grid = split_grid(Image.fromarray(image), tile, overlap)
    s = 4
    scaled = []
    for y, h, row in grid:
        cells = [[x * s, w * s, Image.fromarray(run_on_image(rrdb, np.array(t)))] for x, w, t in row]
        scaled.append([y * s, h * s, cells])
    tensors["tile_output"] = torch.from_numpy(np.array(combine_grid(scaled, 37 * s, 29 * s, tile * s, overlap * s)))
    tensors["untiled_output"] = torch.from_numpy(run_on_image(rrdb, image))

    for w, h in ((16, 11), (90, 70), (37, 40)):
        out = np.array(Image.fromarray(image).resize((w, h), Image.LANCZOS))
        tensors["lanczos_%dx%d" % (w, h)] = torch.from_numpy(out)
    write(os.path.join(HERE, "golden.safetensors"), tensors)


if __name__ == "__main__":
    main()
