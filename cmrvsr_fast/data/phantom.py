"""A realistic short-axis bSSFP cine phantom: the project's own cardiac data for training, tests and the demo.

Geometry is in units of half the smaller image side (u), centred on the image; y points down (posterior) and x to
the image right (patient left, radiological convention). Every structure is painted with a one-pixel soft edge
so that the phantom has no aliasing of its own before the k-space degradation.

Per cine: an LV whose cavity follows a physiological volume curve (ED at frame 0, ES near 35 % of the cycle,
rapid filling, diastasis, atrial kick), a myocardium of constant area (so the wall thickens in systole), an RV
crescent, papillary muscles and an irregular trabeculated endocardial border; around it the body with its
subcutaneous fat, lungs, liver, spine, descending aorta. Tissue texture, a coil-sensitivity field and Rician
noise complete the image. Slices go from base to apex with mild through-plane (size) and respiratory (position)
differences between their breath-holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# bSSFP-like signal levels on the 0–255 scale.
BLOOD, MYOCARDIUM, FAT, MUSCLE, SOFT_TISSUE, LUNG, LIVER, BONE, CSF = 215, 62, 195, 58, 95, 12, 80, 120, 185


@dataclass(frozen=True)
class Phantom:
    """cine: (S, T, H, W) float32, integral values on 0–255; ed, es: frame indices; heart_box: (h0, h1, w0, w1)
    enclosing the heart (LV epicardium and RV) of every slice at ED, half-open."""

    cine: np.ndarray
    ed: int
    es: int
    heart_box: tuple[int, int, int, int]


def volume_curve(frames: int, es: int) -> np.ndarray:
    """Relative LV cavity size per frame: 1 at ED (frame 0), 0 at ES; systole a half cosine, diastole rapid
    filling (80 % by mid-diastole), diastasis, then the atrial kick."""
    phase = np.arange(frames) / frames
    es_phase = es / frames
    systole = 0.5 * (1 + np.cos(np.pi * phase / es_phase))
    psi = np.clip((phase - es_phase) / (1 - es_phase), 0, 1)
    filling = 0.8 * (1 - np.exp(-psi / 0.12)) / (1 - np.exp(-1 / 0.12))
    kick = 0.2 * _smoothstep((psi - 0.72) / 0.28)
    return np.where(phase <= es_phase, systole, filling + kick)


def generate(seed: int, size: tuple[int, int] = (256, 256), frames: int = 30, slices: int = 1) -> Phantom:
    """A deterministic phantom stack for `seed`: (slices, frames, H, W), base to apex."""
    height, width = size
    if not 8 <= frames <= 40:
        raise ValueError(f"frames must be in 8…40, got {frames}")
    if height < 24 or width < 24:
        raise ValueError(f"size must be at least 24×24, got {size}")
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    rng = np.random.default_rng(seed)
    es = round(rng.uniform(0.32, 0.38) * frames)
    curve = volume_curve(frames, es)
    anatomy = _Anatomy(rng)
    cine = np.empty((slices, frames, height, width), dtype=np.float32)
    box = [height, 0, width, 0]
    for s in range(slices):
        level = s / (slices - 1) if slices > 1 else 0.4  # 0 = base, 1 = apex
        grid = _Grid(height, width, shift_y=rng.normal(0, 0.02))  # breath-hold position of this slice
        image, heart = anatomy.render(grid, level, curve, rng)
        cine[s] = image
        rows, cols = np.nonzero(heart)
        box = [
            min(box[0], rows.min()),
            max(box[1], rows.max() + 1),
            min(box[2], cols.min()),
            max(box[3], cols.max() + 1),
        ]
    return Phantom(cine=cine, ed=0, es=es, heart_box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


class _Grid:
    """Pixel coordinates in phantom units, and soft masks of ellipses on them."""

    def __init__(self, height: int, width: int, shift_y: float = 0.0) -> None:
        self.unit = min(height, width) / 2  # pixels per phantom unit
        ys, xs = np.mgrid[:height, :width].astype(np.float32)
        self.y = (ys + 0.5 - height / 2) / self.unit - shift_y
        self.x = (xs + 0.5 - width / 2) / self.unit

    def ellipse(self, cy, cx, ry, rx, y=None, x=None):
        """Soft membership in [0, 1] of an ellipse; the centre and radii may be arrays (one per frame)."""
        y = self.y if y is None else y
        x = self.x if x is None else x
        rho = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
        distance_px = (rho - 1) * np.minimum(ry, rx) * self.unit
        return np.clip(0.5 - distance_px, 0, 1)


def _paint(image: np.ndarray, mask: np.ndarray, value) -> np.ndarray:
    return image * (1 - mask) + value * mask


class _Anatomy:
    """The patient: fixed by the seed, rendered slice by slice."""

    def __init__(self, rng: np.random.Generator) -> None:
        jitter = lambda scale: 1 + rng.uniform(-scale, scale)  # noqa: E731
        self.body = (0.06 * jitter(0.2), 0.93 * jitter(0.04), 0.70 * jitter(0.06))  # centre y, half width, height
        self.fat = 0.055 * jitter(0.4)
        self.lv = (-0.03 + rng.normal(0, 0.02), 0.14 + rng.normal(0, 0.02))  # LV centre (y, x)
        self.lv_radius = 0.165 * jitter(0.1)  # endocardial radius at ED, base
        self.es_ratio = rng.uniform(0.55, 0.68)  # ES/ED cavity radius (ejection fraction 54–70 %)
        self.wall = 0.055 * jitter(0.15)  # ED wall thickness
        self.trabeculae = [(k, rng.uniform(0.01, 0.035) / k**0.3, rng.uniform(0, 2 * np.pi)) for k in range(5, 14)]
        self.papillary = (np.deg2rad(rng.uniform(35, 55)), np.deg2rad(rng.uniform(125, 150)))
        self.liver_size = 0.35 * jitter(0.15)
        self.texture_seed = int(rng.integers(2**31))
        self.noise_sigma = rng.uniform(3.0, 5.5)
        self.coil = rng.uniform(0.25, 0.45, size=2)  # anterior and posterior coil gains

    def render(self, grid: _Grid, level: float, curve: np.ndarray, rng: np.random.Generator):
        """One slice at `level` (0 base … 1 apex) -> ((T, H, W) image, (H, W) heart mask at ED)."""
        image = self._static_background(grid, level)
        frames = len(curve)
        image = np.broadcast_to(image, (frames, *image.shape)).copy()

        size = np.sqrt(max(1 - 0.8 * level**2, 0.05)) * (1 + rng.normal(0, 0.03))  # through-plane variation
        r_ed = self.lv_radius * size
        r_cavity = (r_ed * (self.es_ratio + (1 - self.es_ratio) * curve)).reshape(-1, 1, 1).astype(np.float32)
        wall_area = (r_ed + self.wall) ** 2 - r_ed**2  # constant: the wall thickens as the cavity shrinks
        r_epi = np.sqrt(r_cavity**2 + wall_area)
        cy, cx = self.lv

        # RV: a crescent on the image left of the LV, smaller towards the apex and gone at it.
        rv_scale = (1 - level) ** 0.7 * (0.75 + 0.25 * curve).reshape(-1, 1, 1)
        # The LV, painted over it, leaves the crescent.
        if level < 0.9:
            ry, rx = 0.27 * size * rv_scale, 0.25 * size * rv_scale
            rv_y, rv_x = cy - 0.06 * size, cx - 0.13 * size
            rv_outer = grid.ellipse(rv_y, rv_x, ry + 0.018, rx + 0.018)
            image = _paint(image, rv_outer, MYOCARDIUM)
            image = _paint(image, grid.ellipse(rv_y, rv_x, ry, rx), BLOOD)

        # LV myocardium, then the trabeculated cavity, then the papillary muscles.
        image = _paint(image, grid.ellipse(cy, cx, r_epi, r_epi), MYOCARDIUM)
        theta = np.arctan2(grid.y - cy, grid.x - cx)
        contraction = curve.reshape(-1, 1, 1)  # trabeculae flatten as the wall compacts in systole
        ragged = 1 + contraction * sum(a * np.cos(k * theta + p) for k, a, p in self.trabeculae)
        rho = np.hypot(grid.y - cy, grid.x - cx) / (r_cavity * ragged)
        cavity = np.clip(0.5 - (rho - 1) * r_cavity * grid.unit, 0, 1)
        image = _paint(image, cavity, BLOOD)
        for angle in self.papillary:
            py = cy + 0.72 * r_cavity * np.sin(angle)
            px = cx + 0.72 * r_cavity * np.cos(angle)
            radius = 0.2 * r_ed * (1.15 - 0.15 * curve.reshape(-1, 1, 1))
            image = _paint(image, grid.ellipse(py, px, radius, radius), MYOCARDIUM)

        heart = grid.ellipse(cy, cx, r_epi[0], r_epi[0]) > 0.5
        if level < 0.9:
            heart |= rv_outer[0] > 0.5
        image = self._texture_shading_noise(image, grid, rng)
        return image, heart

    def _static_background(self, grid: _Grid, level: float) -> np.ndarray:
        by, bw, bh = self.body
        image = np.zeros_like(grid.y)
        image = _paint(image, grid.ellipse(by, 0, bh, bw), FAT)
        image = _paint(image, grid.ellipse(by, 0, bh - self.fat, bw - self.fat), MUSCLE)
        image = _paint(image, grid.ellipse(by, 0, bh - self.fat - 0.05, bw - self.fat - 0.06), SOFT_TISSUE)
        lung = 1 - 0.5 * level  # lungs recede towards the apex (and the diaphragm)
        image = _paint(image, grid.ellipse(0.0, -0.55, 0.42 * lung, 0.27), LUNG)
        image = _paint(image, grid.ellipse(0.02, 0.60, 0.40 * lung, 0.26), LUNG)
        liver = self.liver_size * (0.5 + level)  # the liver dome rises into apical slices
        image = _paint(image, grid.ellipse(0.42, -0.42, 0.8 * liver, liver), LIVER)
        image = _paint(image, grid.ellipse(0.56, 0.02, 0.10, 0.10), 25)  # cortical bone
        image = _paint(image, grid.ellipse(0.56, 0.02, 0.085, 0.085), BONE)
        image = _paint(image, grid.ellipse(0.70, 0.02, 0.035, 0.035), CSF)
        image = _paint(image, grid.ellipse(0.40, 0.20, 0.06, 0.06), BLOOD)  # descending aorta
        return image

    def _texture_shading_noise(self, image: np.ndarray, grid: _Grid, rng: np.random.Generator) -> np.ndarray:
        texture_rng = np.random.default_rng(self.texture_seed)  # the same tissue texture in every slice
        texture = ndimage.gaussian_filter(texture_rng.standard_normal(grid.y.shape), 1.2)
        texture /= texture.std() + 1e-12
        coil = (
            0.85
            + self.coil[0] * np.exp(-((grid.y + 0.75) ** 2) / 0.6)
            + self.coil[1] * np.exp(-((grid.y - 0.85) ** 2) / 0.6)
        )
        signal = image * (1 + 0.05 * texture) * (coil / coil.max() * 1.05)
        noise = rng.normal(0, self.noise_sigma, (2, *image.shape))
        magnitude = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2)  # Rician
        return np.clip(np.round(magnitude), 0, 255).astype(np.float32)
