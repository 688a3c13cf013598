"""``fedmtl scopes``: which parameter landed in which scope, and what travels."""

from __future__ import annotations

import numpy as np

from fedmtl.config import ExperimentConfig, scope_rules
from fedmtl.data import get_dataset_spec
from fedmtl.run_model import fresh_model
from fedmtl.scopes import assign_scopes, task_relevant


def scope_table(cfg: ExperimentConfig) -> str:
    """A table of state_dict entries (name, shape, scope, parameters) and bytes per round."""
    model = fresh_model(cfg)
    state = model.state_dict()
    scopes = assign_scopes(state.keys(), scope_rules(cfg))
    parameters = {name for name, _ in model.named_parameters()}
    width = max(len(k) for k in state) + 2
    lines = [f"{'name':<{width}}{'shape':<18}{'scope':<8}{'kind':<8}{'values':>10}"]
    totals: dict[str, int] = {}
    for key, tensor in state.items():
        scope = scopes[key]
        totals[scope] = totals.get(scope, 0) + tensor.numel()
        kind = "param" if key in parameters else "buffer"
        lines.append(
            f"{key:<{width}}{list(tensor.shape)!s:<18}{scope:<8}{kind:<8}{tensor.numel():>10,}"
        )
    lines.append("")
    lines.append("values per scope: " + ", ".join(f"{s} {n:,}" for s, n in sorted(totals.items())))
    lines.append("")
    lines.append("bytes a client sends per training round (float arrays as serialized):")
    spec = get_dataset_spec(cfg.dataset)
    for task in cfg.tasks:
        sent = [
            k
            for k, s in scopes.items()
            if s == "shared" or (s == "task" and task_relevant(k, task))
        ]
        nbytes = sum(int(np.prod(state[k].shape)) * state[k].element_size() for k in sent)
        lines.append(
            f"  task {task:<10} ({spec.tasks[task].num_outputs} outputs): "
            f"{nbytes:,} bytes in {len(sent)} arrays"
        )
    return "\n".join(lines)
