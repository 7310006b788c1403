"""Procedurally drawn mugshots and sketches, so ``make demo`` and the tests need no real images.

Real face data carries research-only licences and cannot ship with the repository, yet every
stage downstream (detect, align, embed, generate, evaluate) needs faces that a real detector
accepts and whose identity is at least weakly recoverable. So each demo identity is a fixed set
of drawing parameters derived from ``(seed, identity)``, and each photo adds small nuisance
changes (pose, light, expression, noise) derived from ``(seed, identity, photo)``. Everything is
drawn with OpenCV on a supersampled canvas and stored as PNG, so the same seed gives the same
bytes on every machine.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

Size = tuple[int, int]  # (width, height), OpenCV's order
Colour = tuple[float, float, float]

DEFAULT_SIZE: Size = (192, 240)
DEMO_STYLE = "demo-pencil"
MANIFEST_NAME = "pairs.csv"
MANIFEST_COLUMNS = ("identity_id", "photo_path", "sketch_path", "style")
PHOTO_DIR = "photos"
SKETCH_DIR = "sketches"

# Drawing happens this many times larger, then is area-downsampled: anti-aliasing for free and
# strokes that survive the detector's own downscaling.
_SS = 4
# Canvases are float32: half the memory traffic of float64 for blurs and blends, ample precision
# for 8-bit output.
_F = np.float32

# BGR palettes; an identity interpolates between neighbours so tones form a continuum.
_SKIN = np.array(
    [
        (189, 214, 246),
        (160, 190, 233),
        (128, 167, 214),
        (100, 140, 190),
        (72, 108, 160),
        (50, 78, 118),
    ],
    dtype=np.float64,
)
_HAIR = np.array(
    [(20, 20, 25), (30, 45, 70), (40, 70, 115), (70, 120, 180), (140, 140, 145), (25, 35, 90)],
    dtype=np.float64,
)
_IRIS = np.array(
    [(40, 60, 90), (30, 45, 60), (120, 110, 60), (90, 120, 70), (60, 90, 120)], dtype=np.float64
)
HAIR_STYLES = ("short", "fringe", "side-part", "long", "receding", "buzz")


@dataclass(frozen=True)
class FaceParams:
    """What makes one demo identity look like itself; lengths in units of the head half-width."""

    face_w: float  # head half-width as a fraction of the canvas width
    face_aspect: float  # head half-height / half-width
    jaw: float  # 0 = round chin, larger = narrower jaw
    skin: Colour
    eye_spacing: float  # eye centre offset from the midline
    eye_size: float
    eye_height: float  # eye line below the head centre
    iris: Colour
    brow_thickness: float
    brow_tilt: float
    brow_raise: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_thickness: float
    ear_size: float
    hair_style: str
    hair: Colour
    hairline: float
    background: Colour
    shirt: Colour
    texture_seed: int


@dataclass(frozen=True)
class Nuisance:
    """What changes between two photos of one person and must not change who it is."""

    angle: float  # degrees
    dx: float  # fraction of the width
    dy: float  # fraction of the height
    scale: float
    light_angle: float  # radians
    light_strength: float
    smile: float  # -1 frown .. 1 smile
    eye_open: float
    noise_sigma: float
    noise_seed: int


NEUTRAL = Nuisance(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.15, 1.0, 0.0, 0)


def identity_id(identity: int) -> str:
    """Folder name and manifest id of a demo identity."""
    return f"demo-{identity:03d}"


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


def _mix(palette: np.ndarray, t: float) -> Colour:
    t = float(np.clip(t, 0.0, 1.0)) * (len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    c = palette[i] * (1 - (t - i)) + palette[i + 1] * (t - i)
    return (float(c[0]), float(c[1]), float(c[2]))


def _c(v: np.ndarray | Colour) -> Colour:
    """OpenCV wants plain Python floats for colours."""
    return (float(v[0]), float(v[1]), float(v[2]))


def identity_params(identity: int, seed: int = 0) -> FaceParams:
    """The fixed look of ``identity``; another seed draws another population."""
    r = _rng(seed, identity, 0x1D)
    u = r.uniform
    bg = np.clip(u(150, 215) + r.normal(0, 8, 3), 0, 255)
    return FaceParams(
        face_w=u(0.24, 0.29),
        face_aspect=u(1.22, 1.42),
        jaw=u(0.05, 0.35),
        skin=_mix(_SKIN, u(0, 1)),
        eye_spacing=u(0.34, 0.44),
        eye_size=u(0.17, 0.23),
        eye_height=u(-0.02, 0.08),
        iris=_c(_IRIS[r.integers(len(_IRIS))]),
        brow_thickness=u(0.035, 0.085),
        brow_tilt=u(-0.12, 0.18),
        brow_raise=u(0.0, 0.08),
        nose_length=u(0.36, 0.52),
        nose_width=u(0.15, 0.24),
        mouth_width=u(0.28, 0.42),
        lip_thickness=u(0.04, 0.09),
        ear_size=u(0.2, 0.3),
        hair_style=HAIR_STYLES[int(r.integers(len(HAIR_STYLES)))],
        hair=_mix(_HAIR, u(0, 1)),
        hairline=u(0.0, 0.12),
        background=_c(bg),
        shirt=_c(r.uniform(30, 200, 3)),
        texture_seed=int(r.integers(2**31)),
    )


def photo_nuisance(identity: int, photo: int, seed: int = 0) -> Nuisance:
    """Small, bounded per-photo changes: a detector and a recogniser should shrug them off."""
    r = _rng(seed, identity, photo, 0x9E)
    u = r.uniform
    return Nuisance(
        angle=u(-4, 4),
        dx=u(-0.03, 0.03),
        dy=u(-0.03, 0.03),
        scale=u(0.95, 1.05),
        light_angle=u(0, 2 * math.pi),
        light_strength=u(0.0, 0.25),
        smile=u(-0.3, 0.8),
        eye_open=u(0.8, 1.05),
        noise_sigma=u(1.0, 4.0),
        noise_seed=int(r.integers(2**31)),
    )


class _Frame:
    """Maps face units (x right, y down, 1 = head half-width) to supersampled pixels."""

    def __init__(self, p: FaceParams, size: Size) -> None:
        w, h = size
        self.w, self.h = w * _SS, h * _SS
        self.s = p.face_w * w * _SS
        self.cx = self.w / 2
        self.cy = self.h * 0.47
        self.gx = ((np.arange(self.w)[None, :] - self.cx) / self.s).astype(_F)
        self.gy = ((np.arange(self.h)[:, None] - self.cy) / self.s).astype(_F)

    def pt(self, x: float, y: float) -> tuple[int, int]:
        return (round(self.cx + x * self.s), round(self.cy + y * self.s))

    def pts(self, xy: np.ndarray) -> np.ndarray:
        out = np.stack([self.cx + xy[:, 0] * self.s, self.cy + xy[:, 1] * self.s], axis=1)
        return np.round(out).astype(np.int32)

    def len(self, v: float) -> int:
        return max(1, round(v * self.s))


@dataclass(frozen=True)
class _Features:
    """Landmark geometry in face units, shared by the photo and the sketch renderers."""

    eyes: tuple[tuple[float, float], tuple[float, float]]
    eye_w: float
    eye_h: float
    brow_y: float
    nose_top: float
    nose_tip: float
    mouth_y: float
    mouth_w: float
    ear_y: float


def _features(p: FaceParams, n: Nuisance) -> _Features:
    ey, ex = p.eye_height, p.eye_spacing
    return _Features(
        eyes=((-ex, ey), (ex, ey)),
        eye_w=p.eye_size,
        eye_h=p.eye_size * 0.48 * n.eye_open,
        brow_y=ey - p.eye_size * 0.75 - p.brow_raise,
        nose_top=ey + 0.05,
        nose_tip=ey + p.nose_length,
        mouth_y=ey + p.nose_length + 0.22 + p.lip_thickness,
        mouth_w=p.mouth_width,
        ear_y=ey + 0.18,
    )


def _head_outline(p: FaceParams, n: int = 120) -> np.ndarray:
    """Head contour in face units: an ellipse whose lower half narrows toward the chin."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    s = np.sin(t)
    narrow = 1 - p.jaw * np.clip(s, 0, 1) ** 2
    return np.stack([np.cos(t) * narrow, s * p.face_aspect], axis=1)


def _hairline(p: FaceParams, f: _Features, x: np.ndarray) -> np.ndarray:
    """Lower edge of the hair over forehead and temples, per style (face units, y down)."""
    a = p.face_aspect
    base = -a * (0.46 - p.hairline) + 0.12 * x**2
    style = p.hair_style
    if style == "fringe":
        line = base + 0.2 + 0.03 * np.cos(x * 23)
    elif style == "side-part":
        line = base + 0.1 * (x + 1) - 0.06
    elif style == "receding":
        line = -a * 0.6 + 0.05 - 0.2 * np.exp(-(((np.abs(x) - 0.5) / 0.22) ** 2))
    elif style == "buzz":
        line = base - 0.04
    else:
        line = base
    # Sideburns: the hair reaches down toward the ears at the sides.
    side = np.clip((np.abs(x) - 0.84) / 0.1, 0, 1)
    burn = f.eyes[0][1] + (0.3 if style == "long" else -0.12)
    return line * (1 - side) + burn * side


def _hair_mask(p: FaceParams, f: _Features, fr: _Frame) -> np.ndarray:
    """Soft mask (0..1, supersampled) of the hair mass over the skull."""
    a = p.face_aspect
    puff = 1.03 if p.hair_style == "buzz" else 1.1
    inside = (fr.gx / puff) ** 2 + ((fr.gy + 0.03 * a) / (a * puff)) ** 2 <= 1
    mask = inside & (fr.gy < _hairline(p, f, fr.gx))
    return cv2.GaussianBlur(mask.astype(_F), (0, 0), _SS * 0.5)


def _long_hair_mask(p: FaceParams, fr: _Frame) -> np.ndarray:
    """Hair that falls behind the head to the shoulders (long style only)."""
    a = p.face_aspect
    m = np.zeros((fr.h, fr.w), np.uint8)
    if p.hair_style == "long":
        cv2.ellipse(m, fr.pt(0, -0.05 * a), (fr.len(1.25), fr.len(a * 1.15)), 0, 180, 360, 255, -1)
        poly = np.array([[-1.25, -0.05 * a], [1.25, -0.05 * a], [1.35, a * 1.3], [-1.35, a * 1.3]])
        cv2.fillPoly(m, [fr.pts(poly)], 255)
    return cv2.GaussianBlur(m.astype(_F) / 255, (0, 0), _SS * 0.5)


def _mouth_curve(f: _Features, smile: float, n: int = 17) -> np.ndarray:
    x = np.linspace(-f.mouth_w, f.mouth_w, n)
    y = f.mouth_y - smile * 0.07 * ((x / f.mouth_w) ** 2 - 0.3)
    return np.stack([x, y], axis=1)


def _lips(f: _Features, p: FaceParams, smile: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper lip edge, the line between the lips, lower lip edge."""
    mid = _mouth_curve(f, smile)
    bump = p.lip_thickness * (1 - (mid[:, 0] / f.mouth_w) ** 2)
    upper, lower = mid.copy(), mid.copy()
    upper[:, 1] -= bump * 0.9
    lower[:, 1] += bump * 1.25
    return upper, mid, lower


def _brow(p: FaceParams, f: _Features, sx: int) -> np.ndarray:
    ex = sx * p.eye_spacing
    return np.array(
        [
            [ex - sx * f.eye_w * 1.05, f.brow_y + 0.05],
            [ex, f.brow_y - 0.03],
            [ex + sx * f.eye_w * 1.25, f.brow_y + p.brow_tilt * 0.3],
        ]
    )


def _nose_side(p: FaceParams, f: _Features, sx: int) -> np.ndarray:
    return np.array(
        [
            [sx * 0.1, f.nose_top],
            [sx * 0.12, f.nose_top + 0.5 * (f.nose_tip - f.nose_top)],
            [sx * p.nose_width * 0.9, f.nose_tip],
            [sx * p.nose_width * 0.4, f.nose_tip + 0.07],
        ]
    )


def _form_shadow(p: FaceParams, f: _Features, fr: _Frame) -> np.ndarray:
    """How much light each point of the head receives (1 = full): rim fall-off plus shadows of
    the sockets, nose and lip, which are what makes a drawn disk read as a face."""
    a = p.face_aspect
    r2 = fr.gx**2 + (fr.gy / a) ** 2
    light = 1.08 - 0.38 * np.clip(r2, 0, 1.2) ** 2
    sh = np.ones((fr.h, fr.w), _F)
    for ex, ey in f.eyes:
        cv2.ellipse(
            sh,
            fr.pt(ex, ey - 0.03),
            (fr.len(f.eye_w * 1.5), fr.len(f.eye_w * 0.95)),
            0,
            0,
            360,
            0.72,
            -1,
        )
    cv2.polylines(sh, [fr.pts(_nose_side(p, f, -1))], False, 0.62, fr.len(0.07))
    cv2.ellipse(
        sh,
        fr.pt(0, f.nose_tip + 0.08),
        (fr.len(p.nose_width * 1.1), fr.len(0.06)),
        0,
        0,
        360,
        0.7,
        -1,
    )
    cv2.ellipse(
        sh,
        fr.pt(0, f.mouth_y + p.lip_thickness * 2.2 + 0.08),
        (fr.len(f.mouth_w * 0.6), fr.len(0.06)),
        0,
        0,
        360,
        0.8,
        -1,
    )
    return light * _soft_blur(sh, fr.s * 0.07)


def _soft_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """A wide blur done at 1/_SS resolution: same look, a sixteenth of the work."""
    h, w = x.shape[:2]
    small = cv2.resize(x, (w // _SS, h // _SS), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / _SS)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _poly_mask(fr: _Frame, poly: np.ndarray) -> np.ndarray:
    m = np.zeros((fr.h, fr.w), np.uint8)
    cv2.fillPoly(m, [fr.pts(poly)], 255, cv2.LINE_AA)
    return m.astype(_F) / 255


def _over(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Paint ``colour`` (a BGR triple or an image) through a soft mask, in place."""
    img += (np.asarray(colour, _F) - img) * mask[:, :, None]
    return img


def _hair_strands(fr: _Frame, p: FaceParams, count: int = 260) -> np.ndarray:
    """Strand texture (-1..1) so hair reads as hair rather than a flat cap."""
    r = _rng(p.texture_seed, 0x57)
    tex = np.zeros((fr.h, fr.w), _F)
    a = p.face_aspect
    for _ in range(count):
        x0 = r.uniform(-1.3, 1.3)
        y0 = r.uniform(-a * 1.15, a * 1.3 if p.hair_style == "long" else 0.2)
        ang = math.atan2(y0 + a * 1.1, x0) + r.normal(0, 0.15)
        ln = r.uniform(0.15, 0.45)
        p1 = fr.pt(x0, y0)
        p2 = fr.pt(x0 + ln * math.cos(ang), y0 + ln * math.sin(ang))
        cv2.line(tex, p1, p2, float(r.choice([-1.0, 1.0])), max(1, _SS // 2), cv2.LINE_AA)
    return tex


def _draw_photo(p: FaceParams, n: Nuisance, size: Size) -> np.ndarray:
    fr = _Frame(p, size)
    f = _features(p, n)
    a = p.face_aspect
    skin, hair = np.array(p.skin, _F), np.array(p.hair, _F)
    img = np.empty((fr.h, fr.w, 3), _F)
    img[:] = np.array(p.background) * (1.05 - 0.12 * np.linspace(0, 1, fr.h))[:, None, None]
    strands = _hair_strands(fr, p)
    hair_tex = hair * (1 + 0.25 * strands[:, :, None])
    img = _over(img, _long_hair_mask(p, fr), hair_tex * 0.8)
    shirt = np.array(
        [
            [-2.7, a + 4.0],
            [-2.7, a + 1.0],
            [-1.6, a + 0.5],
            [1.6, a + 0.5],
            [2.7, a + 1.0],
            [2.7, a + 4.0],
        ]
    )
    img = _over(img, _poly_mask(fr, shirt), np.array(p.shirt))
    neck = np.array(
        [[-0.58, a * 0.4], [0.58, a * 0.4], [0.62, a + 0.45], [0, a + 0.72], [-0.62, a + 0.45]]
    )
    img = _over(img, _poly_mask(fr, neck), skin * 0.72)
    for sx in (-1, 1):
        cv2.ellipse(
            img,
            fr.pt(sx * 0.98, f.ear_y),
            (fr.len(p.ear_size * 0.55), fr.len(p.ear_size)),
            0,
            0,
            360,
            _c(skin * 0.9),
            -1,
            cv2.LINE_AA,
        )
        cv2.ellipse(
            img,
            fr.pt(sx * 1.0, f.ear_y),
            (fr.len(p.ear_size * 0.28), fr.len(p.ear_size * 0.6)),
            0,
            0,
            360,
            _c(skin * 0.7),
            -1,
            cv2.LINE_AA,
        )
    head = _poly_mask(fr, _head_outline(p))
    img = _over(img, head, skin[None, None, :] * _form_shadow(p, f, fr)[:, :, None])
    cv2.ellipse(
        img,
        fr.pt(0, f.nose_tip - 0.03),
        (fr.len(0.05), fr.len(0.035)),
        0,
        0,
        360,
        _c(np.minimum(skin * 1.1, 255)),
        -1,
        cv2.LINE_AA,
    )
    hc = hair_tex if p.hair_style != "buzz" else hair_tex * 0.5 + skin * 0.5
    img = _over(img, _hair_mask(p, f, fr), hc)
    for ex, ey in f.eyes:
        c, ax = fr.pt(ex, ey), (fr.len(f.eye_w), fr.len(f.eye_h))
        cv2.ellipse(img, c, ax, 0, 0, 360, (225, 230, 235), -1, cv2.LINE_AA)
        cv2.circle(img, c, fr.len(f.eye_h * 0.95), _c(p.iris), -1, cv2.LINE_AA)
        cv2.circle(img, c, fr.len(f.eye_h * 0.45), (10, 10, 10), -1, cv2.LINE_AA)
        cv2.circle(
            img,
            fr.pt(ex + f.eye_h * 0.25, ey - f.eye_h * 0.3),
            fr.len(f.eye_h * 0.18),
            (245, 245, 245),
            -1,
            cv2.LINE_AA,
        )
        cv2.ellipse(img, c, ax, 0, 180, 360, (25, 25, 30), fr.len(0.035), cv2.LINE_AA)
        cv2.ellipse(img, c, ax, 0, 20, 160, _c(skin * 0.55), fr.len(0.015), cv2.LINE_AA)
    for sx in (-1, 1):
        cv2.polylines(
            img,
            [fr.pts(_brow(p, f, sx))],
            False,
            _c(hair * 0.8 + 10),
            fr.len(p.brow_thickness),
            cv2.LINE_AA,
        )
        cv2.ellipse(
            img,
            fr.pt(sx * p.nose_width * 0.45, f.nose_tip + 0.04),
            (fr.len(0.06), fr.len(0.03)),
            sx * 20,
            0,
            360,
            _c(skin * 0.35),
            -1,
            cv2.LINE_AA,
        )
    upper, mid, lower = _lips(f, p, n.smile)
    lips = np.concatenate([upper, lower[::-1]])
    img = _over(img, _poly_mask(fr, lips), skin * np.array([0.75, 0.72, 0.95]))
    cv2.polylines(img, [fr.pts(mid)], False, _c(skin * 0.3), fr.len(0.025), cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), _SS * 0.6)
    return _finish(img, n, size)


def _finish(img: np.ndarray, n: Nuisance, size: Size) -> np.ndarray:
    """Pose, light and sensor noise, then area-downsample to the target size."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h * 0.47), n.angle, n.scale)
    m[0, 2] += n.dx * w
    m[1, 2] += n.dy * h
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    w, h = size
    gx = (np.arange(w)[None, :] / w - 0.5) * math.cos(n.light_angle)
    gy = (np.arange(h)[:, None] / h - 0.5) * math.sin(n.light_angle)
    gain = 1 + n.light_strength * (gx + gy)
    img = img * (gain[:, :, None] if img.ndim == 3 else gain)
    if n.noise_sigma > 0:
        img = img + np.random.default_rng(n.noise_seed).normal(0, n.noise_sigma, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _stroke(
    ink: np.ndarray,
    fr: _Frame,
    pts: np.ndarray,
    dark: float,
    width: float,
    r: np.random.Generator,
    passes: int = 2,
) -> None:
    """A pencil line: a few slightly wobbly passes over the same path, darkest wins."""
    for _ in range(passes):
        xy = fr.pts(pts + r.normal(0, 0.008, pts.shape))
        pad = fr.len(width) + 2
        x0, y0 = np.maximum(xy.min(axis=0) - pad, 0)
        x1, y1 = xy.max(axis=0) + pad
        roi = ink[y0:y1, x0:x1]  # a view: only the stroke's box is touched
        layer = np.zeros_like(roi)
        cv2.polylines(
            layer, [xy - [x0, y0]], False, dark * r.uniform(0.75, 1.0), fr.len(width), cv2.LINE_AA
        )
        np.maximum(roi, layer, out=roi)


def _hatching(fr: _Frame, r: np.random.Generator, angle: float, spacing: float) -> np.ndarray:
    """Parallel pencil strokes (0..1) covering the canvas; shaded areas reveal them."""
    layer = np.zeros((fr.h, fr.w), _F)
    step = max(2, fr.len(spacing))
    diag = int(math.hypot(fr.w, fr.h))
    ca, sa = math.cos(angle), math.sin(angle)
    for k in range(-diag, diag, step):
        off = k + r.normal(0, step * 0.15)
        cx, cy = fr.w / 2 - sa * off, fr.h / 2 + ca * off
        p1 = (round(cx - ca * diag), round(cy - sa * diag))
        p2 = (round(cx + ca * diag), round(cy + sa * diag))
        cv2.line(layer, p1, p2, r.uniform(0.6, 1.0), max(1, _SS // 2), cv2.LINE_AA)
    return layer


def _draw_sketch(p: FaceParams, size: Size, texture_seed: int) -> np.ndarray:
    fr = _Frame(p, size)
    f = _features(p, NEUTRAL)
    a = p.face_aspect
    r = _rng(texture_seed, 0x5C)
    head = _poly_mask(fr, _head_outline(p))
    hair = np.maximum(_hair_mask(p, f, fr), _long_hair_mask(p, fr) * (1 - head))
    # Tone: where the photo would be dark, the artist shades with hatching and smudge.
    shadow = 1 - _form_shadow(p, f, fr)
    neck = _poly_mask(
        fr, np.array([[-0.6, a * 0.6], [0.6, a * 0.6], [0.62, a + 0.45], [-0.62, a + 0.45]])
    )
    under_chin = np.clip(1 - (fr.gy - a * 0.85) / 0.5, 0, 1) * neck * (1 - head)
    side_light = np.clip(0.5 + 0.5 * fr.gx, 0, 1)  # the artist lights the face from the left
    tone = np.clip(shadow * (1.5 + side_light), 0, 1) * head * (1 - hair) + 0.7 * under_chin
    hatch = np.maximum(
        _hatching(fr, r, math.radians(55), 0.05),
        _hatching(fr, r, math.radians(-35), 0.07) * (tone > 0.4),
    )
    ink = 0.6 * tone * hatch + 0.22 * tone
    hair_tone = 0.2 + 0.25 * (np.mean(p.hair) < 80)
    strands = np.abs(_hair_strands(fr, p, count=600))
    ink = np.maximum(ink, hair * (hair_tone + 0.6 * strands))
    ink = cv2.GaussianBlur(ink, (0, 0), _SS * 0.4)
    # Contours.
    _stroke(ink, fr, np.vstack([_head_outline(p), _head_outline(p)[:1]]), 0.8, 0.025, r)
    for sx in (-1, 1):
        t = np.linspace(-math.pi * 0.55, math.pi * 0.55, 20)
        ear = np.stack(
            [sx * (0.98 + p.ear_size * 0.55 * np.cos(t)), f.ear_y + p.ear_size * np.sin(t)], axis=1
        )
        _stroke(ink, fr, ear, 0.7, 0.02, r)
        _stroke(ink, fr, np.array([[sx * 0.58, a * 0.75], [sx * 0.62, a + 0.45]]), 0.7, 0.02, r)
        _stroke(
            ink,
            fr,
            np.array([[sx * 0.62, a + 0.45], [sx * 1.6, a + 0.5], [sx * 2.5, a + 1.0]]),
            0.6,
            0.02,
            r,
        )
        # Brows: short strokes along the brow, denser for thicker brows.
        brow = _brow(p, f, sx)
        for t in np.linspace(0, 1, 14 + int(p.brow_thickness * 200)):
            i = 0 if t < 0.5 else 1
            q = brow[i] + (brow[i + 1] - brow[i]) * (t * 2 - i)
            d = np.array([sx * 0.05, -p.brow_thickness * 0.8]) + r.normal(0, 0.01, 2)
            _stroke(ink, fr, np.array([q - d * 0.5, q + d * 0.5]), 0.85, 0.012, r, passes=1)
        _stroke(ink, fr, _nose_side(p, f, sx)[1:], 0.6, 0.014, r)
        t = np.linspace(0, math.pi, 10)
        nostril = np.stack(
            [sx * p.nose_width * 0.45 + 0.06 * np.cos(t), f.nose_tip + 0.04 - 0.03 * np.sin(t)],
            axis=1,
        )
        _stroke(ink, fr, nostril, 0.9, 0.02, r)
    for ex, ey in f.eyes:
        t = np.linspace(math.pi, 2 * math.pi, 24)
        lid = np.stack([ex + f.eye_w * np.cos(t), ey + f.eye_h * np.sin(t)], axis=1)
        _stroke(ink, fr, lid, 0.95, 0.032, r)
        _stroke(ink, fr, lid[::-1] * [1, -1] + [0, 2 * ey], 0.55, 0.014, r)
        layer = np.zeros_like(ink)
        cv2.circle(layer, fr.pt(ex, ey), fr.len(f.eye_h * 0.95), 0.55, -1, cv2.LINE_AA)
        cv2.circle(layer, fr.pt(ex, ey), fr.len(f.eye_h * 0.45), 0.97, -1, cv2.LINE_AA)
        cv2.circle(
            layer,
            fr.pt(ex + f.eye_h * 0.25, ey - f.eye_h * 0.3),
            fr.len(f.eye_h * 0.18),
            0.0,
            -1,
            cv2.LINE_AA,
        )
        np.maximum(ink, layer, out=ink)
    upper, mid, lower = _lips(f, p, NEUTRAL.smile)
    _stroke(ink, fr, mid, 0.9, 0.022, r)
    _stroke(ink, fr, upper, 0.55, 0.012, r)
    _stroke(ink, fr, lower[3:-3], 0.45, 0.012, r)
    ink = cv2.GaussianBlur(ink, (0, 0), _SS * 0.35)
    grain = r.standard_normal((fr.h // _SS, fr.w // _SS)).astype(_F)
    grain = cv2.resize(cv2.GaussianBlur(grain, (0, 0), 2.0), (fr.w, fr.h))
    paper = 248 - 6 * grain
    grey = paper * (1 - 0.88 * np.clip(ink, 0, 1))
    return np.clip(np.round(cv2.resize(grey, size, interpolation=cv2.INTER_AREA)), 0, 255).astype(
        np.uint8
    )


def draw_face(identity: int, photo: int, seed: int = 0, size: Size = DEFAULT_SIZE) -> np.ndarray:
    """One demo mugshot (BGR uint8, ``size`` = (w, h)); same arguments, same pixels."""
    return _draw_photo(identity_params(identity, seed), photo_nuisance(identity, photo, seed), size)


def draw_sketch(identity: int, seed: int = 0, size: Size = DEFAULT_SIZE) -> np.ndarray:
    """The identity's frontal, neutral face as a pencil drawing (grey uint8)."""
    p = identity_params(identity, seed)
    return _draw_sketch(p, size, p.texture_seed)


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp name then rename, so a killed run never leaves a half-written file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV only fails on unsupported arrays
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def make_demo_source(
    root: Path,
    identities: int = 12,
    photos_per_identity: int = 3,
    seed: int = 0,
    size: Size = DEFAULT_SIZE,
) -> Path:
    """Write demo mugshots and paired sketches under ``root`` and return ``root``.

    Layout: ``root/photos/<identity_id>/<n>.png`` (a folder source: one sub-folder per
    identity), ``root/sketches/<identity_id>.png``, and ``root/pairs.csv``
    (``MANIFEST_COLUMNS``, paths relative to ``root``) pairing each identity's first photo
    with its sketch. Sketches sit outside ``photos/`` so a folder ingest never mistakes them
    for mugshots. Rerunning with the same arguments rewrites the same bytes; files from an
    earlier, larger run are left alone, so use a fresh ``root``.
    """
    if identities < 1 or photos_per_identity < 1:
        raise ValueError("need at least one identity and one photo per identity")
    root = Path(root)
    (root / SKETCH_DIR).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(identities):
        ident = identity_id(i)
        folder = root / PHOTO_DIR / ident
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(photos_per_identity):
            _write_atomic(folder / f"{n}.png", _png(draw_face(i, n, seed, size)))
        _write_atomic(root / SKETCH_DIR / f"{ident}.png", _png(draw_sketch(i, seed, size)))
        rows.append((ident, f"{PHOTO_DIR}/{ident}/0.png", f"{SKETCH_DIR}/{ident}.png",
                     DEMO_STYLE))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    _write_atomic(root / MANIFEST_NAME, out.getvalue().encode("utf-8"))
    return root
