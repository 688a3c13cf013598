"""Client-level differential privacy of a run: from the ``dp-*`` keys to its pieces.

The mechanism lives in :mod:`strategies.privacy` (clipping, noise, accounting);
this module reads the config once and builds what each side needs:

* the server: :func:`server_stages` (uniform weights, then clipping and noise
  for ``dp = "central"``, accounting for both modes) for
  :class:`~strategies.scoped.ScopedStrategy`, and :func:`last_round` (the
  budget ``dp-max-epsilon``: the last round whose ε stays within it);
* each client (``dp = "local"``): :func:`reply_transforms`, applied to the
  train reply before it leaves the client: the client's whole update (shared
  and task arrays together, one L2 norm) clipped to ``dp-clip`` and Gaussian
  noise of standard deviation ``z * dp-clip`` added to every entry;
* checks that need the strategy or the model (:func:`check_strategy`,
  :func:`check_arrays`), raising :class:`~fedmtl.config.ConfigError` naming the key.

``z`` is ``dp-noise-multiplier``, or solved for a target ``dp-epsilon`` after
``num-rounds`` rounds (:func:`noise_multiplier`, bisection on the accountant).
Sampling: each round trains ``m = max(1, int(N * fraction-train))`` of the
``N`` clients taking part, drawn without replacement (Flower's FedAvg sampling
over fedmtl's client-ordered node list); local DP is accounted per client as if
it took part in every round (no amplification). See :mod:`strategies.privacy`
for the neighbouring relation (replace one client) and what is not covered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp.strategy import Strategy
from flwr.supercore.differential_privacy import compute_adaptive_noise_params

from fedmtl.config import ConfigError, ExperimentConfig
from fedmtl.records import (
    ARRAYS,
    TASK_ARRAYS,
    ClientInfo,
    Instruction,
    NDArrays,
    from_record,
    to_record,
)
from strategies.privacy import (
    AdaptiveClipping,
    ClientPrivacy,
    PrivacyAccounting,
    ReplyStage,
    UniformWeights,
    accountant_epsilon,
    add_noise,
    clip_update,
    noise_rng,
)
from strategies.registry import Sampling as RunSampling
from strategies.task_rules import auto_rule_name

__all__ = [
    "REFUSED_STRATEGIES",
    "ReplyTransform",
    "accounting",
    "budget_stop_message",
    "check_arrays",
    "check_strategy",
    "last_round",
    "noise_multiplier",
    "reply_transforms",
    "sampling",
    "server_stages",
    "solve_noise_multiplier",
    "transformed_reply",
]

#: Strategies whose aggregation is not a linear mean of the replies, refused with dp = "central".
REFUSED_STRATEGIES = {
    "clustered": "it averages within clusters chosen from the updates themselves",
    "conflict-averse": "it combines task updates non-linearly (gradient surgery)",
    "task-balanced": "it reweights replies by task, so one client can weigh more than 1 / n",
}

#: A client-side step on a train reply before it is sent: (received message, reply) -> reply.
ReplyTransform = Callable[[Message, RecordDict], RecordDict]


@dataclass(frozen=True)
class Sampling:
    """``sample_size`` clients of ``population`` per round."""

    sample_size: int
    population: int


def sampling(cfg: ExperimentConfig) -> Sampling:
    """How many clients each round trains (``m``) of how many (``N``): see the module docstring."""
    population = cfg.expected_clients
    return Sampling(max(1, int(population * cfg.fraction_train)), population)


def _accounting(cfg: ExperimentConfig, z: float) -> PrivacyAccounting:
    if cfg.dp == "local":  # each client's own releases, every round, no amplification
        return PrivacyAccounting(z, 1, 1, cfg.dp_delta)
    sample = sampling(cfg)
    return PrivacyAccounting(z, sample.sample_size, sample.population, cfg.dp_delta)


def accounting(cfg: ExperimentConfig) -> PrivacyAccounting:
    """A fresh accountant of the run (no round accounted yet)."""
    return _accounting(cfg, noise_multiplier(cfg))


@functools.lru_cache(maxsize=64)
def solve_noise_multiplier(
    epsilon: float, rounds: int, sample_size: int, population: int, delta: float
) -> float:
    """The smallest ``z`` (to 0.1 %) whose ε after ``rounds`` rounds is <= ``epsilon``.

    Bisection on Flower's accountant (:func:`strategies.privacy.accountant_epsilon`);
    a few seconds when ``sample_size < population``.

    Raises
    ------
    ValueError
        When even ``z = 1e4`` does not reach ``epsilon``.
    """

    def eps(z: float) -> float:
        return accountant_epsilon(z, sample_size, population, delta, rounds)

    low, high = 0.0, 1.0
    while eps(high) > epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"epsilon {epsilon} is out of reach (noise multiplier > 1e4)")
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        low, high = (low, mid) if eps(mid) <= epsilon else (mid, high)
    return high


def noise_multiplier(cfg: ExperimentConfig) -> float:
    """``dp-noise-multiplier``, or the one solved for ``dp-epsilon`` after ``num-rounds``."""
    if cfg.dp_epsilon <= 0:
        return cfg.dp_noise_multiplier
    probe = _accounting(cfg, 1.0)
    try:
        return solve_noise_multiplier(
            cfg.dp_epsilon, cfg.num_rounds, probe.sample_size, probe.population, cfg.dp_delta
        )
    except ValueError as exc:
        raise ConfigError("dp-epsilon", str(exc)) from None


def _adaptive(cfg: ExperimentConfig) -> AdaptiveClipping | None:
    if cfg.dp_clipping != "adaptive":
        return None
    return AdaptiveClipping(
        cfg.dp_target_quantile,
        cfg.dp_clip_learning_rate,
        cfg.dp_clipped_count_stddev or None,
    )


def server_stages(cfg: ExperimentConfig) -> tuple[ReplyStage, ...]:
    """The reply stages of the run's :class:`~strategies.scoped.ScopedStrategy` (none: plain)."""
    stages: list[ReplyStage] = []
    if cfg.client_weighting == "uniform":
        stages.append(UniformWeights())
    if cfg.dp != "none":
        z, adaptive = noise_multiplier(cfg), _adaptive(cfg)
        if adaptive is not None:
            _check_adaptive(cfg, z, adaptive)
        stages.append(
            ClientPrivacy(
                "central" if cfg.dp == "central" else "local",
                cfg.dp_clip,
                z,
                accounting(cfg),
                seed=cfg.seed if cfg.dp_seeded_noise else None,
                adaptive=adaptive,
            )
        )
    return tuple(stages)


def last_round(cfg: ExperimentConfig, redone: int = 0) -> int:
    """The last round to run: ``num-rounds``, or the last whose ε is within ``dp-max-epsilon``.

    ``redone``: rounds a resumed run ran once already after its checkpoint (see
    :func:`strategies.privacy.resume_stages`); they count against the budget.
    """
    if cfg.dp == "none" or cfg.dp_max_epsilon <= 0:
        return cfg.num_rounds
    within = accounting(cfg).last_round_within(cfg.dp_max_epsilon, cfg.num_rounds + redone)
    return within - redone


def budget_stop_message(cfg: ExperimentConfig, last: int, redone: int = 0) -> str | None:
    """Why the run stops after round ``last`` (``None``: it runs every round)."""
    if last >= cfg.num_rounds:
        return None
    epsilon = accounting(cfg).epsilon_after(last + 1 + redone)
    again = f", {redone} round(s) redone after a resume counted twice" if redone else ""
    return (
        f"privacy budget: round {last + 1} would take epsilon to {epsilon:.4g} > "
        f"dp-max-epsilon {cfg.dp_max_epsilon:g} (delta {cfg.dp_delta:g}{again}); "
        f"stopped after round {last} of {cfg.num_rounds}"
    )


def check_strategy(cfg: ExperimentConfig, inner: Strategy) -> None:
    """Refuse a central-DP run whose aggregation is not a linear, equally weighted mean.

    Raises
    ------
    ConfigError
        Naming ``strategy`` (a robust or clustering rule) or ``dp-clipped-count-stddev``
        (too small for the noise multiplier). The noise solved for a target
        ``dp-epsilon`` is checked by :func:`server_stages` (the server only: solving
        takes seconds, and clients of a central-DP run never need it).
    """
    if cfg.dp != "central":
        return
    why = REFUSED_STRATEGIES.get(cfg.strategy)
    # The shared scope is the inner strategy's own rule, whatever task-aggregation says.
    for rule in {auto_rule_name(inner), cfg.task_aggregation} - {"auto"}:
        if why is None and rule != "mean":
            why = f"its rule ('{rule}') discards or reweights updates"
    if why is not None:
        raise ConfigError(
            "strategy",
            f"'{cfg.strategy}' cannot run with dp = 'central': {why}, so noise of "
            "clip / clients no longer covers one client; use a mean-based strategy "
            "(fedavg, fedprox, fedadam, fedyogi, fedavgm, ...)",
        )
    sampling_keys = {k.replace("_", "-") for k in RunSampling().kwargs()}
    given = sorted(k for k in cfg.strategy_options if k.replace("_", "-") in sampling_keys)
    if given:  # the accountant's m of N comes from fraction-train and the clients
        raise ConfigError(
            "strategy-options",
            f"{given} change how many clients a round trains, which dp = 'central' "
            "accounts from fraction-train and num-clients: set fraction-train instead",
        )
    adaptive = _adaptive(cfg)
    if adaptive is not None and cfg.dp_epsilon <= 0:  # a solved z is checked by server_stages
        _check_adaptive(cfg, cfg.dp_noise_multiplier, adaptive)


def _check_adaptive(cfg: ExperimentConfig, z: float, adaptive: AdaptiveClipping) -> None:
    try:
        compute_adaptive_noise_params(z, sampling(cfg).sample_size, adaptive.clipped_count_stddev)
    except ValueError as exc:
        raise ConfigError("dp-clipped-count-stddev", str(exc)) from None


def check_arrays(
    cfg: ExperimentConfig, shared: ArrayRecord, tasks: Mapping[str, ArrayRecord]
) -> None:
    """Refuse non-floating entries (counters) in what leaves clients of a DP run."""
    if cfg.dp == "none":
        return
    for name, record in [("shared", shared), *((f"task '{t}'", r) for t, r in tasks.items())]:
        for key, array in from_record(record).items():
            if array.dtype.kind != "f":  # complex parts would get no noise
                raise ConfigError(
                    "scope-local",
                    f"'{key}' ({array.dtype}, {name} scope) would leave clients unclipped "
                    "with dp: put counters in the local or frozen scope",
                )


def reply_transforms(cfg: ExperimentConfig) -> tuple[ReplyTransform, ...]:
    """What the ClientApp applies to each train reply before sending it (none: as it is)."""
    if cfg.dp != "local":
        return ()
    return (functools.partial(local_privacy, cfg, noise_multiplier(cfg)),)


def transformed_reply(cfg: ExperimentConfig, msg: Message, reply: RecordDict) -> RecordDict:
    """The train ``reply`` after every one of :func:`reply_transforms` (in order)."""
    for transform in reply_transforms(cfg):
        reply = transform(msg, reply)
    return reply


def local_privacy(cfg: ExperimentConfig, z: float, msg: Message, reply: RecordDict) -> RecordDict:
    """The train ``reply`` to ``msg`` with the client's whole update clipped and noised (local DP).

    Shared (``"arrays"``) and task (``"task-arrays"``) entries are one update of
    L2 norm at most ``dp-clip``; each entry then gets Gaussian noise of std
    ``z * dp-clip``. Within the clip and with ``z = 0`` the reply is returned as it is.
    """
    received = from_record(msg.content.array_records[ARRAYS])
    shared = from_record(reply.array_records[ARRAYS])
    task: NDArrays = {}
    if TASK_ARRAYS in reply.array_records:
        received.update(from_record(msg.content.array_records[TASK_ARRAYS]))
        task = from_record(reply.array_records[TASK_ARRAYS])
    joined, _ = clip_update(received, {**shared, **task}, cfg.dp_clip)
    client = ClientInfo.from_content(reply).client_id
    server_round = Instruction.from_content(msg.content).server_round
    rng = noise_rng(cfg.seed if cfg.dp_seeded_noise else None, server_round, client + 1)
    noisy = add_noise(joined, z * cfg.dp_clip, rng)
    if all(noisy[k] is v for k, v in {**shared, **task}.items()):
        return reply
    out = RecordDict(dict(reply.items()))
    out[ARRAYS] = to_record({k: noisy[k] for k in shared})
    if task:
        out[TASK_ARRAYS] = to_record({k: noisy[k] for k in task})
    return out


def privacy_note(cfg: ExperimentConfig) -> str:
    """One line for the run's start: mode, clip, noise, δ and budget."""
    if cfg.dp == "none":
        return ""
    z = noise_multiplier(cfg)
    budget = f", budget epsilon {cfg.dp_max_epsilon:g}" if cfg.dp_max_epsilon > 0 else ""
    target = f" (solved for epsilon {cfg.dp_epsilon:g})" if cfg.dp_epsilon > 0 else ""
    guarantee = "" if z > 0 else "; noise multiplier 0: no privacy guarantee"
    return (
        f"dp {cfg.dp}: {cfg.dp_clipping} clip {cfg.dp_clip:g}, noise multiplier {z:.4g}{target}, "
        f"delta {cfg.dp_delta:g}{budget}{guarantee}"
    )
