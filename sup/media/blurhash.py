"""A BlurHash encoder (https://blurha.sh), small enough not to need a dependency.

Callers pass a tiny image (say 32 px on the long edge): the cost is pixels x components.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
_SRGB_TO_LINEAR = [(v / 12.92) if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in (i / 255 for i in range(256))]


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[(value // 83 ** (length - 1 - i)) % 83] for i in range(length))


def _linear_to_srgb(value: float) -> int:
    v = min(1.0, max(0.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _sign_sqrt(value: float) -> float:
    return math.copysign(math.sqrt(abs(value)), value)


def encode(rgb: Sequence[int] | bytes, width: int, height: int, x_components: int = 4, y_components: int = 3) -> str:
    """The BlurHash of `width` x `height` pixels given as packed 8-bit RGB."""
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("BlurHash components must be between 1 and 9")
    if len(rgb) < width * height * 3 or width < 1 or height < 1:
        raise ValueError("not enough pixel data for the given size")
    linear = [_SRGB_TO_LINEAR[v] for v in rgb[: width * height * 3]]
    cos_x = [[math.cos(math.pi * i * x / width) for x in range(width)] for i in range(x_components)]
    cos_y = [[math.cos(math.pi * j * y / height) for y in range(height)] for j in range(y_components)]
    factors: list[tuple[float, float, float]] = []
    for j in range(y_components):
        for i in range(x_components):
            r = g = b = 0.0
            for y in range(height):
                basis_y = cos_y[j][y]
                row = y * width * 3
                for x in range(width):
                    basis = basis_y * cos_x[i][x]
                    p = row + x * 3
                    r += basis * linear[p]
                    g += basis * linear[p + 1]
                    b += basis * linear[p + 2]
            scale = (1 if i == 0 and j == 0 else 2) / (width * height)
            factors.append((r * scale, g * scale, b * scale))

    dc, ac = factors[0], factors[1:]
    result = _base83((x_components - 1) + (y_components - 1) * 9, 1)
    if ac:
        actual_max = max(abs(v) for f in ac for v in f)
        quantised_max = max(0, min(82, math.floor(actual_max * 166 - 0.5)))
        max_value = (quantised_max + 1) / 166
    else:
        quantised_max, max_value = 0, 1.0
    result += _base83(quantised_max, 1)
    result += _base83((_linear_to_srgb(dc[0]) << 16) + (_linear_to_srgb(dc[1]) << 8) + _linear_to_srgb(dc[2]), 4)
    for f in ac:
        q = [max(0, min(18, math.floor(_sign_sqrt(v / max_value) * 9 + 9.5))) for v in f]
        result += _base83(q[0] * 19 * 19 + q[1] * 19 + q[2], 2)
    return result
