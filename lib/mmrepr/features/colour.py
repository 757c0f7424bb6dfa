"""A weight-free colour and texture descriptor.

No learned weights, so it says exactly what it measures: the colour distribution (HSV
joint histogram, RGB moments) and the texture (gradient orientations, spatial-frequency
bands, blockiness). On the synthetic catalogue, whose planted visual attributes are a
colour and a pattern, this makes the visual signal measurable offline, where the vision
models only have random weights.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 64
H_BINS, S_BINS, V_BINS = 12, 3, 3
N_ORIENT = 8
N_RADIAL = 6
N_ANGULAR = 4

PARTS = {
    "hsv_hist": H_BINS * S_BINS * V_BINS,
    "rgb_mean_std": 6,
    "gradient": 2 + N_ORIENT,
    "fft_radial": N_RADIAL,
    "fft_angular": N_ANGULAR,
    "block_contrast": 2,
}
DIM = sum(PARTS.values())

# Fixed frequency-band masks (computed once for SIZE x SIZE).
_fy, _fx = np.meshgrid(np.fft.fftfreq(SIZE), np.fft.fftfreq(SIZE), indexing="ij")
_radius = np.sqrt(_fx**2 + _fy**2)
_angle = np.mod(np.arctan2(_fy, _fx), np.pi)
_radial_edges = np.linspace(0, 0.5 * np.sqrt(2), N_RADIAL + 1)
_RADIAL = [(_radius > lo) & (_radius <= hi) for lo, hi in zip(_radial_edges[:-1], _radial_edges[1:])]
_ANGULAR = [
    (np.abs(((_angle - a + np.pi / 2) % np.pi) - np.pi / 2) < np.pi / (2 * N_ANGULAR)) & (_radius > 0)
    for a in np.arange(N_ANGULAR) * np.pi / N_ANGULAR
]


def describe(image: Image.Image) -> np.ndarray:
    """The descriptor of one RGB image, float32 of length :data:`DIM`."""
    img = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    hsv = np.asarray(img.convert("HSV"), dtype=np.float32) / 255.0

    # colour: joint HSV histogram (square-rooted so a few dominant bins do not swamp the rest)
    h = np.minimum((hsv[..., 0] * H_BINS).astype(int), H_BINS - 1)
    s = np.minimum((hsv[..., 1] * S_BINS).astype(int), S_BINS - 1)
    v = np.minimum((hsv[..., 2] * V_BINS).astype(int), V_BINS - 1)
    joint = np.bincount(((h * S_BINS + s) * V_BINS + v).ravel(), minlength=H_BINS * S_BINS * V_BINS)
    hist = np.sqrt(joint / joint.sum())
    moments = np.concatenate([rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1))])

    # texture: gradient magnitude and magnitude-weighted orientation histogram
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gy, gx = np.gradient(gray)
    mag = np.hypot(gx, gy)
    orient = np.mod(np.arctan2(gy, gx), np.pi)
    o_bin = np.minimum((orient / np.pi * N_ORIENT).astype(int), N_ORIENT - 1)
    o_hist = np.bincount(o_bin.ravel(), weights=mag.ravel(), minlength=N_ORIENT)
    o_hist = o_hist / (o_hist.sum() + 1e-8)
    grad = np.concatenate([[mag.mean(), mag.std()], o_hist])

    # periodic patterns (stripes, checks, dots): share of spectral energy per band and direction
    power = np.abs(np.fft.fft2(gray - gray.mean())) ** 2
    total = power.sum() + 1e-8
    radial = np.array([power[m].sum() / total for m in _RADIAL])
    angular = np.array([power[m].sum() / total for m in _ANGULAR])

    # blockiness: spread of 8x8 block means and of block standard deviations
    blocks = gray.reshape(SIZE // 8, 8, SIZE // 8, 8)
    block = np.array([blocks.mean(axis=(1, 3)).std(), blocks.std(axis=(1, 3)).mean()])

    out = np.concatenate([hist, moments, grad, radial, angular, block]).astype(np.float32)
    assert out.shape == (DIM,)
    return out
