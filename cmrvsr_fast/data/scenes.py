"""Moving scenes drawn on a fine grid, with randomised anatomy, contrast and texture (domain randomisation).

Three families, each a (T, h, w) float32 scene in arbitrary intensity units, ready for `acquisition.acquire`:
- short-axis cines (base to apex): LV with trabeculae and papillary muscles, RV crescent, pericardial fat, body,
  lungs, liver, spine, aorta;
- long-axis cines (2-, 3- and 4-chamber): LV, RV, atria, mitral and tricuspid leaflets, outflow tract and aortic
  root, with the long-axis motion of the base towards the apex in systole;
- generic scenes ("dead leaves": overlapping textured shapes of every size) under a smooth periodic
  deformation, so that a network meets edges of every orientation, curvature and contrast.

Tissues get intensities from one of two samplers: bright-blood bSSFP levels with wide jitter, or uniformly
random levels (the SynthSeg idea: a network that has seen every contrast relies on shapes and edges). Each
tissue has its own multiplicative texture, and a smooth bias field multiplies the whole scene. Geometry is in
units of half the smaller side of the field of view; the heart is zoomed, shifted and rotated at random.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cmrvsr_fast.data.phantom import volume_curve

TISSUES = ("fat", "muscle", "soft", "lung", "liver", "blood", "myocardium", "bone", "marrow", "fluid", "valve")
_BSSFP = {  # bright-blood levels relative to blood = 1, with the range each is drawn from
    "fat": (0.7, 1.0), "muscle": (0.18, 0.32), "soft": (0.3, 0.5), "lung": (0.02, 0.1), "liver": (0.28, 0.45),
    "blood": (0.85, 1.0), "myocardium": (0.17, 0.32), "bone": (0.05, 0.15), "marrow": (0.4, 0.65),
    "fluid": (0.7, 0.95), "valve": (0.1, 0.3),
}  # fmt: skip
LAX_VIEWS = ("2ch", "3ch", "4ch")
SCENE_KINDS = ("sax", "lax", "texture")


class Canvas:
    """A fine grid in scene units after the case's zoom, shift and rotation, and the scene painted on it."""

    def __init__(self, shape: tuple[int, int], frames: int, rng: np.random.Generator, zoom: float = 1.0) -> None:
        height, width = shape
        self.unit = min(height, width) / 2 * zoom  # fine pixels per scene unit
        ys, xs = np.mgrid[:height, :width].astype(np.float32)
        ys = (ys + 0.5 - height / 2) / self.unit - np.float32(rng.normal(0, 0.08))
        xs = (xs + 0.5 - width / 2) / self.unit - np.float32(rng.normal(0, 0.08))
        angle = rng.uniform(0, 2 * np.pi)
        cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        self.y, self.x = cos * ys - sin * xs, sin * ys + cos * xs
        self.frames = frames
        self.image = np.zeros((frames, height, width), dtype=np.float32)
        self.levels = _contrast(rng)
        self.textures = _textures(shape, rng)
        self._texture_of = {name: int(rng.integers(len(self.textures))) for name in TISSUES}
        self._texture_amp = {name: float(rng.uniform(0.0, 0.15)) for name in TISSUES}

    def tissue(self, name: str, window: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
        """(h, w) intensity field of a tissue, or the part of it in `window`: its level times its texture."""
        texture = self.textures[self._texture_of[name]][window]
        return self.levels[name] * (1 + self._texture_amp[name] * texture)

    def paint(self, mask: np.ndarray, name: str) -> None:
        self.image = self.image * (1 - mask) + self.tissue(name) * mask

    def ellipse(self, cy, cx, ry, rx, angle: float = 0.0) -> np.ndarray:
        """Soft membership in [0, 1] (one fine pixel of edge) of an ellipse rotated by `angle`; the centre and
        radii may be (T, 1, 1) arrays."""
        dy, dx = self.y - cy, self.x - cx
        if angle:
            c, s = np.cos(angle), np.sin(angle)
            dy, dx = c * dy - s * dx, s * dy + c * dx
        rho = np.sqrt((dy / ry) ** 2 + (dx / rx) ** 2)
        distance = (rho - 1) * np.minimum(ry, rx) * self.unit
        return np.clip(0.5 - distance, 0, 1).astype(np.float32)

    def beyond(self, y0) -> np.ndarray:
        """Soft membership of the half-plane y > y0 (y0 may be a (T, 1, 1) array)."""
        return np.clip(0.5 + (self.y - y0) * self.unit, 0, 1).astype(np.float32)


def _contrast(rng: np.random.Generator) -> dict[str, float]:
    if rng.random() < 0.6:
        return {name: float(rng.uniform(*_BSSFP[name])) for name in TISSUES}
    return {name: float(rng.uniform(0.02, 1.0)) for name in TISSUES}


def _textures(shape: tuple[int, int], rng: np.random.Generator, count: int = 3) -> list[np.ndarray]:
    """Unit-variance Gaussian random fields of random grain (1–6 fine pixels)."""
    fields = []
    for _ in range(count):
        field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), rng.uniform(1.0, 6.0))
        fields.append(field / (field.std() + 1e-6))
    return fields


def bias_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative (h, w) field: exp of a very smooth random field, 0–45 % peak to peak."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), min(shape) / rng.uniform(3, 6))
    field = (field - field.min()) / (np.ptp(field) + 1e-12)
    return np.exp(rng.uniform(0.0, 0.37) * field).astype(np.float32)


def _body(canvas: Canvas, rng: np.random.Generator, level: float = 0.4) -> None:
    """Thorax around the heart: fat, muscle, soft tissue, lungs, liver, spine, descending aorta."""
    cy, half_w, half_h = rng.normal(0.06, 0.04), rng.uniform(0.85, 1.05), rng.uniform(0.62, 0.8)
    fat = rng.uniform(0.03, 0.09)
    canvas.paint(canvas.ellipse(cy, 0, half_h, half_w), "fat")
    canvas.paint(canvas.ellipse(cy, 0, half_h - fat, half_w - fat), "muscle")
    canvas.paint(canvas.ellipse(cy, 0, half_h - fat - 0.05, half_w - fat - 0.06), "soft")
    lung = 1 - 0.5 * level
    canvas.paint(canvas.ellipse(0.0, -0.55, 0.42 * lung, rng.uniform(0.22, 0.3)), "lung")
    canvas.paint(canvas.ellipse(0.02, 0.6, 0.4 * lung, rng.uniform(0.22, 0.3)), "lung")
    liver = rng.uniform(0.28, 0.42) * (0.5 + level)
    canvas.paint(canvas.ellipse(0.42, -0.42, 0.8 * liver, liver), "liver")
    canvas.paint(canvas.ellipse(0.56, 0.02, 0.1, 0.1), "bone")
    canvas.paint(canvas.ellipse(0.56, 0.02, 0.085, 0.085), "marrow")
    canvas.paint(canvas.ellipse(0.7, 0.02, 0.035, 0.035), "fluid")
    canvas.paint(canvas.ellipse(0.4, 0.2, 0.06, 0.06), "blood")


def short_axis(canvas: Canvas, curve: np.ndarray, rng: np.random.Generator) -> None:
    """A short-axis slice at a random level from base to apex."""
    level = rng.uniform(0, 1)
    _body(canvas, rng, level)
    c = curve.reshape(-1, 1, 1).astype(np.float32)
    size = np.sqrt(max(1 - 0.8 * level**2, 0.05))
    r_ed = rng.uniform(0.13, 0.2) * size
    es_ratio = rng.uniform(0.5, 0.72)
    wall = rng.uniform(0.04, 0.075)
    cy, cx = rng.normal(-0.03, 0.03), rng.normal(0.14, 0.03)
    r_cavity = r_ed * (es_ratio + (1 - es_ratio) * c)
    r_epi = np.sqrt(r_cavity**2 + (r_ed + wall) ** 2 - r_ed**2)  # constant wall area: it thickens in systole
    canvas.paint(canvas.ellipse(cy, cx, r_epi + rng.uniform(0.01, 0.05), r_epi + rng.uniform(0.02, 0.06)), "fat")
    if level < 0.9:
        rv = (1 - level) ** 0.7 * (0.75 + 0.25 * c)
        ry, rx = rng.uniform(0.22, 0.3) * size * rv, rng.uniform(0.2, 0.28) * size * rv
        rv_y, rv_x = cy - 0.06 * size, cx - rng.uniform(0.1, 0.16) * size
        canvas.paint(canvas.ellipse(rv_y, rv_x, ry + 0.018, rx + 0.018), "myocardium")
        canvas.paint(canvas.ellipse(rv_y, rv_x, ry, rx), "blood")
    canvas.paint(canvas.ellipse(cy, cx, r_epi, r_epi), "myocardium")
    theta = np.arctan2(canvas.y - cy, canvas.x - cx)
    ragged = 1 + c * sum(
        rng.uniform(0.005, 0.035) / k**0.3 * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(5, 14)
    )
    rho = np.hypot(canvas.y - cy, canvas.x - cx) / (r_cavity * ragged)
    canvas.paint(np.clip(0.5 - (rho - 1) * r_cavity * canvas.unit, 0, 1).astype(np.float32), "blood")
    for angle in np.deg2rad([rng.uniform(30, 60), rng.uniform(120, 155)]):
        radius = rng.uniform(0.15, 0.25) * r_ed * (1.15 - 0.15 * c)
        py, px = cy + 0.72 * r_cavity * np.sin(angle), cx + 0.72 * r_cavity * np.cos(angle)
        canvas.paint(canvas.ellipse(py, px, radius, radius), "myocardium")


def _chamber(canvas: Canvas, base, cx, length, width, wall, tissue_wall: str = "myocardium") -> None:
    """A ventricle: a half-ellipse from its base plane (y = base) to its apex (y = base + length), with a wall."""
    canvas.paint(canvas.ellipse(base, cx, length + wall, width + wall) * canvas.beyond(base - wall / 2), tissue_wall)
    canvas.paint(canvas.ellipse(base, cx, length, width) * canvas.beyond(base), "blood")


def _atrium(canvas: Canvas, base, cx, ry, rx, wall: float) -> None:
    canvas.paint(canvas.ellipse(base - ry, cx, ry + wall, rx + wall), "myocardium")
    canvas.paint(canvas.ellipse(base - ry, cx, ry, rx), "blood")


def _leaflets(canvas: Canvas, base, cx, half_width, opening) -> None:
    """Two valve leaflets hinged at the annulus (base, cx ± half_width): across the orifice when closed
    (opening 0), along the long axis into the ventricle when open (opening 1). Arguments may be (T, 1, 1)."""
    frames = canvas.frames
    per_frame = [np.broadcast_to(np.asarray(v, np.float64).ravel(), (frames,)) for v in (base, cx, half_width, opening)]
    base, cx, half_width, opening = per_frame
    for t in range(frames):
        length = 0.55 * half_width[t]
        for side in (-1.0, 1.0):
            tilt = (np.pi / 2) * (1 - opening[t])  # 0: along the long axis, towards the apex (+y)
            hinge_x = cx[t] + side * half_width[t]
            tip_y = base[t] + 0.5 * length * np.cos(tilt)
            tip_x = hinge_x - side * 0.5 * length * np.sin(tilt)
            mask = canvas.ellipse(tip_y, tip_x, 0.5 * length, 0.012, angle=float(-side * tilt))
            canvas.image[t] = canvas.image[t] * (1 - mask) + canvas.tissue("valve") * mask


def long_axis(canvas: Canvas, curve: np.ndarray, rng: np.random.Generator, view: str) -> None:
    """A 2-, 3- or 4-chamber view; the LV long axis runs along +y from base to apex before the rotation."""
    _body(canvas, rng, level=rng.uniform(0.2, 0.6))
    c = curve.reshape(-1, 1, 1).astype(np.float32)
    length = rng.uniform(0.32, 0.48)  # LV base-to-apex at ED
    apex = rng.uniform(0.1, 0.25)
    base = apex - length + rng.uniform(0.12, 0.2) * length * (1 - c)  # the base descends in systole
    width = rng.uniform(0.13, 0.19) * (rng.uniform(0.62, 0.78) + (1 - 0.7) * c)
    wall = rng.uniform(0.035, 0.065) * (1 + 0.4 * (1 - c))
    cx = rng.normal(0.0, 0.03)
    atrium = 1 + 0.2 * (1 - c)  # the atria fill while the ventricles empty
    # The atrioventricular valves open while the ventricle fills (its volume rising) and close for systole.
    opening = np.clip(np.gradient(curve) * len(curve) * 2, 0, 1).reshape(-1, 1, 1)
    canvas.paint(canvas.ellipse(base + length / 2, cx, length * 0.75, width * 2.2), "fat")
    if view == "4ch":
        rv_w = rng.uniform(0.09, 0.14)
        rv_x = cx - (width + wall) - rv_w - 0.015  # the RV cavity meets the septum
        rv_base = base + rng.uniform(-0.02, 0.03)
        _chamber(canvas, rv_base, rv_x, 0.78 * length, rv_w, 0.02)
        _atrium(canvas, rv_base, rv_x - 0.02, rng.uniform(0.1, 0.15) * atrium, rng.uniform(0.1, 0.14), 0.012)
        _leaflets(canvas, rv_base, rv_x, 0.8 * rv_w, opening)
    elif view == "3ch":
        rv_x = cx - (width + wall) - 0.08
        _chamber(canvas, base + 0.45 * length, rv_x, 0.3 * length, 0.08, 0.02)  # a slice of the anterior RV
    _chamber(canvas, base, cx, length, width, wall)
    _atrium(canvas, base, cx + rng.normal(0.03, 0.02), rng.uniform(0.11, 0.17) * atrium, rng.uniform(0.12, 0.17), 0.012)
    if view == "3ch":
        # Outflow tract and aortic root leave the base beside the mitral annulus, tilted away from the atrium.
        tilt = rng.uniform(0.5, 0.9)
        root_r = rng.uniform(0.055, 0.08)
        oy, ox = base - 0.12, cx - width * 0.9 - 0.06
        canvas.paint(canvas.ellipse(oy, ox, 0.2, root_r + 0.015, angle=tilt), "myocardium")
        canvas.paint(canvas.ellipse(oy, ox, 0.2, root_r, angle=tilt), "blood")
    _leaflets(canvas, base, cx, 0.8 * width, opening)


def dead_leaves(canvas: Canvas, rng: np.random.Generator, shapes: int | None = None) -> None:
    """Overlapping textured ellipses with log-uniform sizes (large ones first, so every scale stays visible),
    then a smooth periodic deformation over the cycle."""
    height, width = canvas.image.shape[1:]
    static = np.full((height, width), rng.uniform(0, 1), dtype=np.float32)
    count = shapes or int(rng.integers(250, 500))
    radii = np.exp(rng.uniform(np.log(3.0), np.log(rng.uniform(0.15, 0.4) * min(height, width)), count))
    for radius in np.sort(radii)[::-1]:  # in fine pixels
        name = TISSUES[int(rng.integers(len(TISSUES)))]
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx, angle = radius, radius * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
        top, bottom = int(max(cy - radius - 2, 0)), int(min(cy + radius + 3, height))
        left, right = int(max(cx - radius - 2, 0)), int(min(cx + radius + 3, width))
        if top >= bottom or left >= right:
            continue
        ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
        dy, dx = ys + 0.5 - cy, xs + 0.5 - cx
        dy, dx = np.cos(angle) * dy - np.sin(angle) * dx, np.sin(angle) * dy + np.cos(angle) * dx
        mask = np.clip(0.5 - (np.sqrt((dy / ry) ** 2 + (dx / rx) ** 2) - 1) * rx, 0, 1)
        window = (slice(top, bottom), slice(left, right))
        value = rng.uniform(0.0, 1.0) / canvas.levels[name] * canvas.tissue(name, window)
        static[window] = static[window] * (1 - mask) + value * mask
    amplitude = rng.uniform(1.0, 6.0)  # fine pixels
    fields = [ndimage.gaussian_filter(rng.standard_normal((height, width)), min(height, width) / 8) for _ in range(4)]
    fields = [f / (np.abs(f).max() + 1e-12) * amplitude for f in fields]
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    for t in range(canvas.frames):
        phase = 2 * np.pi * t / canvas.frames
        dy = fields[0] * np.sin(phase) + fields[1] * (1 - np.cos(phase))
        dx = fields[2] * np.sin(phase) + fields[3] * (1 - np.cos(phase))
        canvas.image[t] = ndimage.map_coordinates(static, [ys + dy, xs + dx], order=1, mode="reflect")


def draw_scene(
    kind: str, shape: tuple[int, int], frames: int, es: int, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """(T, h, w) float32 scene of `kind` ("sax", "lax" or "texture") with ED at frame 0 and ES at `es`, times a
    bias field -> (scene, description)."""
    curve = volume_curve(frames, es)
    canvas = Canvas(shape, frames, rng, zoom=rng.uniform(0.75, 1.35))
    if kind == "sax":
        short_axis(canvas, curve, rng)
        description = "short-axis"
    elif kind == "lax":
        view = LAX_VIEWS[int(rng.integers(len(LAX_VIEWS)))]
        long_axis(canvas, curve, rng, view)
        description = f"long-axis {view}"
    elif kind == "texture":
        dead_leaves(canvas, rng)
        description = "textured shapes"
    else:
        raise ValueError(f"scene kind must be one of {SCENE_KINDS}, got {kind!r}")
    return canvas.image * bias_field(shape, rng), description
