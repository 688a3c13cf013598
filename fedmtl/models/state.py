"""Move named numpy arrays in and out of a model's state_dict, with checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

NDArrays = dict[str, npt.NDArray[np.generic]]


def partial_state_dict(model: nn.Module, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """``model.state_dict()``, or the part of it holding ``keys``: what the key lookups need.

    ``state_dict()`` walks every submodule; when ``keys`` all lie under some of
    the model's direct children (e.g. ``heads.*`` of a model with a frozen
    transformer backbone), only those children are walked, with the same
    prefixes, so the entries are the same tensors. Keys of the model's own
    entries, or a model with state_dict hooks of its own, get the whole walk.
    """
    wanted = {key.partition(".")[0] for key in keys if "." in key}
    children = dict(model.named_children())
    own_hooks = model._state_dict_hooks or model._state_dict_pre_hooks
    if own_hooks or not wanted <= set(children) or any("." not in key for key in keys):
        return model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for name in sorted(wanted, key=list(children).index):  # the model's own order
        state.update(children[name].state_dict(prefix=f"{name}."))
    return state


def export_arrays(model: nn.Module, keys: Iterable[str]) -> NDArrays:
    """Copy the state_dict entries ``keys`` out as numpy arrays (CPU)."""
    keys = list(keys)
    state = partial_state_dict(model, keys)
    return {key: state[key].detach().cpu().numpy().copy() for key in keys}


def import_arrays(model: nn.Module, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
    """Write named arrays into the model; unknown keys and wrong shapes raise ``ValueError``."""
    state = partial_state_dict(model, arrays)
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
