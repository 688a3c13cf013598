"""Move named numpy arrays in and out of a model's state_dict, with checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

NDArrays = dict[str, npt.NDArray[np.generic]]


def export_arrays(model: nn.Module, keys: Iterable[str]) -> NDArrays:
    """Copy the state_dict entries ``keys`` out as numpy arrays (CPU)."""
    state = model.state_dict()
    return {key: state[key].detach().cpu().numpy().copy() for key in keys}


def import_arrays(model: nn.Module, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
    """Write named arrays into the model; unknown keys and wrong shapes raise ``ValueError``."""
    state = model.state_dict()
    unknown = sorted(set(arrays) - set(state))
    if unknown:
        raise ValueError(f"arrays hold keys the model does not have: {unknown[:5]}")
    with torch.no_grad():
        for key, value in arrays.items():
            target = state[key]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"'{key}' has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(target.shape)}"
                )
            target.copy_(torch.as_tensor(np.asarray(value)).to(target.dtype))
