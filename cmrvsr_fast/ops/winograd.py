"""Winograd F(4×4, 3×3) convolution on the CPU: the stepwise schedule's float32 convolutions in a quarter of the
multiplications.

A 3×3 convolution (stride 1, zero padding 1) of an image cut into 6×6 tiles that overlap by two pixels, each giving
4×4 output pixels, is y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A (Lavin and Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016, with their points 0, ±1, ±2): the sum over input channels becomes one matrix product per
transformed point (36 of them, 4·4·9 / 36 = 4× fewer multiplications than the direct convolution), which the BLAS
runs near the core's peak. The weight transform (G g Gᵀ) is made once, in float64; the input transform (Bᵀ d B)
and the output transform (Aᵀ m A, plus the bias, optionally fused with the ConvLSTM cell) are the compiled
extension cmrvsr_fast._cpu (csrc/cpu/winograd.cpp); the products are `torch.bmm`.

Its rounding differs from the direct convolution's (docs/engine.md gives the measured distance to the reference,
well inside the float32 parity tolerance). float32 only: in bf16 the transforms' rounding would dominate.
Images are channels-last float32: (B, C, H, W) tensors whose channels are contiguous (stride 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from cmrvsr_fast import _cpu as _kernels
except ImportError as error:
    _kernels = None
    UNAVAILABLE_REASON = (
        f"the CPU extension cmrvsr_fast._cpu is not built or cannot load ({error}); it is built at install time "
        "when a C++ compiler is found"
    )
else:
    UNAVAILABLE_REASON = ""

OUTPUT_TILE = 4  # output pixels per tile side
INPUT_TILE = 6  # input pixels per tile side
POINTS = INPUT_TILE * INPUT_TILE

# Lavin and Gray's F(4, 3) matrices (points 0, 1, −1, 2, −2 and ∞).
_BT = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_AT = [
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
]


def matrices(dtype=torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """Bᵀ (6×6), G (6×3), Aᵀ (4×6)."""
    return tuple(torch.tensor(m, dtype=dtype) for m in (_BT, _G, _AT))


_BT32, _, _AT32 = (m.contiguous() for m in matrices(torch.float32))


def available() -> bool:
    return _kernels is not None


def require() -> None:
    """A RuntimeError saying why the Winograd path cannot run, if it cannot."""
    if _kernels is None:
        raise RuntimeError(UNAVAILABLE_REASON)


def tiles(height: int, width: int) -> int:
    """Tiles of one H×W image."""
    return -(-height // OUTPUT_TILE) * -(-width // OUTPUT_TILE)


def transform_weight(weight: Tensor) -> Tensor:
    """(Cout, Cin, 3, 3) → (36, Cin, Cout) float32 contiguous: G g Gᵀ of every kernel, computed in float64,
    laid out as the right-hand side of each transformed point's product."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"Winograd F(4x4, 3x3) takes 3x3 kernels, got {tuple(weight.shape)}")
    g = matrices()[1].to(weight.device)
    u = torch.einsum("ak,oikl,bl->abio", g, weight.detach().double(), g)  # (6, 6, Cin, Cout)
    return u.reshape(POINTS, weight.shape[1], weight.shape[0]).float().contiguous()


def _image(x: Tensor, name: str) -> tuple[int, ...]:
    """The extension's (data, B, C, H, W, stride_b, stride_y, stride_x) of a channels-last float32 CPU image."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4:
        raise ValueError(f"{name}: a 4-D float32 CPU tensor is required, got {x.dtype} {tuple(x.shape)} on {x.device}")
    if x.stride(1) != 1 and x.shape[1] > 1:
        raise ValueError(f"{name}: channels must be contiguous (channels-last), got strides {x.stride()}")
    batch, channels, height, width = x.shape
    return (x.data_ptr(), batch, channels, height, width, x.stride(0), x.stride(2), x.stride(3))


def _transformed(t: Tensor, batch: int, height: int, width: int, channels: int, name: str) -> None:
    expected = (POINTS, batch * tiles(height, width), channels)
    if t.dtype != torch.float32 or tuple(t.shape) != expected or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(f"{name}: a contiguous float32 {expected} CPU tensor is required, got {t.dtype} "
                         f"{tuple(t.shape)} on {t.device} (contiguous: {t.is_contiguous()})")  # fmt: skip


def _vector(t: Tensor, length: int, name: str) -> int:
    if t.dtype != torch.float32 or t.shape != (length,) or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(f"{name}: a contiguous float32 ({length},) CPU tensor is required, got {t.dtype} "
                         f"{tuple(t.shape)} on {t.device}")  # fmt: skip
    return t.data_ptr()


def _threads() -> int:
    """The calling thread's PyTorch thread count, for the extension's OpenMP (whose own count is per thread: a new
    thread would otherwise take every core)."""
    return torch.get_num_threads()


def input_transform(x: Tensor, out: Tensor | None = None) -> Tensor:
    """Bᵀ d B of every 6×6 tile of x (B, C, H, W) channels-last: (36, B·tiles, C)."""
    require()
    args = _image(x, "input")
    batch, channels, height, width = x.shape
    if out is None:
        out = torch.empty(POINTS, batch * tiles(height, width), channels, dtype=torch.float32)
    _transformed(out, batch, height, width, channels, "transformed input")
    _kernels.input_transform(*args, _BT32.data_ptr(), out.data_ptr(), _threads())
    return out


def output_transform(m: Tensor, bias: Tensor, out: Tensor, addend: Tensor | None = None) -> Tensor:
    """out (B, Cout, H, W) channels-last = Aᵀ m A + bias (+ addend, of out's shape and strides): m (36, B·tiles,
    Cout) the products of the transformed input and weights."""
    require()
    args = _image(out, "output")
    batch, channels, height, width = out.shape
    _transformed(m, batch, height, width, channels, "products")
    layout = (out.shape, out.stride(), out.dtype, out.device)
    matches = addend is None or (addend.shape, addend.stride(), addend.dtype, addend.device) == layout
    if not matches:
        raise ValueError(f"addend: the output's shape, strides, dtype and device are required, got "
                         f"{tuple(addend.shape)} {addend.stride()} {addend.dtype} {addend.device}")  # fmt: skip
    _kernels.output_transform(m.data_ptr(), _AT32.data_ptr(), _vector(bias, channels, "bias"), *args,
                              0 if addend is None else addend.data_ptr(), _threads())  # fmt: skip
    return out


def output_lstm_cell(m: Tensor, bias: Tensor, c: Tensor, h_out: Tensor) -> None:
    """The ConvLSTM cell on gates = Aᵀ m A + bias (i, f, o, g, as `lstm_cell`) without storing them: m (36,
    B·tiles, 4F); c (B, F, H, W) float32, its memory a contiguous (B, H, W, F) tensor, becomes c'; h' is written
    into h_out (B, F, H, W) float32 channels-last."""
    require()
    args = _image(h_out, "h")
    batch, features, height, width = h_out.shape
    _transformed(m, batch, height, width, 4 * features, "products")
    same = tuple(c.shape) == tuple(h_out.shape) and c.dtype == torch.float32 and c.device.type == "cpu"
    if not same or not c.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"c: a channels-last float32 {tuple(h_out.shape)} CPU tensor is required, got {c.dtype} "
                         f"{tuple(c.shape)} strides {c.stride()} on {c.device}")  # fmt: skip
    _kernels.output_lstm_cell(m.data_ptr(), _AT32.data_ptr(), _vector(bias, 4 * features, "bias"), c.data_ptr(),
                              *args, _threads())  # fmt: skip


def conv3x3(x: Tensor, u: Tensor, bias: Tensor) -> Tensor:
    """F.conv2d(x, weight, bias, padding=1) for u = transform_weight(weight), x (B, Cin, H, W) channels-last
    float32: a new channels-last (B, Cout, H, W) tensor."""
    batch, _, height, width = x.shape
    m = torch.bmm(input_transform(x), u)
    out = torch.empty(batch, u.shape[2], height, width, dtype=torch.float32, memory_format=torch.channels_last)
    return output_transform(m, bias, out)
