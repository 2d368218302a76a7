"""Gradient-check cases modelled on what vision and scientific libraries check in their suites.

Every case is a plain-torch function of float64 tensors plus a function that makes
its inputs (those with ``requires_grad=True`` are the ones a checker differentiates),
in the way such libraries call ``torch.autograd.gradcheck(fn, inputs)`` in their
own test suites. The operations are written here from their textbook definitions
(no library code is copied); the categories are

* ``filters`` - blurs, edge filters, median, pyramids;
* ``color``   - colour-space conversions and colour adjustments;
* ``warps``   - image warps, resizing, homographies and camera models;
* ``losses``  - image and classification losses;
* ``cnn``     - small CNNs and descriptor nets, checked w.r.t. their input;
* ``ode``     - fixed-step integrations and an implicit step solved by Newton;
* ``linalg``  - decompositions, solvers and matrix functions.

Names read ``category/function/variant``. Inputs are drawn from a
``torch.Generator`` seeded from the case's name, so filtering the cases never
changes anybody's inputs. Networks are built once per case from a seed of their
own (float64, eval mode, parameters not requiring grad).

Every case passes ``torch.autograd.gradcheck`` in full mode at its inputs
(checked with ``python benchmarks/_suite_cases.py --verify``).
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DTYPE = torch.float64
CATEGORIES = ("filters", "color", "warps", "losses", "cnn", "ode", "linalg")

InputsFactory = Callable[[torch.Generator], tuple[torch.Tensor, ...]]


def _seed(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


@dataclass
class Case:
    """One gradient check: a name, the function and a maker of its inputs."""

    name: str
    make_fn: Callable[[], Callable[..., Any]]
    make_inputs: InputsFactory
    _fn: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def function(self) -> str:
        return self.name.split("/")[1]

    @property
    def fn(self) -> Callable[..., Any]:
        """The function under check (built on first use, e.g. a network's weights)."""
        if self._fn is None:
            self._fn = self.make_fn()
        return self._fn

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """Fresh inputs, the same on every call (seeded by the case's name)."""
        gen = torch.Generator().manual_seed(_seed(self.name))
        return tuple(self.make_inputs(gen))

    def n_checked(self) -> int:
        """Number of input elements that require grad."""
        return sum(t.numel() for t in self.inputs() if t.requires_grad)


_CASES: list[Case] = []


def _add(
    category: str,
    function: str,
    variant: str,
    fn: Callable[..., Any],
    make_inputs: InputsFactory,
) -> None:
    name = f"{category}/{function}/{variant}"
    assert category in CATEGORIES, category
    assert all(c.name != name for c in _CASES), name
    _CASES.append(Case(name, lambda: fn, make_inputs))


def _add_lazy(
    category: str,
    function: str,
    variant: str,
    make_fn: Callable[[], Callable[..., Any]],
    make_inputs: InputsFactory,
) -> None:
    name = f"{category}/{function}/{variant}"
    assert all(c.name != name for c in _CASES), name
    _CASES.append(Case(name, make_fn, make_inputs))


# --------------------------------------------------------------------------- input helpers


def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0, grad: bool = True):
    t = torch.randn(*shape, generator=gen, dtype=DTYPE) * scale
    return t.requires_grad_(grad)


def _uniform(
    gen: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0, grad: bool = True
):
    t = lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=DTYPE)
    return t.requires_grad_(grad)


def _randint(gen: torch.Generator, high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=gen)


def _shape_name(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _seeded_module(builder: Callable[[], nn.Module], key: str) -> nn.Module:
    """Build a float64 module in eval mode from its own seed, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(key))
        module = builder().to(DTYPE).eval()
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.running_mean.normal_(0.0, 0.1)
                sub.running_var.uniform_(0.5, 1.5)
        for p in module.parameters():
            p.requires_grad_(False)
    return module


# =========================================================================== filters


def _gaussian_1d(ksize: int, sigma: float) -> torch.Tensor:
    t = torch.arange(ksize, dtype=DTYPE) - (ksize - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def filter2d(
    x: torch.Tensor, kernel: torch.Tensor, border: str = "reflect", normalized: bool = False
) -> torch.Tensor:
    """Correlate every channel of ``x`` (B, C, H, W) with ``kernel`` (kh, kw), same size."""
    if normalized:
        kernel = kernel / kernel.sum()
    kh, kw = kernel.shape[-2:]
    x = F.pad(x, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2), mode=border)
    c = x.shape[1]
    weight = kernel.to(x.dtype).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, groups=c)


def gaussian_blur(x: torch.Tensor, ksize: int = 5, sigma: float = 1.2) -> torch.Tensor:
    g = _gaussian_1d(ksize, sigma)
    return filter2d(filter2d(x, g.view(1, ksize)), g.view(ksize, 1))


def box_blur(x: torch.Tensor, ksize: int = 3) -> torch.Tensor:
    return filter2d(x, torch.full((ksize, ksize), 1.0 / ksize**2, dtype=DTYPE))


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=DTYPE) / 8
_DIFF_X = torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]], dtype=DTYPE)


def spatial_gradient(x: torch.Tensor, mode: str = "sobel") -> torch.Tensor:
    """(B, C, 2, H, W): x- and y-derivatives, replicate border."""
    kx = _SOBEL_X if mode == "sobel" else _DIFF_X
    gx = filter2d(x, kx, border="replicate")
    gy = filter2d(x, kx.t(), border="replicate")
    return torch.stack([gx, gy], dim=2)


def sobel_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    g = spatial_gradient(x, "sobel")
    return torch.sqrt(g[:, :, 0] ** 2 + g[:, :, 1] ** 2 + eps)


def laplacian(x: torch.Tensor, ksize: int = 3) -> torch.Tensor:
    if ksize == 3:
        k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=DTYPE)
    else:
        k = torch.ones(ksize, ksize, dtype=DTYPE)
        k[ksize // 2, ksize // 2] = 1 - ksize**2
    return filter2d(x, k / k.abs().sum())


def unsharp_mask(x: torch.Tensor, amount: torch.Tensor | float = 1.0) -> torch.Tensor:
    if isinstance(amount, torch.Tensor):
        amount = amount.view(-1, 1, 1, 1)
    return x + amount * (x - gaussian_blur(x, 5, 1.0))


def _motion_kernel(ksize: int, angle_deg: float) -> torch.Tensor:
    """A line through the kernel's centre at ``angle_deg``, splatted bilinearly."""
    kernel = torch.zeros(ksize, ksize, dtype=DTYPE)
    r = (ksize - 1) / 2
    a = math.radians(angle_deg)
    for t in torch.linspace(-r, r, 8 * ksize, dtype=DTYPE).tolist():
        px, py = r + t * math.cos(a), r - t * math.sin(a)
        x0, y0 = math.floor(px), math.floor(py)
        fx, fy = px - x0, py - y0
        for dx, dy, w in (
            (0, 0, (1 - fx) * (1 - fy)),
            (1, 0, fx * (1 - fy)),
            (0, 1, (1 - fx) * fy),
            (1, 1, fx * fy),
        ):
            if 0 <= x0 + dx < ksize and 0 <= y0 + dy < ksize:
                kernel[y0 + dy, x0 + dx] += w
    return kernel / kernel.sum()


def motion_blur(x: torch.Tensor, ksize: int = 5, angle: float = 35.0) -> torch.Tensor:
    return filter2d(x, _motion_kernel(ksize, angle))


def bilateral_like(
    x: torch.Tensor, ksize: int = 5, sigma_color: float = 0.2, sigma_space: float = 1.5
) -> torch.Tensor:
    """Edge-preserving filter: spatial Gaussian times exp(-(colour distance)² / (2 σ²))."""
    b, c, h, w = x.shape
    p = ksize // 2
    patches = F.unfold(F.pad(x, (p, p, p, p), mode="reflect"), ksize)
    patches = patches.view(b, c, ksize * ksize, h, w)
    centre = x.unsqueeze(2)
    dist2 = ((patches - centre) ** 2).sum(1, keepdim=True)
    g = _gaussian_1d(ksize, sigma_space)
    spatial = (g[:, None] * g[None, :]).reshape(1, 1, ksize * ksize, 1, 1)
    weights = spatial * torch.exp(-dist2 / (2 * sigma_color**2))
    return (weights * patches).sum(2) / weights.sum(2)


def median_blur(x: torch.Tensor, ksize: int = 3) -> torch.Tensor:
    b, c, h, w = x.shape
    p = ksize // 2
    patches = F.unfold(F.pad(x, (p, p, p, p), mode="reflect"), ksize)
    return patches.view(b, c, ksize * ksize, h, w).median(dim=2).values


_PYR = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=DTYPE) / 16


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    blurred = filter2d(filter2d(x, _PYR.view(1, 5)), _PYR.view(5, 1))
    return F.interpolate(blurred, scale_factor=0.5, mode="bilinear", align_corners=False)


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return filter2d(filter2d(up, _PYR.view(1, 5)), _PYR.view(5, 1))


_IMG_SHAPES = [(1, 3, 5, 5), (2, 3, 8, 8), (1, 1, 16, 16), (2, 1, 12, 12), (1, 1, 32, 32)]


def _img(shape: Sequence[int], lo: float = 0.0, hi: float = 1.0) -> InputsFactory:
    return lambda gen: (_uniform(gen, *shape, lo=lo, hi=hi),)


def _register_filters() -> None:
    for i, shape in enumerate(_IMG_SHAPES):
        v = _shape_name(shape)
        ks, sig = [(3, 0.8), (5, 1.2), (5, 1.5), (7, 2.0), (5, 1.0)][i]
        _add(
            "filters",
            "gaussian_blur",
            f"{v}-k{ks}",
            lambda x, ks=ks, sig=sig: gaussian_blur(x, ks, sig),
            _img(shape),
        )
        kb = 3 if i % 2 == 0 else 5
        _add("filters", "box_blur", f"{v}-k{kb}", lambda x, k=kb: box_blur(x, k), _img(shape))
        _add("filters", "sobel_magnitude", v, sobel_magnitude, _img(shape))
        kl = 3 if i % 2 == 0 else 5
        _add("filters", "laplacian", f"{v}-k{kl}", lambda x, k=kl: laplacian(x, k), _img(shape))
        mode = "sobel" if i % 2 == 0 else "diff"
        _add(
            "filters",
            "spatial_gradient",
            f"{v}-{mode}",
            lambda x, m=mode: spatial_gradient(x, m),
            _img(shape),
        )
        if i % 2 == 0:
            _add("filters", "unsharp_mask", v, unsharp_mask, _img(shape))
        else:
            _add(
                "filters",
                "unsharp_mask",
                f"{v}-learnable-amount",
                unsharp_mask,
                lambda gen, s=shape: (_uniform(gen, *s), _uniform(gen, s[0], lo=0.5, hi=2.0)),
            )
        angle = [35.0, 120.0, 10.0, 75.0, 160.0][i]
        _add(
            "filters",
            "motion_blur",
            f"{v}-a{int(angle)}",
            lambda x, a=angle: motion_blur(x, 5, a),
            _img(shape),
        )
        normalized = i % 2 == 1
        kf = 3 if i < 2 else 5
        _add(
            "filters",
            "filter2d_learnable",
            f"{v}-k{kf}{'-normalized' if normalized else ''}",
            lambda x, k, n=normalized: filter2d(x, k, normalized=n),
            lambda gen, s=shape, k=kf: (_uniform(gen, *s), _uniform(gen, k, k, lo=0.1, hi=1.0)),
        )
        _add("filters", "bilateral_like", v, bilateral_like, _img(shape))
        _add("filters", "median_blur", f"{v}-k3", median_blur, _img(shape))
        if shape[-1] >= 8:
            _add("filters", "pyr_down", v, pyr_down, _img(shape))
        if shape[-1] <= 16:
            _add("filters", "pyr_up", v, pyr_up, _img(shape))


# =========================================================================== color

_TWO_PI = 2 * math.pi


def rgb_to_grayscale(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _hue(img: torch.Tensor, maxc, argmax, delta) -> torch.Tensor:
    r, g, b = img.unbind(-3)
    h = torch.where(
        argmax == 0,
        torch.remainder((g - b) / delta, 6.0),
        torch.where(argmax == 1, (b - r) / delta + 2.0, (r - g) / delta + 4.0),
    )
    return h * (_TWO_PI / 6.0)


def rgb_to_hsv(img: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    maxc, argmax = img.max(dim=-3)
    minc = img.min(dim=-3).values
    delta = maxc - minc
    s = delta / (maxc + eps)
    h = _hue(img, maxc, argmax, delta + eps)
    return torch.stack([h, s, maxc], dim=-3)


def hsv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    h, s, v = img.unbind(-3)
    h6 = h / _TWO_PI * 6.0
    floor = torch.floor(h6)
    f = h6 - floor
    hi = torch.remainder(floor, 6).long()
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    table = torch.stack([v, q, p, t], dim=-3)  # 0 v, 1 q, 2 p, 3 t
    idx = torch.tensor([[0, 1, 2, 2, 3, 0], [3, 0, 0, 1, 2, 2], [2, 2, 3, 0, 0, 1]])
    out = [table.gather(-3, idx[k][hi].unsqueeze(-3)) for k in range(3)]
    return torch.cat(out, dim=-3)


def rgb_to_hls(img: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    maxc, argmax = img.max(dim=-3)
    minc = img.min(dim=-3).values
    delta = maxc - minc
    light = (maxc + minc) / 2
    s = torch.where(light < 0.5, delta / (maxc + minc + eps), delta / (2 - maxc - minc + eps))
    h = _hue(img, maxc, argmax, delta + eps)
    return torch.stack([h, light, s], dim=-3)


def _apply_matrix(img: torch.Tensor, m: Sequence[Sequence[float]], offset=None) -> torch.Tensor:
    mat = torch.tensor(m, dtype=img.dtype)
    out = torch.einsum("ij,...jhw->...ihw", mat, img)
    if offset is not None:
        out = out + torch.tensor(offset, dtype=img.dtype).view(3, 1, 1)
    return out


_YUV = [[0.299, 0.587, 0.114], [-0.147, -0.289, 0.436], [0.615, -0.515, -0.100]]
_YUV_INV = [[1.0, 0.0, 1.14], [1.0, -0.396, -0.581], [1.0, 2.029, 0.0]]
_XYZ = [
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
]


def rgb_to_yuv(img: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(img, _YUV)


def yuv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(img, _YUV_INV)


def rgb_to_ycbcr(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(-3)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = (b - y) * 0.564 + 0.5
    cr = (r - y) * 0.713 + 0.5
    return torch.stack([y, cb, cr], dim=-3)


def ycbcr_to_rgb(img: torch.Tensor) -> torch.Tensor:
    y, cb, cr = img.unbind(-3)
    cb, cr = cb - 0.5, cr - 0.5
    return torch.stack([y + 1.403 * cr, y - 0.714 * cr - 0.344 * cb, y + 1.773 * cb], dim=-3)


def srgb_to_linear(img: torch.Tensor) -> torch.Tensor:
    safe = img.clamp(min=1e-6)
    return torch.where(img > 0.04045, ((safe + 0.055) / 1.055) ** 2.4, img / 12.92)


def linear_to_srgb(img: torch.Tensor) -> torch.Tensor:
    safe = img.clamp(min=1e-6)
    return torch.where(img > 0.0031308, 1.055 * safe ** (1 / 2.4) - 0.055, 12.92 * img)


def rgb_to_xyz(img: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(img, _XYZ)


def rgb_to_lab(img: torch.Tensor) -> torch.Tensor:
    xyz = rgb_to_xyz(srgb_to_linear(img))
    white = torch.tensor([0.950456, 1.0, 1.088754], dtype=img.dtype).view(3, 1, 1)
    t = xyz / white
    fx = torch.where(t > 0.008856, t.clamp(min=1e-6) ** (1 / 3), 7.787 * t + 4.0 / 29.0)
    x, y, z = fx.unbind(-3)
    return torch.stack([116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)], dim=-3)


def _bcast(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def adjust_brightness(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (img + _bcast(factor)).clamp(0.0, 1.0)


def adjust_contrast(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (img * _bcast(factor)).clamp(0.0, 1.0)


def adjust_saturation(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    h, s, v = rgb_to_hsv(img).unbind(-3)
    s = (s * factor.view(-1, 1, 1)).clamp(0.0, 1.0)
    return hsv_to_rgb(torch.stack([h, s, v], dim=-3))


def adjust_hue(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    h, s, v = rgb_to_hsv(img).unbind(-3)
    h = torch.remainder(h + factor.view(-1, 1, 1), _TWO_PI)
    return hsv_to_rgb(torch.stack([h, s, v], dim=-3))


def adjust_gamma(img: torch.Tensor, gamma: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return (_bcast(gain) * img ** _bcast(gamma)).clamp(0.0, 1.0)


_COLOR_SHAPES = [(1, 3, 5, 5), (2, 3, 8, 8), (1, 3, 16, 16)]


def _hsv_inputs(shape: Sequence[int]) -> InputsFactory:
    def make(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        b, _, h, w = shape
        hue = _uniform(gen, b, 1, h, w, lo=0.0, hi=_TWO_PI, grad=False)
        sv = _uniform(gen, b, 2, h, w, lo=0.1, hi=0.9, grad=False)
        return (torch.cat([hue, sv], dim=1).requires_grad_(),)

    return make


def _yuv_inputs(shape: Sequence[int]) -> InputsFactory:
    def make(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        b, _, h, w = shape
        y = _uniform(gen, b, 1, h, w, lo=0.1, hi=0.9, grad=False)
        uv = _uniform(gen, b, 2, h, w, lo=-0.4, hi=0.4, grad=False)
        return (torch.cat([y, uv], dim=1).requires_grad_(),)

    return make


def _with_factor(shape: Sequence[int], lo: float, hi: float, n: int = 1) -> InputsFactory:
    def make(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        img = _uniform(gen, *shape, lo=0.05, hi=0.95)
        return (img, *(_uniform(gen, shape[0], lo=lo, hi=hi) for _ in range(n)))

    return make


def _register_color() -> None:
    rgb = lambda s: _img(s, 0.05, 0.95)  # noqa: E731
    for shape in _COLOR_SHAPES:
        v = _shape_name(shape)
        _add("color", "rgb_to_grayscale", v, rgb_to_grayscale, rgb(shape))
        _add("color", "rgb_to_hsv", v, rgb_to_hsv, rgb(shape))
        _add("color", "hsv_to_rgb", v, hsv_to_rgb, _hsv_inputs(shape))
        _add("color", "rgb_to_hls", v, rgb_to_hls, rgb(shape))
        _add("color", "rgb_to_yuv", v, rgb_to_yuv, rgb(shape))
        _add("color", "yuv_to_rgb", v, yuv_to_rgb, _yuv_inputs(shape))
        _add("color", "rgb_to_ycbcr", v, rgb_to_ycbcr, rgb(shape))
        _add("color", "ycbcr_to_rgb", v, ycbcr_to_rgb, rgb(shape))
        _add("color", "rgb_to_xyz", v, rgb_to_xyz, rgb(shape))
        _add("color", "rgb_to_lab", v, rgb_to_lab, rgb(shape))
        _add("color", "linear_to_srgb", v, linear_to_srgb, _img(shape, 0.0005, 0.95))
        _add("color", "srgb_to_linear", v, srgb_to_linear, _img(shape, 0.005, 0.95))
        _add("color", "adjust_brightness", v, adjust_brightness, _with_factor(shape, -0.3, 0.3))
        _add("color", "adjust_contrast", v, adjust_contrast, _with_factor(shape, 0.5, 1.5))
        _add("color", "adjust_saturation", v, adjust_saturation, _with_factor(shape, 0.3, 1.8))
        _add("color", "adjust_hue", v, adjust_hue, _with_factor(shape, -2.5, 2.5))
        _add("color", "adjust_gamma", v, adjust_gamma, _with_factor(shape, 0.5, 2.0, n=2))
    # the Lab threshold branch (t <= 0.008856): dark pixels, and a mixture
    _add("color", "rgb_to_lab", "1x3x8x8-dark", rgb_to_lab, _img((1, 3, 8, 8), 0.0005, 0.08))
    _add("color", "rgb_to_lab", "2x3x5x5-mixed", rgb_to_lab, _img((2, 3, 5, 5), 0.0005, 0.5))


# =========================================================================== warps


def _normalizer(h: int, w: int) -> torch.Tensor:
    """Pixel (align_corners=True) to [-1, 1] coordinates, as a 3×3 matrix."""
    return torch.tensor(
        [[2.0 / (w - 1), 0.0, -1.0], [0.0, 2.0 / (h - 1), -1.0], [0.0, 0.0, 1.0]], dtype=DTYPE
    )


def _to_3x3(m: torch.Tensor) -> torch.Tensor:
    last = torch.zeros(*m.shape[:-2], 1, 3, dtype=m.dtype)
    last[..., 0, 2] = 1.0
    return torch.cat([m, last], dim=-2)


def warp_affine(
    img: torch.Tensor, m: torch.Tensor, dsize: tuple[int, int] | None = None, padding="zeros"
) -> torch.Tensor:
    """Warp by the pixel-space affine map ``m`` (B, 2, 3), src → dst."""
    b, c, h, w = img.shape
    oh, ow = dsize or (h, w)
    n_src, n_dst = _normalizer(h, w), _normalizer(oh, ow)
    theta = n_src @ torch.linalg.inv(_to_3x3(m)) @ torch.linalg.inv(n_dst)
    grid = F.affine_grid(theta[:, :2, :], [b, c, oh, ow], align_corners=True)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def _pixel_grid(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=DTYPE), torch.arange(w, dtype=DTYPE), indexing="ij"
    )
    return torch.stack([xs, ys], dim=-1)  # (h, w, 2) as (x, y)


def _sample_pixels(img: torch.Tensor, xy: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """grid_sample at pixel coordinates ``xy`` (B, H', W', 2)."""
    h, w = img.shape[-2:]
    scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=img.dtype)
    grid = xy * scale - 1.0
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def warp_perspective(img: torch.Tensor, hmat: torch.Tensor) -> torch.Tensor:
    """Warp by the homography ``hmat`` (B, 3, 3), src → dst in pixels."""
    b, _, h, w = img.shape
    grid = _pixel_grid(h, w).reshape(1, -1, 2).expand(b, -1, -1)
    homog = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1)
    src = homog @ torch.linalg.inv(hmat).transpose(-1, -2)
    xy = src[..., :2] / src[..., 2:]
    return _sample_pixels(img, xy.view(b, h, w, 2))


def _centre_affine(linear: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 2, 3) map applying ``linear`` (B, 2, 2) about the image centre."""
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=linear.dtype)
    shift = centre - linear @ centre
    return torch.cat([linear, shift.unsqueeze(-1)], dim=-1)


def rotate(img: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    a = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    linear = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    return warp_affine(img, _centre_affine(linear, *img.shape[-2:]))


def scale(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return warp_affine(img, _centre_affine(torch.diag_embed(factor), *img.shape[-2:]))


def remap_flow(img: torch.Tensor, flow: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Sample ``img`` at pixel grid + ``flow`` (B, H, W, 2)."""
    h, w = img.shape[-2:]
    return _sample_pixels(img, _pixel_grid(h, w) + flow, padding)


def crop_and_resize(img: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]):
    """Bilinear crops of the boxes (B, 4) as x1, y1, x2, y2 in pixels, resized to ``size``."""
    oh, ow = size
    x1, y1, x2, y2 = boxes.unbind(-1)
    tx = torch.linspace(0.0, 1.0, ow, dtype=img.dtype)
    ty = torch.linspace(0.0, 1.0, oh, dtype=img.dtype)
    xs = x1[:, None] + (x2 - x1)[:, None] * tx  # (B, ow)
    ys = y1[:, None] + (y2 - y1)[:, None] * ty  # (B, oh)
    xy = torch.stack([xs[:, None, :].expand(-1, oh, -1), ys[:, :, None].expand(-1, -1, ow)], dim=-1)
    return _sample_pixels(img, xy)


def homography_dlt_solve(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The homography (h33 = 1) mapping four points ``src`` (B, 4, 2) onto ``dst``."""
    x, y = src.unbind(-1)
    u, v = dst.unbind(-1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=-2)
    rhs = torch.cat([u, v], dim=-1).unsqueeze(-1)
    h = torch.linalg.solve(a, rhs).squeeze(-1)
    return torch.cat([h, torch.ones_like(h[..., :1])], dim=-1).view(-1, 3, 3)


def homography_dlt_svd(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares homography of N ≥ 5 pairs: the last right singular vector, h33 = 1."""
    x, y = src.unbind(-1)
    u, v = dst.unbind(-1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([-x, -y, -one, zero, zero, zero, u * x, u * y, u], dim=-1)
    rows_v = torch.stack([zero, zero, zero, -x, -y, -one, v * x, v * y, v], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=-2)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    h = vh[..., -1, :]
    return (h / h[..., -1:]).view(-1, 3, 3)


def transform_points(hmat: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    homog = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1)
    out = homog @ hmat.transpose(-1, -2)
    return out[..., :2] / out[..., 2:]


def _rodrigues(rvec: torch.Tensor) -> torch.Tensor:
    theta = rvec.norm(dim=-1, keepdim=True)
    k = rvec / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    cross = torch.stack(
        [
            torch.stack([zero, -kz, ky], -1),
            torch.stack([kz, zero, -kx], -1),
            torch.stack([-ky, kx, zero], -1),
        ],
        dim=-2,
    )
    eye = torch.eye(3, dtype=rvec.dtype)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return eye + s * cross + (1 - c) * (cross @ cross)


def project_points(
    pts3d: torch.Tensor, rvec: torch.Tensor, tvec: torch.Tensor, intr: torch.Tensor
) -> torch.Tensor:
    """Pinhole projection; ``intr`` (B, 4) = fx, fy, cx, cy."""
    cam = pts3d @ _rodrigues(rvec).transpose(-1, -2) + tvec[:, None, :]
    xy = cam[..., :2] / cam[..., 2:]
    fx, fy, cx, cy = intr[:, None, :].unbind(-1)
    return torch.stack([xy[..., 0] * fx + cx, xy[..., 1] * fy + cy], dim=-1)


def _distortion(x, y, dist):
    k1, k2, p1, p2, k3 = dist[:, None, :].unbind(-1)
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return radial, dx, dy


def undistort_points(
    pts: torch.Tensor, intr: torch.Tensor, dist: torch.Tensor, iters: int = 5
) -> torch.Tensor:
    """Fixed-point undistortion of pixel points (B, N, 2), Brown-Conrady k1 k2 p1 p2 k3."""
    fx, fy, cx, cy = intr[:, None, :].unbind(-1)
    x0 = (pts[..., 0] - cx) / fx
    y0 = (pts[..., 1] - cy) / fy
    x, y = x0, y0
    for _ in range(iters):
        radial, dx, dy = _distortion(x, y, dist)
        x = (x0 - dx) / radial
        y = (y0 - dy) / radial
    return torch.stack([x * fx + cx, y * fy + cy], dim=-1)


def distort_points(pts: torch.Tensor, intr: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    fx, fy, cx, cy = intr[:, None, :].unbind(-1)
    x = (pts[..., 0] - cx) / fx
    y = (pts[..., 1] - cy) / fy
    radial, dx, dy = _distortion(x, y, dist)
    return torch.stack([(x * radial + dx) * fx + cx, (y * radial + dy) * fy + cy], dim=-1)


def _affine_inputs(shape, padding_scale=0.3):
    def make(gen):
        b, w = shape[0], shape[-1]
        img = _uniform(gen, *shape)
        m = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=DTYPE).repeat(b, 1, 1)
        noise = torch.randn(b, 2, 3, generator=gen, dtype=DTYPE)
        noise[:, :, :2] *= 0.08
        noise[:, :, 2] *= padding_scale * w
        return img, (m + noise).requires_grad_()

    return make


def _homography_inputs(shape):
    def make(gen):
        b, _, h, w = shape
        img = _uniform(gen, *shape)
        hm = torch.eye(3, dtype=DTYPE).repeat(b, 1, 1)
        noise = torch.randn(b, 3, 3, generator=gen, dtype=DTYPE)
        noise[:, :2, :2] *= 0.05
        noise[:, :2, 2] *= 0.3
        noise[:, 2, :2] *= 0.05 / max(h, w)
        noise[:, 2, 2] *= 0.02
        return img, (hm + noise).requires_grad_()

    return make


def _point_pairs(b: int, n: int):
    def make(gen):
        base = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=DTYPE)
        if n > 4:
            extra = torch.rand(n - 4, 2, generator=gen, dtype=DTYPE)
            base = torch.cat([base, extra], dim=0)
        src = base + 0.1 * torch.randn(b, n, 2, generator=gen, dtype=DTYPE)
        dst = src + 0.2 * torch.randn(b, n, 2, generator=gen, dtype=DTYPE)
        return src.requires_grad_(), dst.requires_grad_()

    return make


def _camera_inputs(b: int, n: int, distorted: bool = False):
    def make(gen):
        intr = torch.tensor([[120.0, 110.0, 32.0, 24.0]], dtype=DTYPE).repeat(b, 1)
        intr = intr + torch.randn(b, 4, generator=gen, dtype=DTYPE)
        dist = torch.tensor([-0.2, 0.05, 0.001, -0.002, 0.01], dtype=DTYPE)
        dist = dist * (1 + 0.2 * torch.randn(b, 5, generator=gen, dtype=DTYPE))
        if distorted:
            pts = torch.rand(b, n, 2, generator=gen, dtype=DTYPE) * torch.tensor(
                [64.0, 48.0], dtype=DTYPE
            )
            return pts.requires_grad_(), intr.requires_grad_(), dist.requires_grad_()
        pts3d = torch.randn(b, n, 3, generator=gen, dtype=DTYPE) * 0.5
        pts3d[..., 2] = pts3d[..., 2].abs() + 2.0
        rvec = 0.3 * torch.randn(b, 3, generator=gen, dtype=DTYPE)
        tvec = 0.2 * torch.randn(b, 3, generator=gen, dtype=DTYPE)
        return (
            pts3d.requires_grad_(),
            rvec.requires_grad_(),
            tvec.requires_grad_(),
            intr.requires_grad_(),
        )

    return make


def _register_warps() -> None:
    shapes = [(1, 3, 5, 5), (2, 1, 8, 8), (1, 1, 16, 16)]
    for shape in shapes:
        v = _shape_name(shape)
        _add("warps", "warp_affine", v, warp_affine, _affine_inputs(shape))
        _add("warps", "warp_perspective", v, warp_perspective, _homography_inputs(shape))
        _add(
            "warps",
            "rotate",
            v,
            rotate,
            lambda gen, s=shape: (_uniform(gen, *s), _uniform(gen, s[0], lo=-60.0, hi=60.0)),
        )
        _add(
            "warps",
            "scale",
            v,
            scale,
            lambda gen, s=shape: (_uniform(gen, *s), _uniform(gen, s[0], 2, lo=0.6, hi=1.6)),
        )
        _add(
            "warps",
            "remap_flow",
            v,
            remap_flow,
            lambda gen, s=shape: (
                _uniform(gen, *s),
                _randn(gen, s[0], s[2], s[3], 2, scale=0.7),
            ),
        )
        _add(
            "warps",
            "crop_and_resize",
            f"{v}-to4x6",
            lambda img, boxes: crop_and_resize(img, boxes, (4, 6)),
            lambda gen, s=shape: (
                _uniform(gen, *s),
                (
                    torch.tensor([0.2, 0.3, 0.7, 0.8], dtype=DTYPE) * (s[-1] - 1)
                    + 0.3 * torch.randn(s[0], 4, generator=gen, dtype=DTYPE)
                ).requires_grad_(),
            ),
        )
    _add(
        "warps",
        "warp_affine",
        "1x1x16x16-border-to12x10",
        lambda img, m: warp_affine(img, m, (12, 10), padding="border"),
        _affine_inputs((1, 1, 16, 16), 0.05),
    )
    _add(
        "warps",
        "warp_perspective",
        "1x1x32x32",
        warp_perspective,
        _homography_inputs((1, 1, 32, 32)),
    )
    _add(
        "warps",
        "remap_flow",
        "2x3x8x8-border",
        lambda img, flow: remap_flow(img, flow, "border"),
        lambda gen: (_uniform(gen, 2, 3, 8, 8), _randn(gen, 2, 8, 8, 2, scale=1.5)),
    )
    for shape, size in [
        ((1, 3, 5, 5), (8, 8)),
        ((2, 1, 8, 8), (5, 6)),
        ((1, 1, 16, 16), (24, 20)),
        ((1, 1, 32, 32), (16, 16)),
    ]:
        v = f"{_shape_name(shape)}-to{size[0]}x{size[1]}"
        for mode in ("bilinear", "bicubic"):
            _add(
                "warps",
                f"resize_{mode}",
                v,
                lambda x, s=size, m=mode: F.interpolate(x, size=s, mode=m, align_corners=False),
                _img(shape),
            )
    for b in (1, 2):
        _add(
            "warps", "homography_dlt_solve", f"b{b}-4pts", homography_dlt_solve, _point_pairs(b, 4)
        )
    _add(
        "warps",
        "homography_dlt_solve",
        "b2-4pts-warp-points",
        lambda src, dst: transform_points(
            homography_dlt_solve(src, dst), torch.tensor([[[0.5, 0.5], [0.2, 0.9]]], dtype=DTYPE)
        ),
        _point_pairs(2, 4),
    )
    for b, n in [(1, 5), (1, 6), (2, 8)]:
        _add("warps", "homography_dlt_svd", f"b{b}-{n}pts", homography_dlt_svd, _point_pairs(b, n))
    for b, n in [(1, 4), (2, 10), (1, 25)]:
        _add(
            "warps",
            "transform_points",
            f"b{b}-{n}pts",
            transform_points,
            lambda gen, b=b, n=n: (
                (
                    torch.eye(3, dtype=DTYPE)
                    + 0.05 * torch.randn(b, 3, 3, generator=gen, dtype=DTYPE)
                ).requires_grad_(),
                _uniform(gen, b, n, 2, lo=-1.0, hi=1.0),
            ),
        )
        _add("warps", "project_points", f"b{b}-{n}pts", project_points, _camera_inputs(b, n))
        _add(
            "warps",
            "undistort_points",
            f"b{b}-{n}pts",
            undistort_points,
            _camera_inputs(b, n, distorted=True),
        )
        _add(
            "warps",
            "distort_points",
            f"b{b}-{n}pts",
            distort_points,
            _camera_inputs(b, n, distorted=True),
        )


# =========================================================================== losses


def ssim_loss(img1: torch.Tensor, img2: torch.Tensor, window: int = 5, max_val: float = 1.0):
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2

    def blur(t):
        return gaussian_blur(t, window, 1.5)

    mu1, mu2 = blur(img1), blur(img2)
    s11 = blur(img1 * img1) - mu1**2
    s22 = blur(img2 * img2) - mu2**2
    s12 = blur(img1 * img2) - mu1 * mu2
    ssim = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return ((1.0 - ssim) / 2).mean()


def psnr(img1: torch.Tensor, img2: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    mse = ((img1 - img2) ** 2).mean()
    return 10.0 * torch.log10(max_val**2 / mse)


def total_variation(img: torch.Tensor) -> torch.Tensor:
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs().sum((-3, -2, -1))
    dx = (img[..., :, 1:] - img[..., :, :-1]).abs().sum((-3, -2, -1))
    return dx + dy


def _one_hot(target: torch.Tensor, c: int, like: torch.Tensor) -> torch.Tensor:
    oh = F.one_hot(target, c).to(like.dtype)
    return oh.movedim(-1, 1) if oh.dim() > 2 else oh


def focal_loss(logits, target, alpha: float = 0.25, gamma: float = 2.0):
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    oh = _one_hot(target, logits.shape[1], logits)
    return (-alpha * (1 - p) ** gamma * logp * oh).sum(1).mean()


def binary_focal_loss(logits, target, alpha: float = 0.25, gamma: float = 2.0):
    p = torch.sigmoid(logits)
    pos = -alpha * (1 - p) ** gamma * target * F.logsigmoid(logits)
    neg = -(1 - alpha) * p**gamma * (1 - target) * F.logsigmoid(-logits)
    return (pos + neg).mean()


def dice_loss(logits, target, eps: float = 1e-8):
    p = F.softmax(logits, dim=1)
    oh = _one_hot(target, logits.shape[1], logits)
    dims = tuple(range(1, logits.dim()))
    inter = (p * oh).sum(dims)
    card = (p + oh).sum(dims)
    return (1 - 2 * inter / (card + eps)).mean()


def tversky_loss(logits, target, alpha: float = 0.5, beta: float = 0.5, eps: float = 1e-8):
    p = F.softmax(logits, dim=1)
    oh = _one_hot(target, logits.shape[1], logits)
    dims = tuple(range(1, logits.dim()))
    inter = (p * oh).sum(dims)
    fp = (p * (1 - oh)).sum(dims)
    fn = ((1 - p) * oh).sum(dims)
    return (1 - inter / (inter + alpha * fp + beta * fn + eps)).mean()


def charbonnier_loss(x, y, eps: float = 1e-3):
    return torch.sqrt((x - y) ** 2 + eps**2).mean()


def depth_smoothness_loss(idepth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    def dx(t):
        return t[..., :, :-1] - t[..., :, 1:]

    def dy(t):
        return t[..., :-1, :] - t[..., 1:, :]

    wx = torch.exp(-dx(image).abs().mean(1, keepdim=True))
    wy = torch.exp(-dy(image).abs().mean(1, keepdim=True))
    return (dx(idepth) * wx).abs().mean() + (dy(idepth) * wy).abs().mean()


def _pair(shape, grad2=False, lo=0.0, hi=1.0):
    return lambda gen: (
        _uniform(gen, *shape, lo=lo, hi=hi),
        _uniform(gen, *shape, lo=lo, hi=hi, grad=grad2),
    )


def _logits_target(shape, scale=2.0):
    def make(gen):
        logits = _randn(gen, *shape, scale=scale)
        target = _randint(gen, shape[1], shape[0], *shape[2:])
        return logits, target

    return make


def _register_losses() -> None:
    for shape, win, both in [
        ((1, 3, 5, 5), 3, False),
        ((2, 1, 8, 8), 5, False),
        ((1, 1, 16, 16), 11, False),
        ((1, 3, 16, 16), 5, True),
    ]:
        v = f"{_shape_name(shape)}-w{win}" + ("-both" if both else "")
        _add(
            "losses",
            "ssim_loss",
            v,
            lambda a, b, w=win: ssim_loss(a, b, w),
            _pair(shape, both),
        )
    for shape, both in [((1, 3, 5, 5), False), ((2, 3, 8, 8), True), ((1, 1, 32, 32), False)]:
        v = _shape_name(shape) + ("-both" if both else "")
        _add("losses", "psnr", v, psnr, _pair(shape, both))
        _add("losses", "charbonnier", v, charbonnier_loss, _pair(shape, both))
        _add("losses", "huber", v, lambda a, b: F.huber_loss(a, b, delta=0.3), _pair(shape, both))
    for shape in [(1, 3, 5, 5), (2, 3, 8, 8), (1, 1, 16, 16), (1, 1, 32, 32)]:
        _add("losses", "total_variation", _shape_name(shape), total_variation, _img(shape))
    for shape, gamma in [
        ((4, 5), 2.0),
        ((1, 3, 5, 5), 2.0),
        ((2, 4, 8, 8), 2.0),
        ((1, 3, 8, 8), 1.5),
    ]:
        _add(
            "losses",
            "focal_loss",
            f"{_shape_name(shape)}-g{gamma:g}",
            lambda x, t, g=gamma: focal_loss(x, t, gamma=g),
            _logits_target(shape),
        )
    for shape in [(4, 6), (2, 1, 8, 8), (1, 1, 16, 16)]:
        _add(
            "losses",
            "binary_focal_loss",
            _shape_name(shape),
            binary_focal_loss,
            lambda gen, s=shape: (
                _randn(gen, *s, scale=2.0),
                (torch.rand(*s, generator=gen) > 0.5).to(DTYPE),
            ),
        )
    for shape in [(4, 5), (1, 3, 5, 5), (2, 4, 8, 8), (1, 2, 16, 16)]:
        _add("losses", "dice_loss", _shape_name(shape), dice_loss, _logits_target(shape))
    for shape, (a, b) in [
        ((1, 3, 5, 5), (0.5, 0.5)),
        ((2, 4, 8, 8), (0.3, 0.7)),
        ((1, 2, 16, 16), (0.7, 0.3)),
    ]:
        _add(
            "losses",
            "tversky_loss",
            f"{_shape_name(shape)}-a{a}-b{b}",
            lambda x, t, a=a, b=b: tversky_loss(x, t, a, b),
            _logits_target(shape),
        )
    for shape, smooth, weighted in [
        ((4, 5), 0.1, False),
        ((1, 3, 5, 5), 0.1, False),
        ((2, 4, 8, 8), 0.1, True),
        ((8, 10), 0.2, False),
    ]:
        weight = torch.linspace(0.5, 1.5, shape[1], dtype=DTYPE) if weighted else None
        _add(
            "losses",
            "cross_entropy_smoothing",
            f"{_shape_name(shape)}-s{smooth}" + ("-weighted" if weighted else ""),
            lambda x, t, s=smooth, w=weight: F.cross_entropy(x, t, weight=w, label_smoothing=s),
            _logits_target(shape),
        )
    for shape in [(1, 5, 5), (2, 8, 8), (1, 16, 16), (1, 32, 32)]:
        b, h, w = shape
        _add(
            "losses",
            "depth_smoothness",
            f"{b}x1x{h}x{w}",
            depth_smoothness_loss,
            lambda gen, b=b, h=h, w=w: (
                _uniform(gen, b, 1, h, w, lo=0.1, hi=1.0),
                _uniform(gen, b, 3, h, w),
            ),
        )
    for n, d, margin, swap in [
        (4, 8, 1.0, False),
        (8, 16, 1.0, True),
        (2, 128, 0.5, False),
        (6, 32, 2.0, False),
    ]:
        _add(
            "losses",
            "triplet_margin",
            f"{n}x{d}-m{margin:g}" + ("-swap" if swap else ""),
            lambda a, p, q, m=margin, s=swap: F.triplet_margin_loss(a, p, q, margin=m, swap=s),
            lambda gen, n=n, d=d: (
                _randn(gen, n, d),
                _randn(gen, n, d),
                _randn(gen, n, d),
            ),
        )


# =========================================================================== cnn


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout, affine=False),
        nn.ReLU(),
    ]


def _normalize_patch(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / (std + eps)


class HardNetLike(nn.Module):
    """7 convolutions, BatchNorm (eval), L2-normalised 128-d descriptor of a 32×32 patch."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(1, 32),
            *_conv_bn_relu(32, 32),
            *_conv_bn_relu(32, 64, 2),
            *_conv_bn_relu(64, 64),
            *_conv_bn_relu(64, 128, 2),
            *_conv_bn_relu(128, 128),
            nn.Dropout(0.3),
            nn.Conv2d(128, 128, 8, bias=False),
            nn.BatchNorm2d(128, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(_normalize_patch(x)).flatten(1), dim=1)


class TFeatLike(nn.Module):
    """Two tanh convolutions, max pooling, a linear 128-d output (32×32 patches)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.InstanceNorm2d(1, affine=False),
            nn.Conv2d(1, 32, 7),
            nn.Tanh(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 6),
            nn.Tanh(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * 8 * 8, 128), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class OrientationNet(nn.Module):
    """Dominant orientation of a 32×32 patch: atan2 of window-weighted (sin, cos) maps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(1, 16),
            *_conv_bn_relu(16, 16, 2),
            *_conv_bn_relu(16, 32, 2),
            nn.Conv2d(32, 2, 3, padding=1),
            nn.Tanh(),
        )
        g = _gaussian_1d(8, 3.0)
        self.register_buffer("window", (g[:, None] * g[None, :]).view(1, 1, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(_normalize_patch(x))
        sums = (out * self.window).sum(dim=(2, 3))
        return torch.atan2(sums[:, 0] + 0.05, sums[:, 1] + 0.1)


class AffineShapeNet(nn.Module):
    """Affine shape (2×2, unit determinant) from a 32×32 patch."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(1, 16, 2),
            *_conv_bn_relu(16, 32, 2),
            *_conv_bn_relu(32, 32, 2),
            nn.Conv2d(32, 3, 4),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = 0.5 * self.features(_normalize_patch(x)).flatten(1)
        zero = torch.zeros_like(a[:, 0])
        mat = torch.stack(
            [torch.stack([1 + a[:, 0], zero], -1), torch.stack([a[:, 1], 1 + a[:, 2]], -1)], -2
        )
        det = (1 + a[:, 0]) * (1 + a[:, 2])
        return mat / det.sqrt()[:, None, None]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(),
    )


class UNet2(nn.Module):
    """A two-level UNet: encoder, max-pool, bottleneck, transposed conv, skip concat."""

    def __init__(self, cin: int, cout: int, width: int = 8) -> None:
        super().__init__()
        self.enc1 = _double_conv(cin, width)
        self.enc2 = _double_conv(width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = _double_conv(2 * width, width)
        self.head = nn.Conv2d(width, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        return self.head(self.dec1(torch.cat([self.up(e2), e1], dim=1)))


class BasicBlock(nn.Module):
    """ResNet basic block, with a 1×1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.down is None else self.down(x)
        return F.relu(out + skip)


class LeNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.c2 = nn.Conv2d(6, 16, 5)
        self.fc = nn.Linear(16 * 1 * 1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.c1(x)), 2)  # 16 -> 12 -> 6
        x = F.max_pool2d(F.relu(self.c2(x)), 2)  # 6 -> 2 -> 1
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


class DepthwiseSeparable(nn.Module):
    def __init__(self, c: int, cout: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn2(self.pw(F.relu6(self.bn1(self.dw(x))))))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.fc1 = nn.Linear(c, c // r)
        self.fc2 = nn.Linear(c // r, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean(dim=(2, 3))))))
        return y * s[:, :, None, None]


class SoftArgmaxHead(nn.Module):
    """Keypoint head: conv heatmaps, spatial softmax, expected (x, y) per map."""

    def __init__(self, cin: int, k: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, k, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heat = self.body(x)
        b, k, h, w = heat.shape
        prob = F.softmax(heat.view(b, k, h * w) * 2.0, dim=-1).view(b, k, h, w)
        xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype)
        ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype)
        return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up2(F.leaky_relu(self.up1(z), 0.1)))


def sift_like_descriptor(patch: torch.Tensor, bins: int = 8, cells: int = 4) -> torch.Tensor:
    """Gradient-orientation histograms (soft angular binning) over a cells×cells grid."""
    g = spatial_gradient(patch, "diff")[:, 0]
    gx, gy = g[:, 0], g[:, 1]
    mag = torch.sqrt(gx**2 + gy**2 + 1e-10)
    ori = torch.remainder(torch.atan2(gy, gx), _TWO_PI) / _TWO_PI * bins
    low = torch.floor(ori)
    w_hi = ori - low
    lo_idx = low.long() % bins
    hi_idx = (lo_idx + 1) % bins
    hist = F.one_hot(lo_idx, bins).to(patch.dtype) * ((1 - w_hi) * mag).unsqueeze(-1)
    hist = hist + F.one_hot(hi_idx, bins).to(patch.dtype) * (w_hi * mag).unsqueeze(-1)
    size = patch.shape[-1]
    weight = _gaussian_1d(size, size / 2)
    hist = hist * (weight[:, None] * weight[None, :]).unsqueeze(-1)
    pooled = F.adaptive_avg_pool2d(hist.permute(0, 3, 1, 2), cells)
    desc = F.normalize(pooled.flatten(1), dim=1)
    return F.normalize(desc.clamp(max=0.2), dim=1)


def _net_case(
    function: str,
    variant: str,
    builder: Callable[[], nn.Module],
    shape: Sequence[int],
    key: str | None = None,
) -> None:
    key = key or function

    def make_fn() -> Callable[..., Any]:
        net = _seeded_module(builder, key)

        def fn(x: torch.Tensor) -> torch.Tensor:
            return net(x)

        fn.__name__ = fn.__qualname__ = function
        return fn

    _add_lazy("cnn", function, variant, make_fn, _img(shape))


def _register_cnn() -> None:
    for b in (1, 2):
        _net_case("hardnet", f"{b}x1x32x32", HardNetLike, (b, 1, 32, 32))
        _net_case("tfeat", f"{b}x1x32x32", TFeatLike, (b, 1, 32, 32))
        _net_case(
            # seed "orientation_net" puts a ReLU within 1e-6 of its kink for batch 2
            "orientation_net",
            f"{b}x1x32x32",
            OrientationNet,
            (b, 1, 32, 32),
            key="orinet-2",
        )
        _net_case("affine_shape_net", f"{b}x1x32x32", AffineShapeNet, (b, 1, 32, 32))
        _net_case("unet2", f"{b}x1x16x16", lambda: UNet2(1, 1), (b, 1, 16, 16), key="unet2-1")
        _net_case("lenet", f"{b}x1x16x16", LeNetLike, (b, 1, 16, 16))
        _net_case(
            "depthwise_separable", f"{b}x8x8x8", lambda: DepthwiseSeparable(8, 16), (b, 8, 8, 8)
        )
        _net_case("squeeze_excite", f"{b}x8x8x8", lambda: SqueezeExcite(8), (b, 8, 8, 8))
        _net_case("softargmax_head", f"{b}x3x16x16", lambda: SoftArgmaxHead(3), (b, 3, 16, 16))
        _net_case("decoder", f"{b}x16x4x4", Decoder, (b, 16, 4, 4))
        _add(
            "cnn",
            "sift_descriptor",
            f"{b}x1x{16 * b}x{16 * b}",
            sift_like_descriptor,
            _img((b, 1, 16 * b, 16 * b)),
        )
    _net_case("unet2", "1x3x32x32", lambda: UNet2(3, 1), (1, 3, 32, 32), key="unet2-3")
    for shape, cout, stride in [
        ((1, 4, 8, 8), 4, 1),
        ((2, 4, 8, 8), 4, 1),
        ((1, 8, 16, 16), 8, 1),
        ((1, 4, 16, 16), 8, 2),
        ((2, 8, 8, 8), 16, 2),
    ]:
        v = f"{_shape_name(shape)}-to{cout}-s{stride}"
        _net_case(
            "resnet_block",
            v,
            lambda c=shape[1], o=cout, s=stride: BasicBlock(c, o, s),
            shape,
            key=f"resnet_block-{v}",
        )


# =========================================================================== ode


def _euler(f, y, params, dt, steps, save_every):
    out = []
    for i in range(steps):
        y = y + dt * f(y, *params)
        if (i + 1) % save_every == 0:
            out.append(y)
    return torch.stack(out, dim=0)


def _rk4(f, y, params, dt, steps, save_every):
    out = []
    for i in range(steps):
        k1 = f(y, *params)
        k2 = f(y + 0.5 * dt * k1, *params)
        k3 = f(y + 0.5 * dt * k2, *params)
        k4 = f(y + dt * k3, *params)
        y = y + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if (i + 1) % save_every == 0:
            out.append(y)
    return torch.stack(out, dim=0)


def harmonic(y, p):
    x, v = y.unbind(-1)
    omega, zeta = p.unbind(-1)
    return torch.stack([v, -(omega**2) * x - 2 * zeta * omega * v], dim=-1)


def pendulum(y, p):
    th, om = y.unbind(-1)
    g_l, damp = p.unbind(-1)
    return torch.stack([om, -g_l * torch.sin(th) - damp * om], dim=-1)


def lorenz(y, p):
    x, yy, z = y.unbind(-1)
    sigma, rho, beta = p.unbind(-1)
    return torch.stack([sigma * (yy - x), x * (rho - z) - yy, x * yy - beta * z], dim=-1)


def van_der_pol(y, p):
    x, v = y.unbind(-1)
    mu = p[..., 0]
    return torch.stack([v, mu * (1 - x**2) * v - x], dim=-1)


def mlp_field(y, w1, b1, w2, b2):
    return torch.tanh(y @ w1.t() + b1) @ w2.t() + b2


_SYSTEMS = {
    # name: (vector field, state dim, parameter values, state scale, dt)
    "harmonic": (harmonic, 2, [2.0, 0.1], 1.0, 0.05),
    "pendulum": (pendulum, 2, [9.81, 0.2], 1.0, 0.02),
    "lorenz": (lorenz, 3, [10.0, 28.0, 8.0 / 3.0], 3.0, 0.005),
    "van_der_pol": (van_der_pol, 2, [1.5], 1.5, 0.05),
}


def _ode_case(system: str, method: str, steps: int, batch: int) -> None:
    field_fn, dim, pvals, yscale, dt = _SYSTEMS[system]
    integrate = _euler if method == "euler" else _rk4
    save = max(1, steps // 5)

    def fn(y0, params):
        return integrate(field_fn, y0, (params,), dt, steps, save)

    def make(gen):
        y0 = _randn(gen, batch, dim, scale=yscale)
        p = torch.tensor(pvals, dtype=DTYPE) * (
            1 + 0.1 * torch.randn(len(pvals), generator=gen, dtype=DTYPE)
        )
        return y0, p.requires_grad_()

    _add("ode", f"{system}_{method}", f"b{batch}-{steps}steps", fn, make)


def _neural_ode_case(method: str, steps: int, batch: int, hidden: int = 16) -> None:
    integrate = _euler if method == "euler" else _rk4

    def fn(y0, w1, b1, w2, b2):
        return integrate(mlp_field, y0, (w1, b1, w2, b2), 0.05, steps, max(1, steps // 5))

    def make(gen):
        return (
            _randn(gen, batch, 2),
            _randn(gen, hidden, 2, scale=0.5),
            _randn(gen, hidden, scale=0.1),
            _randn(gen, 2, hidden, scale=0.3),
            _randn(gen, 2, scale=0.1),
        )

    _add("ode", f"neural_ode_{method}", f"b{batch}-{steps}steps-h{hidden}", fn, make)


def implicit_euler_newton(y0, a, c, h: float = 0.1, steps: int = 5, newton: int = 3):
    """Backward Euler for y' = A y - c y³, each step solved by Newton with linalg.solve."""
    n = y0.shape[-1]
    eye = torch.eye(n, dtype=y0.dtype)
    y = y0
    out = []
    for _ in range(steps):
        z = y
        for _ in range(newton):
            f = z @ a.t() - c * z**3
            g = z - y - h * f
            jac = eye - h * (a - torch.diag_embed(3 * c * z**2))
            z = z - torch.linalg.solve(jac, g.unsqueeze(-1)).squeeze(-1)
        y = z
        out.append(y)
    return torch.stack(out, dim=0)


def _register_ode() -> None:
    for system in _SYSTEMS:
        for method in ("euler", "rk4"):
            for steps, batch in [(10, 1), (25, 2), (50, 1)]:
                _ode_case(system, method, steps, batch)
    for method in ("euler", "rk4"):
        for steps, batch in [(10, 1), (25, 2), (50, 1)]:
            _neural_ode_case(method, steps, batch)
    for n, batch, steps in [(2, 1, 5), (3, 2, 5), (4, 1, 10), (6, 2, 8)]:

        def make(gen, n=n, batch=batch):
            a = -torch.eye(n, dtype=DTYPE) + 0.3 * torch.randn(n, n, generator=gen, dtype=DTYPE)
            return (
                _randn(gen, batch, n),
                a.requires_grad_(),
                _uniform(gen, 1, lo=0.5, hi=1.5),
            )

        _add(
            "ode",
            "implicit_euler_newton",
            f"n{n}-b{batch}-{steps}steps",
            lambda y0, a, c, s=steps: implicit_euler_newton(y0, a, c, steps=s),
            make,
        )


# =========================================================================== linalg


def _square(gen, batch, n, shift: float | None = None):
    shift = float(n) ** 0.5 if shift is None else shift
    a = torch.randn(*batch, n, n, generator=gen, dtype=DTYPE) + shift * torch.eye(n, dtype=DTYPE)
    return a.requires_grad_()


def _spd(a: torch.Tensor) -> torch.Tensor:
    n = a.shape[-1]
    return a @ a.transpose(-1, -2) + n * torch.eye(n, dtype=a.dtype)


def _sym(a: torch.Tensor) -> torch.Tensor:
    return (a + a.transpose(-1, -2)) / 2


def eigh_vectors(a: torch.Tensor) -> torch.Tensor:
    _, vec = torch.linalg.eigh(_sym(a))
    sign = torch.sign(vec[..., :1, :])  # first component of every eigenvector ≥ 0
    return vec * sign


def lu_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lu, piv = torch.linalg.lu_factor(a)
    return torch.linalg.lu_solve(lu, piv, b)


def _register_linalg() -> None:
    square_sizes = [((), 2), ((2,), 3), ((), 5), ((), 8)]
    rect_sizes = [((), 3, 2), ((2,), 5, 3), ((), 6, 4), ((), 8, 5)]

    def sq(fn, *, rhs: int | None = None, shift=None):
        def register(name):
            for batch, n in square_sizes:
                v = ("b" + _shape_name(batch) + "-" if batch else "") + f"{n}x{n}"

                def make(gen, batch=batch, n=n):
                    a = _square(gen, batch, n, shift)
                    if rhs is None:
                        return (a,)
                    return a, _randn(gen, *batch, n, rhs)

                _add("linalg", name, v, fn, make)

        return register

    def rect(fn):
        def register(name):
            for batch, m, n in rect_sizes:
                v = ("b" + _shape_name(batch) + "-" if batch else "") + f"{m}x{n}"

                def make(gen, batch=batch, m=m, n=n):
                    return (_randn(gen, *batch, m, n),)

                _add("linalg", name, v, fn, make)

        return register

    sq(torch.linalg.solve, rhs=2)("solve")
    sq(torch.linalg.inv)("inv")
    sq(torch.linalg.det, shift=0.0)("det")
    sq(lambda a: torch.linalg.slogdet(a).logabsdet, shift=0.0)("slogdet")
    sq(lambda a: torch.linalg.cholesky(_spd(a)), shift=0.0)("cholesky")
    sq(lambda a: torch.linalg.eigvalsh(_sym(a)), shift=0.0)("eigvalsh")
    sq(eigh_vectors, shift=0.0)("eigh_vectors")
    sq(lambda a: torch.linalg.matrix_exp(0.5 * a), shift=0.0)("matrix_exp")
    sq(
        lambda a, b: torch.linalg.solve_triangular(torch.triu(a), b, upper=True),
        rhs=3,
        shift=3.0,
    )("solve_triangular")
    sq(lu_solve, rhs=2)("lu_solve")
    rect(torch.linalg.svdvals)("svdvals")
    rect(lambda a: torch.linalg.qr(a))("qr")
    rect(torch.linalg.pinv)("pinv")
    for batch, m, n in rect_sizes:
        v = ("b" + _shape_name(batch) + "-" if batch else "") + f"{m}x{n}"
        _add(
            "linalg",
            "lstsq",
            v,
            lambda a, b: torch.linalg.lstsq(a, b).solution,
            lambda gen, batch=batch, m=m, n=n: (
                _randn(gen, *batch, m, n),
                _randn(gen, *batch, m, 2),
            ),
        )


# =========================================================================== registry

_REGISTERED = False


def all_cases() -> list[Case]:
    """Every case, in a fixed order (category, then registration order)."""
    global _REGISTERED
    if not _REGISTERED:
        _register_filters()
        _register_color()
        _register_warps()
        _register_losses()
        _register_cnn()
        _register_ode()
        _register_linalg()
        _REGISTERED = True
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(_CASES, key=lambda c: order[c.category])


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(p in name or fnmatch.fnmatchcase(name, p) for p in patterns)


def select_cases(
    categories: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Case]:
    """Cases of the given categories whose name contains / matches one of ``patterns``."""
    cases = all_cases()
    if categories:
        unknown = sorted(set(categories) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {', '.join(CATEGORIES)}")
        cases = [c for c in cases if c.category in categories]
    if patterns:
        cases = [c for c in cases if _matches(c.name, patterns)]
    if limit is not None:
        cases = cases[:limit]
    return cases


def case_by_name(name: str) -> Case:
    for case in all_cases():
        if case.name == name:
            return case
    raise KeyError(name)


def _verify(cases: Sequence[Case]) -> int:
    """Run torch's full gradcheck on every case; print failures and times."""
    bad = 0
    total = 0.0
    for case in cases:
        fn, inputs = case.fn, case.inputs()
        torch.manual_seed(0)
        start = time.perf_counter()
        try:
            ok = torch.autograd.gradcheck(fn, inputs, fast_mode=False, raise_exception=True)
            text = "pass" if ok else "fail"
        except Exception as exc:
            text = f"FAIL {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        dt = time.perf_counter() - start
        total += dt
        if text != "pass":
            bad += 1
        print(f"{dt:8.2f}s  {case.n_checked():6d}  {text:5.80s}  {case.name}", flush=True)
    print(f"{len(cases)} cases, {bad} not passing, {total:.1f} s")
    return bad


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the cases")
    parser.add_argument("--verify", action="store_true", help="torch full gradcheck on each")
    parser.add_argument("--categories", default="")
    parser.add_argument("--cases", default="")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cats = [c for c in args.categories.split(",") if c]
    pats = [p for p in args.cases.split(",") if p]
    cases = select_cases(cats or None, pats or None)
    counts = Counter(c.category for c in cases)
    if args.verify:
        return 1 if _verify(cases) else 0
    if args.list:
        for case in cases:
            print(f"{case.n_checked():6d}  {case.name}")
    for cat in CATEGORIES:
        print(f"{cat:8s} {counts.get(cat, 0)}")
    print(f"total    {len(cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
