"""Motion in the embedded model's world (world.py): shapes at continuous positions and sizes, drawn anti-aliased
(4x supersampled), so a shape can move by fractions of a pixel. Used by the RIFE training (frame triplets), the
motion module training (captioned clips) and their evaluations, which measure where a shape is (its centroid).

Clips: one shape moving to the left / right / top / bottom, or growing from small to large in the centre; captions
use only words the embedded model knows, so the direction is named by a position word:
    "a red circle moving to the left, blue background"   (starts on the right, ends on the left)
    "a red circle growing from small to large, blue background"
A fixed ~10% of (motion, colour, kind, background) combinations is held out (world.held_out), never trained on."""

import math
import random

import numpy as np
from PIL import Image, ImageDraw

import world

SIZE = world.SIZE
MOTIONS = ("left", "right", "top", "bottom", "growing")
# Where a clip of each motion starts and ends (64-pixel coordinates: centre x, centre y, side).
_PATHS = {
    "left": ((48, 32), (16, 32)), "right": ((16, 32), (48, 32)),
    "top": ((32, 48), (32, 16)), "bottom": ((32, 16), (32, 48)),
    "growing": ((32, 32), (32, 32)),
}
_MOTION_PHRASE = {"left": "moving to the left", "right": "moving to the right", "top": "moving to the top",
                  "bottom": "moving to the bottom", "growing": "growing from small to large"}


def render_shapes(background, shapes, size=SIZE, supersample=4):
    """shapes: [{"colour", "kind", "cx", "cy", "side"}] in 64-pixel units (floats allowed) -> uint8 [size, size, 3],
    anti-aliased by drawing at `supersample`x and averaging (a box filter)."""
    big = size * supersample
    scale = big / SIZE
    image = Image.new("RGB", (big, big), world.COLOURS[background])
    draw = ImageDraw.Draw(image)
    for s in shapes:
        cx, cy, half = s["cx"] * scale, s["cy"] * scale, s["side"] * scale / 2
        fill = world.COLOURS[s["colour"]]
        if s["kind"] == "circle":
            draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=fill)
        elif s["kind"] == "square":
            draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
        else:
            draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
    if supersample > 1:
        image = image.resize((size, size), Image.BOX)
    return np.asarray(image)


def foreground(image):
    """Float mask in [0, 1]: how far each pixel is from the border's median colour (0 at 0, 1 beyond 70 RGB units)."""
    image = np.asarray(image, dtype=np.float32)[..., :3]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    distance = np.sqrt(((image - np.median(border, axis=0)) ** 2).sum(axis=2))
    return np.clip(distance / 70.0, 0.0, 1.0)


def centroid(image):
    """(cx, cy) of the foreground in 64-pixel units (the mask-weighted mean), or None when there is none."""
    mask = foreground(image)
    total = mask.sum()
    if total < 4:
        return None
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    return float((mask * xs).sum() / total * SIZE / w), float((mask * ys).sum() / total * SIZE / h)


def area(image):
    """The foreground's area in 64-pixel units squared."""
    mask = foreground(image)
    return float(mask.sum() * (SIZE / mask.shape[1]) ** 2)


# ---------------------------------------------------------------- RIFE: frame triplets

def random_motion_scene(rng):
    """A background and one or two shapes, each with a start (cx, cy, side) and an end: displacements up to 12 px
    (any direction), sizes changing by up to 30%. Shapes stay inside the frame."""
    bg = rng.choice(list(world.COLOURS))
    n = 1 if rng.random() < 0.7 else 2
    colours = rng.sample([c for c in world.COLOURS if c != bg], n)
    shapes = []
    for c in colours:
        side0 = rng.uniform(10, 30)
        side1 = side0 * rng.uniform(0.75, 1.3) if rng.random() < 0.3 else side0
        lo, hi = max(side0, side1) / 2 + 1, SIZE - max(side0, side1) / 2 - 1
        x0, y0 = rng.uniform(lo, hi), rng.uniform(lo, hi)
        distance, angle = rng.uniform(0, 12), rng.uniform(0, 2 * math.pi)
        x1 = min(max(x0 + distance * math.cos(angle), lo), hi)
        y1 = min(max(y0 + distance * math.sin(angle), lo), hi)
        shapes.append({"colour": c, "kind": rng.choice(world.SHAPES), "start": (x0, y0, side0), "end": (x1, y1, side1)})
    return {"background": bg, "shapes": shapes}


def scene_at(scene, t):
    """The shapes of a motion scene at time t in [0, 1] (linear in position and side)."""
    out = []
    for s in scene["shapes"]:
        (x0, y0, z0), (x1, y1, z1) = s["start"], s["end"]
        out.append({"colour": s["colour"], "kind": s["kind"], "cx": x0 + (x1 - x0) * t, "cy": y0 + (y1 - y0) * t,
                    "side": z0 + (z1 - z0) * t})
    return out


def true_flow(scene, t, target, size=SIZE):
    """The motion field RIFE predicts, float32 [size, size, 2] (x, y in pixels): for each pixel of the frame at time
    t, where its content is in the frame at time `target` (0 or 1), minus where it is; 0 on the background. Shapes
    move and scale about their centres; the last one drawn is on top."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    scale = size / SIZE
    flow = np.zeros((size, size, 2), np.float32)
    now, then = scene_at(scene, t), scene_at(scene, target)
    for a, b in zip(now, then):
        cx, cy, half = a["cx"] * scale, a["cy"] * scale, a["side"] * scale / 2
        u, v = (xs - cx) / half, (ys - cy) / half
        if a["kind"] == "circle":
            inside = u * u + v * v <= 1
        elif a["kind"] == "square":
            inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
        else:
            inside = (np.abs(v) <= 1) & (np.abs(u) <= (v + 1) / 2)
        k = b["side"] / a["side"]
        fx = b["cx"] * scale + (xs - cx) * k - xs
        fy = b["cy"] * scale + (ys - cy) * k - ys
        flow[inside] = np.stack([fx, fy], axis=-1)[inside]
    return flow


def triplet(rng, t=0.5):
    """(frame0, frame_t, frame1, scene): uint8 [64, 64, 3] each."""
    scene = random_motion_scene(rng)
    frames = [render_shapes(scene["background"], scene_at(scene, x)) for x in (0.0, t, 1.0)]
    return frames[0], frames[1], frames[2], scene


# ---------------------------------------------------------------- motion module: captioned clips

def clip_key(clip):
    return ("motion", clip["motion"], clip["colour"], clip["kind"], clip["background"])


def clip_caption(clip):
    return f"a {clip['colour']} {clip['kind']} {_MOTION_PHRASE[clip['motion']]}, {clip['background']} background"


def all_clips():
    out = []
    for motion in MOTIONS:
        for bg in world.COLOURS:
            for c in world.COLOURS:
                if c == bg:
                    continue
                for k in world.SHAPES:
                    out.append({"motion": motion, "colour": c, "kind": k, "background": bg})
    return out


def training_clip(rng, growing_share=None):
    """A random clip whose combination is not held out; growing_share, when given, is the chance of a growing clip
    (the other motions share the rest equally)."""
    while True:
        bg = rng.choice(list(world.COLOURS))
        if growing_share is None:
            motion = rng.choice(MOTIONS)
        else:
            motion = "growing" if rng.random() < growing_share else rng.choice(MOTIONS[:-1])
        clip = {"motion": motion, "colour": rng.choice([c for c in world.COLOURS if c != bg]),
                "kind": rng.choice(world.SHAPES), "background": bg}
        if not world.held_out(clip_key(clip)):
            return clip


def evaluation_clips(n=40, seed=0):
    """Held-out clips only, each motion equally often."""
    rng = random.Random(seed)
    held = [c for c in all_clips() if world.held_out(clip_key(c))]
    out = []
    for i in range(n):
        motion = MOTIONS[i % len(MOTIONS)]
        out.append(rng.choice([c for c in held if c["motion"] == motion]))
    return out


def render_clip(clip, frames, rng=None):
    """The clip's frames, uint8 [frames, 64, 64, 3]: the shape travels its path at constant speed (side 16 moving,
    16 -> 32 growing: the base model draws a 12-px shape poorly, so a module taught to start there smeared the
    first frames of 16-frame clips); rng jitters the path (±3 px across it, ±4 px at its ends) and the side (±2 px)."""
    (sx, sy), (ex, ey) = _PATHS[clip["motion"]]
    j = (lambda a: rng.uniform(-a, a)) if rng is not None else (lambda a: 0.0)
    across = j(3)
    if clip["motion"] in ("left", "right"):
        sx, ex, sy, ey = sx + j(4), ex + j(4), sy + across, ey + across
    elif clip["motion"] in ("top", "bottom"):
        sy, ey, sx, ex = sy + j(4), ey + j(4), sx + across, ex + across
    else:
        sx, sy = sx + j(3), sy + j(3)
        ex, ey = sx, sy
    side0, side1 = (16.0 + j(2), 32.0 + j(2)) if clip["motion"] == "growing" else (16.0 + j(2),) * 2
    out = []
    for f in range(frames):
        t = f / max(1, frames - 1)
        out.append(render_shapes(clip["background"], [{
            "colour": clip["colour"], "kind": clip["kind"], "cx": sx + (ex - sx) * t, "cy": sy + (ey - sy) * t,
            "side": side0 + (side1 - side0) * t}]))
    return np.stack(out)


def clip_checks(clip, frames):
    """Reads a generated clip [F, H, W, 3] back: {"direction": 1 when the centroid (or, growing, the shape's size:
    the square root of its area) moves monotonically the prompted way (every frame-to-frame step at most 0.5 px
    against it, and the whole clip at least 8 px along it; 6 px of size, where a true clip grows by 8.5 or more), "kept": the share of frames whose shape has the clip's most common colour
    and kind, "consistent": 1 when the shape keeps its colour and kind in every frame,
    "identity": 1 when every frame shows the prompted colour, kind and background (world.read_scene; stricter),
    "change": mean absolute frame-to-frame difference (0..255)}."""
    reads = [world.read_scene(f) for f in frames]
    identity = all(r["background"] == clip["background"] and r["shapes"] and r["shapes"][0]["colour"] == clip["colour"]
                   and r["shapes"][0]["kind"] == clip["kind"] for r in reads)
    looks = [(r["shapes"][0]["colour"], r["shapes"][0]["kind"]) if r["shapes"] else None for r in reads]
    consistent = looks[0] is not None and all(f == looks[0] for f in looks)
    common = max(set(looks), key=looks.count)
    kept = looks.count(common) / len(looks) if common is not None else 0.0
    if clip["motion"] == "growing":
        values = [math.sqrt(area(f)) for f in frames]  # a size in pixels, held to the centroid's slack
        sign, slack, need = 1.0, 0.5, 6.0
    else:
        points = [centroid(f) for f in frames]
        if any(p is None for p in points):
            values = None
        else:
            axis = 0 if clip["motion"] in ("left", "right") else 1
            values = [p[axis] for p in points]
        sign = -1.0 if clip["motion"] in ("left", "top") else 1.0
        slack, need = 0.5, 8.0
    direction = 0
    if values is not None:
        steps = [sign * (b - a) for a, b in zip(values, values[1:])]
        direction = int(min(steps) >= -slack and sign * (values[-1] - values[0]) >= need)
    f = np.asarray(frames, dtype=np.float32)
    change = float(np.abs(f[1:] - f[:-1]).mean()) if len(f) > 1 else 0.0
    return {"direction": direction, "kept": kept, "consistent": int(consistent), "identity": int(identity),
            "change": change}
