"""Client-level differential privacy around any strategy: reply stages that run before aggregation.

:class:`~strategies.scoped.ScopedStrategy` passes each round's screened train
replies through its ``stages`` (:class:`ReplyStage`) before anything is
aggregated: the inner strategy then averages the shared ``"arrays"`` and the
task rule each task's ``"task-arrays"`` of what the stages return. Two stages
live here:

:class:`UniformWeights`
    Every reply counts once: its ``num-examples`` (and a several-task client's
    per-task counts) become 1 for aggregation. The round log keeps the true counts.
:class:`ClientPrivacy`
    ``mode = "central"``: the server clips each client's **whole update**
    (shared and task scope together, one L2 norm, Flower's
    :func:`~flwr.supercore.differential_privacy.get_norm` and
    :func:`~flwr.supercore.differential_privacy.clip_inputs_inplace`), so the
    guarantee covers every array that leaves the client, heads shared per task
    included; then Gaussian noise is added so that each aggregate (the shared
    mean over the ``n`` replies, each task's mean over its ``n_t`` holders) gets
    noise of standard deviation ``z * C / n`` (Flower's
    :func:`~flwr.supercore.differential_privacy.compute_stdv`). ``mode = "local"``:
    clients clipped and noised their update themselves (:mod:`fedmtl.privacy`);
    the stage only accounts. Both record ε after each round in the round log.

The noise is drawn per reply, with standard deviation ``z * C / sqrt(n)`` per
reply, which gives the uniform mean exactly the Gaussian noise ``N(0, (z C / n)^2)``
*before* the inner strategy's server optimizer (FedAdam, FedAvgM, ...) sees it:
noise added after a non-linear server update would not make the update private.
The inner strategy must therefore average replies **linearly with equal weights**
(FedAvg and every FedOpt variant do, with :class:`UniformWeights`); rules that
discard or reweight replies (median, trimmed mean, Krum, Bulyan, clustering) are
refused by the run's assembly.

Arrays are never touched when not needed: an update within the clip is kept as
it is, and a noise of standard deviation 0 is not drawn, so noise 0 and a clip
larger than any update give the plain run bit for bit.

Accounting (:class:`PrivacyAccounting`) is Flower's :class:`~flwr.serverapp.RdpAccountant`
(``dp-accounting``): fedmtl samples exactly ``m`` of its ``N`` clients without
replacement, so the neighbouring relation is *replace one client* (``N`` public);
replacing a client changes a sum of clipped updates by up to ``2 C``, so each
round is a sampled Gaussian mechanism with noise multiplier ``z / 2`` relative
to that sensitivity. Task membership (which tasks a client holds) is public.
Not covered: the metrics in replies (``num-examples``, losses, accuracies) and
the per-client rows and similarity diagnostics written to ``metrics.jsonl``.

Noise comes from a ``numpy.random.Generator``: from fresh OS entropy (secret) by
default, or seeded by (seed, round) for reproducible experiments (:func:`noise_rng`);
then a run and a run resumed from a checkpoint draw the same noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict
from flwr.serverapp import GaussianPrivacyEvent, PrivacyConfig, RdpAccountant
from flwr.supercore.differential_privacy import (
    clip_inputs_inplace,
    compute_adaptive_noise_params,
    compute_stdv,
    get_norm,
)
from flwr.supercore.privacy_accounting import NeighboringRelation, SamplingMethod

from fedmtl.records import (
    ARRAYS,
    METRICS,
    NUM_EXAMPLES,
    TASK_ARRAYS,
    NDArrays,
    from_record,
    task_metric,
    to_record,
)
from strategies.round_log import RoundLog
from strategies.screening import ValidReply
from strategies.task_groups import node_task_arrays, scoped_tasks

__all__ = [
    "AdaptiveClipping",
    "ClientPrivacy",
    "PrivacyAccounting",
    "ReplyStage",
    "SentArrays",
    "UniformWeights",
    "clip_update",
    "noise_rng",
]

Mode = Literal["central", "local"]


@dataclass(frozen=True)
class SentArrays:
    """What the server sent this round: the shared arrays, and each task's task-scope arrays."""

    shared: NDArrays
    tasks: Mapping[str, NDArrays] = field(default_factory=dict)


class ReplyStage(Protocol):
    """A step between reply screening and aggregation (see the module docstring).

    Called once per training round, also with no valid reply; it returns the
    replies to aggregate (same order) and may write into the round's log.
    ``state`` / ``load_state`` carry what it learned across a checkpoint.
    """

    def __call__(
        self, server_round: int, valid: list[ValidReply], sent: SentArrays, log: RoundLog
    ) -> list[ValidReply]:
        """The replies to aggregate."""
        ...

    def state(self) -> dict[str, Any]:
        """What a resumed run needs (picklable)."""
        ...

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state`."""
        ...

    def resumed(self, redone_rounds: int) -> None:
        """After :meth:`load_state`: the run redoes ``redone_rounds`` rounds it ran before."""
        ...


def _with_content(reply: Message, content: RecordDict) -> Message:
    return Message(content=content, metadata=reply.metadata)  # type: ignore[call-overload,no-any-return]


class UniformWeights:
    """Every reply weighs 1 in the shared and the task aggregation (true counts stay logged)."""

    def __call__(
        self, server_round: int, valid: list[ValidReply], sent: SentArrays, log: RoundLog
    ) -> list[ValidReply]:
        """The replies with ``num-examples`` (and per-task counts) set to 1."""
        out = []
        for reply, info in valid:
            metrics = MetricRecord(dict(reply.content.metric_records[METRICS]))
            metrics[NUM_EXAMPLES] = 1.0
            if len(info.tasks) > 1:
                for task in info.tasks:
                    metrics[task_metric(task, NUM_EXAMPLES)] = 1.0
            content = RecordDict(dict(reply.content.items()))
            content[METRICS] = metrics
            out.append((_with_content(reply, content), info))
        return out

    def state(self) -> dict[str, Any]:
        """Stateless."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Stateless."""

    def resumed(self, redone_rounds: int) -> None:
        """Nothing to redo: the weights do not depend on rounds."""


def noise_rng(seed: int | None, server_round: int, stream: int = 0) -> np.random.Generator:
    """The generator of one round's noise (``stream``: e.g. a client id for local DP).

    ``seed = None``: fresh OS entropy, the noise secret (what a real run needs);
    an int makes the noise a function of (seed, round, stream): reproducible, but
    anyone who knows the seed can subtract it.
    """
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([seed, server_round, stream, 0xD9]))


def _inexact(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.inexact))


def clip_update(received: NDArrays, reply: NDArrays, clip: float) -> tuple[NDArrays, float]:
    """``reply`` with its update ``reply - received`` clipped to L2 norm ``clip``; the norm.

    One norm over every floating entry (Flower's ``get_norm``); the entries are
    rebuilt as ``received + clipped update`` (Flower's ``compute_clip_model_update``
    maths) only when the norm exceeds ``clip``, else ``reply`` is returned as it is.
    Non-floating entries (counters) are refused: they would leave the client unclipped.
    """
    keys = list(reply)
    for key in keys:
        if not _inexact(reply[key]):
            raise ValueError(
                f"'{key}' is {reply[key].dtype}: differential privacy clips floating "
                "arrays only; keep counters in the local or frozen scope"
            )
    update = [np.subtract(reply[k], received[k]) for k in keys]
    norm = get_norm(update)
    if norm <= clip:
        return reply, norm
    clip_inputs_inplace(update, clip)
    return {k: received[k] + u for k, u in zip(keys, update, strict=True)}, norm


def add_noise(arrays: NDArrays, std: float, rng: np.random.Generator) -> NDArrays:
    """``arrays`` plus Gaussian noise of ``std`` per entry (none drawn when ``std`` is 0)."""
    if std == 0.0:
        return arrays
    return {
        k: (v + rng.normal(0.0, std, v.shape).astype(v.dtype)) if _inexact(v) else v
        for k, v in arrays.items()
    }


@functools.lru_cache(maxsize=1024)
def accountant_epsilon(
    noise_multiplier: float, sample_size: int, population: int, delta: float, rounds: int
) -> float:
    """ε after ``rounds`` identical rounds, straight from Flower's :class:`RdpAccountant`.

    Replace-one neighbours, ``sample_size`` of ``population`` drawn without
    replacement, one :class:`GaussianPrivacyEvent` of noise multiplier
    ``noise_multiplier / 2`` per round (replace-one sensitivity ``2 C``). Cached:
    one evaluation costs up to ~0.5 s when ``sample_size < population``.
    """
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=population,
            neighboring_relation=NeighboringRelation.REPLACE_ONE,
            sampling_method=SamplingMethod.WITHOUT_REPLACEMENT,
        )
    )
    event = GaussianPrivacyEvent(noise_multiplier / 2, sample_size, population)
    accountant.compose(event, rounds)
    return accountant.get_epsilon(delta)


@dataclass
class PrivacyAccounting:
    """ε of the run so far: one sampled Gaussian release per round (:func:`accountant_epsilon`).

    Every round's release is the same event, so the ledger is the number of
    rounds accounted; ε is recomputed from it by Flower's accountant.

    Parameters
    ----------
    noise_multiplier : float
        ``z``: noise standard deviation over the clip norm (0: no guarantee, ε infinite).
    sample_size, population : int
        ``m`` clients sampled without replacement of ``N`` each round (local DP: 1 of 1,
        as if the client took part in every round).
    delta : float
        The δ that ε is reported for (needs ``dp-accounting``: ``pip install 'fedmtl[dp]'``).
    """

    noise_multiplier: float
    sample_size: int
    population: int
    delta: float
    rounds: int = field(default=0, init=False)

    def step(self, count: int = 1) -> None:
        """Account ``count`` more rounds."""
        self.rounds += count

    @property
    def epsilon(self) -> float:
        """ε after the rounds accounted, for :attr:`delta` (inf without noise; 0 before round 1)."""
        return self.epsilon_after(self.rounds)

    def epsilon_after(self, rounds: int) -> float:
        """ε after ``rounds`` rounds from the start."""
        return accountant_epsilon(
            self.noise_multiplier, self.sample_size, self.population, self.delta, rounds
        )

    def last_round_within(self, budget: float, limit: int) -> int:
        """The most rounds (up to ``limit``) whose ε stays <= ``budget`` (binary search)."""
        low, high = 0, limit  # epsilon_after(low) <= budget holds (0 rounds: epsilon 0)
        if self.epsilon_after(high) <= budget:
            return high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if self.epsilon_after(mid) <= budget else (low, mid)
        return low

    def state(self) -> dict[str, Any]:
        """The rounds accounted."""
        return {"rounds": self.rounds}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.rounds = int(state["rounds"])


@dataclass(frozen=True)
class AdaptiveClipping:
    """Adaptive clipping (Andrew et al. 2021, Flower's adaptive wrappers' rule and defaults).

    After each round the clip moves geometrically towards the ``target_quantile``
    of the update norms: ``C *= exp(-lr * (noisy unclipped fraction - target))``
    (the paper's rule: too few updates within the clip and it grows; Flower 1.41's
    wrappers put the *clipped* fraction there, which shrinks a clip that clips
    everything, away from the quantile),
    the clipped count noised with ``clipped_count_stddev`` (``None``: Flower's
    default, sampled clients / 20); the update noise is then adjusted so the pair
    has the run's noise multiplier (Flower's ``compute_adaptive_noise_params``).
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    clipped_count_stddev: float | None = None


class ClientPrivacy:
    """Clip, noise (central) and account (both modes) each round's replies.

    Parameters
    ----------
    mode : ``"central"`` or ``"local"``
        Who clips and noises: the server here, or each client before replying.
    clip : float
        The L2 clip norm ``C`` of a client's whole update (the initial one when adaptive).
    noise_multiplier : float
        ``z``; each aggregate gets noise ``z * C / n``.
    accounting : PrivacyAccounting
        Stepped once per training round.
    seed : int, optional
        Seeds each round's noise (:func:`noise_rng`); ``None``: secret OS entropy.
    adaptive : AdaptiveClipping, optional
        Central DP only: adapt ``C`` after each round.
    """

    def __init__(
        self,
        mode: Mode,
        clip: float,
        noise_multiplier: float,
        accounting: PrivacyAccounting,
        seed: int | None = None,
        adaptive: AdaptiveClipping | None = None,
    ) -> None:
        if mode not in ("central", "local"):
            raise ValueError(f"mode must be 'central' or 'local', got {mode!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be finite and > 0, got {clip}")
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
        if adaptive is not None and mode != "central":
            raise ValueError("adaptive clipping needs the server's clipped count: central only")
        self.mode, self.clip, self.seed = mode, clip, seed
        self.noise_multiplier = noise_multiplier
        self.accounting, self.adaptive = accounting, adaptive
        self.update_noise_multiplier, self.count_stddev = noise_multiplier, 0.0
        if adaptive is not None:
            self.count_stddev, self.update_noise_multiplier = compute_adaptive_noise_params(
                noise_multiplier, accounting.sample_size, adaptive.clipped_count_stddev
            )

    def __call__(
        self, server_round: int, valid: list[ValidReply], sent: SentArrays, log: RoundLog
    ) -> list[ValidReply]:
        """Clip and noise (central); account the round; log ε, δ, z and the clip used."""
        clip = self.clip
        out = valid
        if self.mode == "central" and valid:
            out = self._privatize(server_round, valid, sent)
        self.accounting.step()
        log.privacy = {
            "epsilon": self.accounting.epsilon,
            "delta": self.accounting.delta,
            "noise-multiplier": self.noise_multiplier,
            "clip": clip,
        }
        return out

    def _privatize(
        self, server_round: int, valid: list[ValidReply], sent: SentArrays
    ) -> list[ValidReply]:
        rng = noise_rng(self.seed, server_round)
        holders = {task: 0 for task in sent.tasks}
        for _, info in valid:
            for held in scoped_tasks(info.tasks, sent.tasks):
                holders[held] += 1
        n, clipped, out = len(valid), 0, []
        for reply, info in valid:
            shared = from_record(reply.content.array_records[ARRAYS])
            tasks = scoped_tasks(info.tasks, sent.tasks)
            task_sent = node_task_arrays(info.tasks, sent.tasks) or {}
            task = from_record(reply.content.array_records[TASK_ARRAYS]) if tasks else {}
            # One update, one norm: shared and task scope clipped together.
            joined, norm = clip_update({**sent.shared, **task_sent}, {**shared, **task}, self.clip)
            clipped += norm > self.clip
            new_shared = add_noise({k: joined[k] for k in shared}, self._std(n), rng)
            new_task: NDArrays = {}
            for name in tasks:  # each task's keys get the noise of its own group size
                keys = sent.tasks[name]
                part = {k: joined[k] for k in task if k in keys}
                new_task.update(add_noise(part, self._std(holders[name]), rng))
            out.append((self._rebuilt(reply, shared, task, new_shared, new_task), info))
        if self.adaptive is not None:
            self._adapt(clipped, n, rng)
        return out

    def _std(self, n: int) -> float:
        """Per-reply noise so that the mean of ``n`` replies gets ``z * C / n``."""
        return compute_stdv(self.update_noise_multiplier, self.clip, n) * math.sqrt(n)

    @staticmethod
    def _rebuilt(
        reply: Message, shared: NDArrays, task: NDArrays, new_shared: NDArrays, new_task: NDArrays
    ) -> Message:
        """``reply`` with the new arrays, an entry unchanged kept as the very same array."""
        if all(new_shared[k] is shared[k] for k in shared) and all(
            new_task.get(k) is task[k] for k in task
        ):
            return reply
        content = RecordDict(dict(reply.content.items()))
        content[ARRAYS] = to_record({k: new_shared[k] for k in shared})
        if task:
            content[TASK_ARRAYS] = to_record({k: new_task[k] for k in task})
        return _with_content(reply, content)

    def _adapt(self, clipped: int, n: int, rng: np.random.Generator) -> None:
        assert self.adaptive is not None
        within = n - clipped
        noisy = float(rng.normal(within, self.count_stddev)) if self.count_stddev else within
        fraction = noisy / n
        self.clip *= math.exp(
            -self.adaptive.learning_rate * (fraction - self.adaptive.target_quantile)
        )

    def state(self) -> dict[str, Any]:
        """The current clip and the accountant's ledger."""
        return {"clip": self.clip, "accounting": self.accounting.state()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.clip = float(state["clip"])
        self.accounting.load_state(state["accounting"])

    def resumed(self, redone_rounds: int) -> None:
        """Account the rounds run after the checkpoint: released once, released again now.

        Their aggregates reached clients (and with secret noise cannot be recreated),
        so the redone rounds cost privacy twice.
        """
        self.accounting.step(redone_rounds)


def apply_stages(
    stages: Sequence[ReplyStage],
    server_round: int,
    valid: list[ValidReply],
    sent: SentArrays,
    log: RoundLog,
) -> list[ValidReply]:
    """``valid`` through every stage in order."""
    for stage in stages:
        valid = stage(server_round, valid, sent, log)
    return valid


def load_stage_states(stages: Sequence[ReplyStage], states: Sequence[Mapping[str, Any]]) -> None:
    """Restore each stage's :meth:`ReplyStage.state` (a checkpoint without stages: nothing)."""
    for stage, state in zip(stages, states, strict=False):
        stage.load_state(state)


def resume_stages(stages: Sequence[ReplyStage], redone_rounds: int) -> None:
    """Tell each stage of a resumed run how many rounds after its checkpoint ran before."""
    for stage in stages:
        stage.resumed(redone_rounds)
