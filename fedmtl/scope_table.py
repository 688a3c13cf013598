"""``fedmtl scopes``: which parameter landed in which scope, what trains and what travels."""

from __future__ import annotations

import dataclasses

from fedmtl.config import ExperimentConfig, partition_spec
from fedmtl.run_model import initial_model, run_scopes
from fedmtl.scopes import FINETUNE_MODES, task_relevant


@dataclasses.dataclass(frozen=True)
class ScopeSummary:
    """Counts of one run's model: parameters trained and values sent per task."""

    parameters: int
    trainable: int
    sent_values: dict[str, int]
    sent_bytes: dict[str, int]
    sent_arrays: dict[str, int]


def _task_scope(key: str, scope: str, task: str) -> bool:
    return scope == "task" and task_relevant(key, task)


def summarize_scopes(cfg: ExperimentConfig) -> ScopeSummary:
    """Trainable parameters (any task) and what one client of each task sends per round."""
    model = initial_model(cfg)
    state = model.state_dict()
    scopes = run_scopes(cfg)
    params = dict(model.named_parameters())
    trainable = sum(params[k].numel() for k, s in scopes.items() if k in params and s != "frozen")
    values, nbytes, arrays = {}, {}, {}
    for task in cfg.tasks:
        sent = [
            k
            for k, s in scopes.items()
            if s == "shared" or (s == "task" and task_relevant(k, task))
        ]
        values[task] = sum(state[k].numel() for k in sent)
        nbytes[task] = sum(state[k].numel() * state[k].element_size() for k in sent)
        arrays[task] = len(sent)
    return ScopeSummary(
        parameters=sum(p.numel() for p in params.values()),
        trainable=trainable,
        sent_values=values,
        sent_bytes=nbytes,
        sent_arrays=arrays,
    )


def scope_table(cfg: ExperimentConfig) -> str:
    """A table of state_dict entries (name, shape, scope, values) and bytes per round."""
    model = initial_model(cfg)
    state = model.state_dict()
    scopes = run_scopes(cfg)
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
    summary = summarize_scopes(cfg)
    lines.append("")
    lines.append(f"finetune = {cfg.finetune!r}")
    lines.append("values per scope: " + ", ".join(f"{s} {n:,}" for s, n in sorted(totals.items())))
    lines.append(f"trainable parameters: {summary.trainable:,} of {summary.parameters:,}")
    lines.append("")
    lines.append("what a client sends per training round (float arrays as serialized):")
    spec = partition_spec(cfg).dataset_spec()
    for task in cfg.tasks:
        lines.append(
            f"  task {task:<16} ({spec.tasks[task].num_outputs} outputs): "
            f"{summary.sent_bytes[task]:,} bytes, {summary.sent_values[task]:,} values "
            f"in {summary.sent_arrays[task]} arrays"
        )
    if cfg.tasks_per_client > 1 or cfg.task_assignment == "lists":
        lines.append(
            "  (a client holding several tasks sends the shared arrays once, plus the task "
            "arrays of each task it holds)"
        )
    return "\n".join(lines)


def finetune_modes_table(cfg: ExperimentConfig) -> str:
    """Markdown table: trainable and transmitted values of ``cfg`` under each fine-tuning mode."""
    lines = [
        "| finetune | trainable parameters | sent per client per round | arrays sent |",
        "|---|---:|---:|---:|",
    ]
    for mode in FINETUNE_MODES:
        summary = summarize_scopes(dataclasses.replace(cfg, finetune=mode))
        task = cfg.tasks[0]
        label = f"last-k (k={cfg.finetune_blocks})" if mode == "last-k" else mode
        lines.append(
            f"| {label} | {summary.trainable:,} of {summary.parameters:,} | "
            f"{summary.sent_bytes[task]:,} B | {summary.sent_arrays[task]} |"
        )
    return "\n".join(lines)
