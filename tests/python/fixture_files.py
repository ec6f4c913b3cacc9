"""Fixture cases and safetensors files for the Python suites: finding cases under ATELIER_FIXTURES, reading and
writing safetensors without numpy, and the tiny SD1.x checkpoint the plugin suites serve (the tiny-sd case's text
encoder and VAE with the plugin cases' base UNet, which controlnet-tiny and motion-module-tiny fit)."""

import json
import os
import re
import struct

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIXTURES = os.environ.get("ATELIER_FIXTURES", os.path.join(SOURCE, "..", "shared", "fixtures"))


def cases_of(kind):
    found = []
    for name in sorted(os.listdir(FIXTURES)):
        path = os.path.join(FIXTURES, name, "case.json")
        if os.path.exists(path):
            with open(path) as f:
                if json.load(f).get("case") == kind:
                    found.append(os.path.join(FIXTURES, name))
    assert found, f"no '{kind}' case in {FIXTURES}"
    return found


def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)}, metadata."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    tensors = {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
               for k, v in header.items() if k != "__metadata__"}
    return tensors, header.get("__metadata__", {})


def write_safetensors(path, tensors, metadata=None):
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_plugin_base_checkpoint(folder, name, base_case):
    """folder/name.safetensors + name.yaml: tiny-sd's text encoder and VAE with `base_case`'s plugin-base-unet UNet."""
    base_dir = os.path.join(base_case, "..", "plugin-base-unet")
    tiny_dir = cases_of("tiny-sd")[0]
    with open(os.path.join(base_dir, "case.json")) as f:
        base_config = json.load(f)["config"]
    tiny, _ = read_safetensors(os.path.join(tiny_dir, "weights.safetensors"))
    base, _ = read_safetensors(os.path.join(base_dir, "weights.safetensors"))
    merged = {k: v for k, v in tiny.items() if not k.startswith("model.diffusion_model.")}
    merged.update({k: v for k, v in base.items() if k.startswith("model.diffusion_model.")})
    os.makedirs(folder, exist_ok=True)
    write_safetensors(os.path.join(folder, name + ".safetensors"), merged)
    with open(os.path.join(SOURCE, "tests", "data", "tiny-sd.yaml")) as f:
        yaml = f.read()
    yaml = re.sub(r"channel_mult: \[[^\]]*\]\n        num_heads: \d+",
                  "channel_mult: %s\n        num_heads: %d" % (json.dumps(base_config["channel_mult"]),
                                                                base_config["num_heads"]), yaml)
    with open(os.path.join(folder, name + ".yaml"), "w") as f:
        f.write(yaml)
