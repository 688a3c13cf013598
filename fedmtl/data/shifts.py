"""Input shifts (feature skew): each client's inputs moved into its own domain (a registry).

Partitioners skew the *labels* a client holds; an input shift changes what its
*inputs* look like, so label skew and feature skew can be set apart. Every
client gets a shift *level* in ``[0, 1]`` (:func:`client_levels`): the clients
are split, seeded, into ``input-shift-groups`` groups (``0``: one group per
client) and the groups' levels are evenly spaced from 0 to 1 (a single group
gets level 1). The shift scales ``input-shift-strength`` by the level, so a
group of level 0 keeps its inputs and the group of level 1 gets the full
strength. A client's train and test inputs get the same shift (its domain is
its own); the pretraining source split is never shifted.

Each shift is a pure numpy function ``apply(x, level, strength, rng, value_range)``
over a batch of inputs, ``value_range`` being the (min, max) of the whole
dataset's inputs, so every client shares one scale (unused by text shifts).
``rng`` is the client's and split's own generator (a shift ``seeded_by =
"client-split"``: other draws on train and test, as ``noise`` and ``typos``), or
the group's (``seeded_by = "group"``: one generator for every client of a level,
train and test alike, so a group shares one domain, as ``vocabulary``'s dialect).
Image and vector shifts are :func:`rotate`, :func:`noise`, :func:`contrast` and
:func:`invert`; text shifts (:mod:`fedmtl.data.text_shifts`) are ``typos`` and
``vocabulary``. :func:`shifts_for` lists the shifts of one input kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedmtl.data.text_shifts import typos, vocabulary
from fedmtl.registry import Registry

__all__ = [
    "INPUT_SHIFTS",
    "SHIFT_CHOICES",
    "InputShift",
    "ShiftFn",
    "client_levels",
    "contrast",
    "invert",
    "noise",
    "rotate",
    "shift_inputs",
    "shifts_for",
]

ShiftFn = Callable[
    [npt.NDArray[Any], float, float, np.random.Generator, tuple[float, float]], npt.NDArray[Any]
]

# Salts of the seeded draws, so they never coincide with the partition's own.
_GROUP_SALT = 0x5F1F7
_NOISE_SALT = 0x901CE
_DOMAIN_SALT = 0xD1A1EC


@dataclass(frozen=True)
class InputShift:
    """A registered input shift.

    Parameters
    ----------
    apply : callable
        ``apply(x, level, strength, rng, value_range) -> x'``: a new float array
        of ``x``'s shape (``x`` untouched).
    max_strength : float or None
        The largest ``input-shift-strength`` that makes sense (``None``: no bound).
    input_kinds : tuple of str
        The dataset ``input_kind`` values it applies to.
    strength : str
        What ``input-shift-strength`` means for this shift (docs and errors).
    seeded_by : {"client-split", "group"}
        Whose generator ``apply`` gets: the client's for one split, or the
        client's group's (by its level; the same on train and test).
    """

    apply: ShiftFn
    max_strength: float | None
    input_kinds: tuple[str, ...] = ("image",)
    strength: str = ""
    seeded_by: Literal["client-split", "group"] = "client-split"


INPUT_SHIFTS: Registry[InputShift] = Registry("input shift")


class _ShiftChoices(Collection[str]):
    """The values of ``input-shift``: ``"none"`` and the registered names, read when asked."""

    def __iter__(self) -> Iterator[str]:
        return iter(["none", *INPUT_SHIFTS.names()])

    def __len__(self) -> int:
        return 1 + len(INPUT_SHIFTS.names())

    def __contains__(self, name: object) -> bool:
        return name == "none" or name in INPUT_SHIFTS


SHIFT_CHOICES: Collection[str] = _ShiftChoices()


def shifts_for(input_kind: str) -> list[str]:
    """The registered shifts that apply to inputs of ``input_kind`` (sorted)."""
    return [
        name for name in INPUT_SHIFTS.names() if input_kind in INPUT_SHIFTS.get(name).input_kinds
    ]


def client_levels(num_clients: int, groups: int, seed: int) -> npt.NDArray[np.float64]:
    """The shift level in ``[0, 1]`` of each client id.

    The client ids are permuted (seeded by ``seed``) and cut into ``groups``
    near-equal groups (``0``: one per client); group ``g`` of ``G`` has level
    ``g / (G - 1)``, a single group level 1.

    Raises
    ------
    ValueError
        For ``groups`` outside ``0..num_clients``.
    """
    if not 0 <= groups <= num_clients:
        raise ValueError(f"groups must be in 0..{num_clients}, got {groups}")
    num_groups = groups or num_clients
    order = np.random.default_rng([seed, _GROUP_SALT]).permutation(num_clients)
    group_levels = np.linspace(0.0, 1.0, num_groups) if num_groups > 1 else np.ones(1)
    levels = np.empty(num_clients, dtype=np.float64)
    for level, members in zip(group_levels, np.array_split(order, num_groups), strict=True):
        levels[members] = level
    return levels


def shift_inputs(
    name: str,
    x: npt.NDArray[Any],
    *,
    level: float,
    strength: float,
    seed: int,
    client_id: int,
    split: int,
    value_range: tuple[float, float],
) -> npt.NDArray[Any]:
    """Apply the registered shift ``name`` to one client's ``x`` (``"none"``: ``x`` itself).

    ``split`` (0 train, 1 test) seeds a random shift apart on the two splits; a
    shift seeded by ``"group"`` gets one generator per (seed, level) instead.
    """
    if name == "none":
        return x
    shift = INPUT_SHIFTS.get(name)
    if shift.seeded_by == "group":
        # The levels of the groups are distinct, so the level names the group.
        rng = np.random.default_rng([seed, _DOMAIN_SALT, round(level * 2**32)])
    else:
        rng = np.random.default_rng([seed, _NOISE_SALT, client_id, split])
    return shift.apply(x, level, strength, rng, value_range)


def _as_float(x: npt.NDArray[Any]) -> npt.NDArray[np.floating[Any]]:
    return x.astype(np.float32) if not np.issubdtype(x.dtype, np.floating) else x


def rotate(
    x: npt.NDArray[Any],
    level: float,
    strength: float,
    rng: np.random.Generator,
    value_range: tuple[float, float],
) -> npt.NDArray[Any]:
    """Rotate each image (last two axes) counter-clockwise by ``level * strength`` degrees.

    Bilinear, about the image centre; pixels from outside the image take the
    range's minimum (the background).
    """
    del rng
    xf = _as_float(x)
    height, width = xf.shape[-2:]
    theta = math.radians(level * strength)
    cos, sin = math.cos(theta), math.sin(theta)
    ci, cj = (height - 1) / 2.0, (width - 1) / 2.0
    ii, jj = np.meshgrid(np.arange(height) - ci, np.arange(width) - cj, indexing="ij")
    # Output pixel (row i, column j) reads the input at the inverse rotation.
    src_i = cos * ii + sin * jj + ci
    src_j = -sin * ii + cos * jj + cj
    i0, j0 = np.floor(src_i).astype(np.int64), np.floor(src_j).astype(np.int64)
    di, dj = src_i - i0, src_j - j0
    background = np.asarray(value_range[0], dtype=xf.dtype)
    out = np.zeros_like(xf)
    for oi, oj, weight in (
        (0, 0, (1 - di) * (1 - dj)),
        (1, 0, di * (1 - dj)),
        (0, 1, (1 - di) * dj),
        (1, 1, di * dj),
    ):
        # Snap near-integer coordinates so a right-angle turn is exact.
        weight = np.where(np.abs(weight) < 1e-9, 0.0, weight)
        si, sj = i0 + oi, j0 + oj
        inside = (si >= 0) & (si < height) & (sj >= 0) & (sj < width)
        values = xf[..., np.clip(si, 0, height - 1), np.clip(sj, 0, width - 1)]
        values = np.where(inside, values, background)
        out += (weight * values).astype(xf.dtype)
    return out


def noise(
    x: npt.NDArray[Any],
    level: float,
    strength: float,
    rng: np.random.Generator,
    value_range: tuple[float, float],
) -> npt.NDArray[Any]:
    """Add Gaussian pixel noise of std ``level * strength * (max - min)`` (not clipped)."""
    xf = _as_float(x)
    std = level * strength * (value_range[1] - value_range[0])
    return (xf + rng.normal(0.0, std, size=xf.shape)).astype(xf.dtype)


def contrast(
    x: npt.NDArray[Any],
    level: float,
    strength: float,
    rng: np.random.Generator,
    value_range: tuple[float, float],
) -> npt.NDArray[Any]:
    """Lower each input's contrast: ``m + (1 - level * strength) * (x - m)``, ``m`` its mean."""
    del rng, value_range
    xf = _as_float(x)
    axes = tuple(range(1, xf.ndim))
    mean = xf.mean(axis=axes, keepdims=True)
    out: npt.NDArray[Any] = (mean + (1.0 - level * strength) * (xf - mean)).astype(xf.dtype)
    return out


def invert(
    x: npt.NDArray[Any],
    level: float,
    strength: float,
    rng: np.random.Generator,
    value_range: tuple[float, float],
) -> npt.NDArray[Any]:
    """Invert the colours (``min + max - x``) of a client whose level exceeds ``1 - strength``.

    ``strength`` is the share of the level range inverted: 0.5 inverts the
    clients of the upper half of the levels, 1 every client but level 0's.
    """
    del rng
    xf = _as_float(x)
    if level > 1.0 - strength:
        return (value_range[0] + value_range[1] - xf).astype(xf.dtype)
    return xf.copy()


INPUT_SHIFTS.add("rotate", InputShift(rotate, 360.0, strength="the largest angle, in degrees"))
INPUT_SHIFTS.add(
    "noise",
    InputShift(noise, None, ("image", "vector"), "the largest noise std, in units of the range"),
)
INPUT_SHIFTS.add("contrast", InputShift(contrast, 1.0, strength="the largest contrast loss, 0..1"))
INPUT_SHIFTS.add("invert", InputShift(invert, 1.0, strength="the share of levels inverted, 0..1"))
INPUT_SHIFTS.add(
    "typos", InputShift(typos, 1.0, ("text",), "the largest per-word typo probability, 0..1")
)
INPUT_SHIFTS.add(
    "vocabulary",
    InputShift(
        vocabulary, 1.0, ("text",), "the largest share of word types in dialect, 0..1", "group"
    ),
)
