"""Task-scope arrays of clients holding several tasks: merge them to send, split replies by task.

A client may hold several tasks. The server sends it the task-scope arrays of
every task it holds that has a task scope, merged into one ``"task-arrays"``
record (their keys are disjoint: ``heads.<task>.*``), and the client replies
with all of them. :func:`merged_task_arrays` builds what is sent (and what a
reply must hold), :func:`task_groups` splits a round's replies back into one
group per task: each reply's entries of the keys sent for task ``t``, weighted
by ``t``'s own ``num-examples`` (:func:`fedmtl.records.task_examples`). A
client therefore counts in the group of every task it holds, and only there.

For a client holding one task nothing changes: it is sent that task's arrays
as they are, and its reply joins that task's group with its ``num-examples``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from flwr.app import Message

from fedmtl.records import TASK_ARRAYS, ClientInfo, NDArrays, from_record, task_examples

__all__ = ["TaskGroup", "merged_task_arrays", "node_task_arrays", "scoped_tasks", "task_groups"]

#: One task group's replies: each one's task arrays of that task and its weight.
TaskGroup = list[tuple[NDArrays, float]]


def scoped_tasks(tasks: Sequence[str], task_arrays: Mapping[str, NDArrays]) -> list[str]:
    """The tasks of ``tasks`` that have a task scope (a key of ``task_arrays``), in order."""
    return [task for task in tasks if task in task_arrays]


def merged_task_arrays(task_arrays: Mapping[str, NDArrays], tasks: Sequence[str]) -> NDArrays:
    """The task-scope arrays of ``tasks`` in one mapping (a one-task client: its own, as is).

    Raises
    ------
    ValueError
        When two of the tasks share a task-scope key: a client holding several
        tasks has one backbone, so only ``heads.<task>.`` entries may be in the
        task scope (the config refuses anything else).
    """
    if len(tasks) == 1:
        return task_arrays[tasks[0]]
    merged: NDArrays = {}
    for task in tasks:
        shared = sorted(set(merged) & set(task_arrays[task]))
        if shared:
            raise ValueError(
                f"tasks {list(tasks)} of one client share task-scope keys {shared[:3]}; "
                "with several tasks per client only 'heads.<task>.' entries may be task-scoped"
            )
        merged.update(task_arrays[task])
    return merged


def node_task_arrays(tasks: Sequence[str], task_arrays: Mapping[str, NDArrays]) -> NDArrays | None:
    """What a node holding ``tasks`` is sent as ``"task-arrays"`` (``None``: no task scope)."""
    scoped = scoped_tasks(tasks, task_arrays)
    return merged_task_arrays(task_arrays, scoped) if scoped else None


def task_groups(
    valid: Sequence[tuple[Message, ClientInfo]], sent: Mapping[str, NDArrays]
) -> dict[str, TaskGroup]:
    """Each task's replies: the entries of the keys of ``sent[task]``, and the task's examples.

    ``valid`` are screened train replies (in client-id order); a reply joins the
    group of every task it holds that is in ``sent``. Entries keep the order of
    the reply's record. Tasks without replies are left out.
    """
    groups: dict[str, TaskGroup] = defaultdict(list)
    for reply, info in valid:
        tasks = scoped_tasks(info.tasks, sent)
        if not tasks:
            continue
        arrays = from_record(reply.content.array_records[TASK_ARRAYS])
        for task in tasks:
            own = (
                arrays if len(tasks) == 1 else {k: v for k, v in arrays.items() if k in sent[task]}
            )
            groups[task].append((own, task_examples(reply.content, task)))
    return dict(groups)
