"""The procedural world the embedded model is trained on: one or two flat shapes (circle, square, triangle) in one
of 8 colours, at one of 5 positions, small or large, on a background of another colour, captioned in plain English;
a fixed ~10% of attribute combinations held out for evaluation; and the scorer that reads those attributes back
from pixels (background colour, each shape's colour, position, size and kind).

Pure numpy + PIL (Debian's python3-numpy, python3-pil): the training uses it, and so do the tests that score the
daemon's images (tests/python/test_embedded_model.py)."""

import hashlib
import random

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
COLOURS = {  # name -> RGB; far apart, so the nearest palette colour of a blurry pixel is still right
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 225), "yellow": (240, 220, 40),
    "purple": (140, 50, 180), "orange": (245, 140, 20), "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48), "centre": (32, 32)}
PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
           "centre": "in the centre"}
SIZES = {"small": 16, "large": 30}  # the shape's side / diameter in pixels at 64x64
SIZE_THRESHOLD = 23  # the scorer's boundary between small and large (bounding-box side)
CHANCE = {"background": 1 / 8, "colour": 1 / 7, "position": 1 / 5, "size": 1 / 2, "kind": 1 / 3,
          "binding": 1 / 42}  # binding: both shapes' colours right, each at its place (7 x 6 ordered pairs)


# ---------------------------------------------------------------- scenes and captions

def held_out(key):
    """A fixed ~10% of attribute combinations (by hash), never trained on."""
    return int(hashlib.md5(repr(key).encode()).hexdigest(), 16) % 10 == 0


def single_key(s):
    return ("1", s["colour"], s["kind"], s["position"], s["size"], s["background"])


def double_key(a, b, bg):
    return ("2", a["colour"], a["kind"], a["position"], b["colour"], b["kind"], b["position"], bg)


def random_scene(rng, two=None):
    """{"background", "shapes": [{"colour","kind","position","size"}, ...]}; two shapes differ in colour and place."""
    two = rng.random() < 0.3 if two is None else two
    bg = rng.choice(list(COLOURS))
    colours = rng.sample([c for c in COLOURS if c != bg], 2 if two else 1)
    positions = rng.sample(list(POSITIONS), 2 if two else 1)
    if two and positions[0] in ("right", "bottom") and positions[1] in ("left", "top"):
        positions.reverse()  # captions read left to right / top to bottom more often than not
    shapes = [{"colour": c, "kind": rng.choice(SHAPES), "position": p, "size": rng.choice(list(SIZES))}
              for c, p in zip(colours, positions)]
    if two and any(s["position"] == "centre" for s in shapes):
        for s in shapes:
            s["size"] = "small"  # a large shape in the centre would cover its neighbour
    return {"background": bg, "shapes": shapes}


def scene_key(scene):
    s = scene["shapes"]
    return single_key({**s[0], "background": scene["background"]}) if len(s) == 1 else double_key(
        s[0], s[1], scene["background"])


def caption(scene, rng=None, with_size=True):
    """"a small red circle on the left, blue background"; "a red circle on the left and a small green square at
    the top, white background". rng varies the wording in training (centre/center, size word omitted)."""
    parts = []
    for s in scene["shapes"]:
        size = s["size"] + " " if with_size and (rng is None or rng.random() < 0.85) else ""
        phrase = PHRASES[s["position"]]
        if rng is not None and s["position"] == "centre" and rng.random() < 0.5:
            phrase = "in the center"
        parts.append(f"a {size}{s['colour']} {s['kind']} {phrase}")
    return " and ".join(parts) + f", {scene['background']} background"


def render(scene, rng=None, size=SIZE):
    """The scene as an RGB uint8 array [size, size, 3]; rng jitters position (±3 px) and size (±2 px)."""
    scale = size / SIZE
    image = Image.new("RGB", (size, size), COLOURS[scene["background"]])
    draw = ImageDraw.Draw(image)
    for s in scene["shapes"]:
        cx, cy = POSITIONS[s["position"]]
        side = SIZES[s["size"]]
        if rng is not None:
            cx, cy, side = cx + rng.randint(-3, 3), cy + rng.randint(-3, 3), side + rng.randint(-2, 2)
        cx, cy, half = cx * scale, cy * scale, side * scale / 2
        box = [cx - half, cy - half, cx + half - 1, cy + half - 1]
        fill = COLOURS[s["colour"]]
        if s["kind"] == "circle":
            draw.ellipse(box, fill=fill)
        elif s["kind"] == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - half), (cx + half - 1, cy + half - 1), (cx - half, cy + half - 1)], fill=fill)
    return np.asarray(image)


def caption_without_places(scene):
    """The caption with no place words ("a small red circle, blue background"): a ControlNet hint says where."""
    return " and ".join(f"a {s['size']} {s['colour']} {s['kind']}" for s in scene["shapes"]) + \
        f", {scene['background']} background"


# A flat segmentation map of a scene (what the shipped seg ControlNet reads): each shape filled with its kind's
# ADE20K palette colour on the background's ("wall").
SEG_BACKGROUND = (120, 120, 120)
SEG_COLOURS = {"circle": (255, 6, 82), "square": (4, 200, 3), "triangle": (6, 230, 230)}


def render_segmentation(scene, rng=None, size=SIZE):
    """The scene as render() draws it (the same jitter for the same rng state), in the segmentation palette."""
    flat = {"background": "seg_bg", "shapes": [dict(s, colour="seg_" + s["kind"]) for s in scene["shapes"]]}
    saved = dict(COLOURS)
    COLOURS.update({"seg_bg": SEG_BACKGROUND, **{"seg_" + k: v for k, v in SEG_COLOURS.items()}})
    try:
        return render(flat, rng, size)
    finally:
        COLOURS.clear()
        COLOURS.update(saved)


def all_scenes(two):
    """Every scene of the grammar (single: 8 bg x 7 colours x 3 kinds x 5 places x 2 sizes)."""
    out = []
    for bg in COLOURS:
        for c in COLOURS:
            if c == bg:
                continue
            for k in SHAPES:
                for p in POSITIONS:
                    if not two:
                        for z in SIZES:
                            out.append({"background": bg, "shapes": [
                                {"colour": c, "kind": k, "position": p, "size": z}]})
                        continue
                    for c2 in COLOURS:
                        if c2 in (bg, c):
                            continue
                        for k2 in SHAPES:
                            for p2 in POSITIONS:
                                if p2 == p:
                                    continue
                                z = "small" if "centre" in (p, p2) else "large"
                                out.append({"background": bg, "shapes": [
                                    {"colour": c, "kind": k, "position": p, "size": z},
                                    {"colour": c2, "kind": k2, "position": p2, "size": z}]})
    return out


def evaluation_scenes(n_single=64, n_double=32, seed=0):
    """Held-out scenes only (a fixed sample of them)."""
    rng = random.Random(seed)
    single = [s for s in all_scenes(False) if held_out(scene_key(s))]
    double = [s for s in all_scenes(True) if held_out(scene_key(s))]
    double = [s for s in double if not (s["shapes"][0]["position"] in ("right", "bottom")
                                        and s["shapes"][1]["position"] in ("left", "top"))]
    return rng.sample(single, min(n_single, len(single))) + rng.sample(double, min(n_double, len(double)))


def training_scene(rng):
    while True:
        scene = random_scene(rng)
        if not held_out(scene_key(scene)):
            return scene


# ---------------------------------------------------------------- the scorer

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_NAMES = list(COLOURS)


def nearest_colour(rgb):
    return _NAMES[int(np.argmin(((_PALETTE - np.asarray(rgb, np.float32)) ** 2).sum(axis=1)))]


def _position(cx, cy, size):
    s = SIZE / size
    return min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx * s) ** 2 + (POSITIONS[p][1] - cy * s) ** 2)


def _kind(mask, x0, y0, x1, y1):
    """The shape whose ideal mask over this bounding box overlaps the pixels best (intersection over union)."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    rx, ry = max((x1 - x0 + 1) / 2, 1.0), max((y1 - y0 + 1) / 2, 1.0)
    u, v = (xx - cx) / rx, (yy - cy) / ry  # -1..1 over the box
    inside_box = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    ideal = {"square": inside_box, "circle": u * u + v * v <= 1,
             "triangle": inside_box & (np.abs(u) <= (v + 1) / 2)}  # apex at the top, base at the bottom

    def iou(a):
        return (a & mask).sum() / max(1, (a | mask).sum())

    return max(SHAPES, key=lambda k: iou(ideal[k]))


def read_scene(image):
    """Reads a [H, W, 3] uint8 image: {"background", "shapes": [{"colour","kind","position","size"}, ...]},
    shapes by decreasing area (at most two). Background = the border's median colour; foreground = pixels more
    than 70 RGB units from it, labelled by their nearest palette colour; each colour with enough pixels is a shape:
    position from its centroid, size from its bounding box, kind from how much of the box it fills."""
    image = np.asarray(image, dtype=np.float32)[..., :3]
    h, w, _ = image.shape
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = nearest_colour(bg_rgb)
    fg = np.sqrt(((image - bg_rgb) ** 2).sum(axis=2)) > 70
    labels = np.argmin(((image[..., None, :] - _PALETTE) ** 2).sum(axis=3), axis=2)
    min_pixels = max(6, int(0.004 * h * w))
    shapes = []
    for index, name in enumerate(_NAMES):
        if name == background:
            continue
        mask = fg & (labels == index)
        count = int(mask.sum())
        if count < min_pixels:
            continue
        ys, xs = np.nonzero(mask)
        # The bounding box of the bulk (1st..99th percentile) so that stray pixels do not stretch it.
        x0, x1 = np.percentile(xs, [1, 99])
        y0, y1 = np.percentile(ys, [1, 99])
        side = max(x1 - x0 + 1, y1 - y0 + 1) * SIZE / w
        kind = _kind(mask, x0, y0, x1, y1)
        shapes.append({"colour": name, "kind": kind, "position": _position(xs.mean(), ys.mean(), w),
                       "size": "large" if side > SIZE_THRESHOLD else "small", "pixels": count})
    shapes.sort(key=lambda s: -s["pixels"])
    return {"background": background, "shapes": shapes[:2]}


def score(scene, image):
    """Per-attribute hits (1/0) of an image against the scene it should show. Single-shape scenes: background,
    colour, position, size, kind of the largest shape. Two-shape scenes: background and binding (each asked colour
    found, at its asked place)."""
    got = read_scene(image)
    hits = {"background": int(got["background"] == scene["background"])}
    want = scene["shapes"]
    if len(want) == 1:
        s = got["shapes"][0] if got["shapes"] else {}
        for attribute in ("colour", "position", "size", "kind"):
            hits[attribute] = int(s.get(attribute) == want[0][attribute])
    else:
        found = {s["colour"]: s for s in got["shapes"]}
        hits["binding"] = int(all(w["colour"] in found and found[w["colour"]]["position"] == w["position"]
                                  for w in want))
    return hits
