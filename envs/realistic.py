"""Realistic extensions of the core: deadlines and a queue, throughput caps, supply forecast.

Kept apart from :class:`envs.dynamics.FleetCore` so the paper path of ``FleetCore.step`` is
untouched: :func:`make_core` returns a plain ``FleetCore`` unless the config enables a queue
(``class_deadlines`` or ``model_tokens_per_slot``) or a forecast (``forecast_hours``), and then
a :class:`RealisticCore`, a subclass that only adds code. Imports numpy only.

Queue rules (one slot t, per copy):

1. *Pending* tasks are those that arrived in slots s <= t, are neither served nor dropped, and
   whose deadline slot ``min(s + d_c, T - 1)`` is >= t (the end of the episode is everyone's
   last deadline, so no task is left over at the end). A task whose deadline slot is t is
   *due*.
2. *Defer*: the action gives each class a defer fraction f_c. ``round(f_c * n_pending_c)``
   tasks of the class are kept for later, the newest first, but due tasks are never deferred.
3. The other tasks are *candidates*: each goes to a configuration drawn from its latent
   assignment quantile and the class's mixture (as in the paper path).
4. *Throughput caps*: candidates are admitted in earliest-deadline-first order (ties: oldest
   arrival, then class), per model, while the tokens the model runs in the slot stay within
   its cap ``model_tokens_per_slot[i]``; the first candidate that would exceed the cap and every
   later one on that model are not run (prefix rule, so a model never exceeds its cap). A
   task's tokens are its latent outcome (oracle stopping), known to the simulator.
5. Candidates not admitted stay in the queue, or are *dropped* if due. Dropped tasks cost
   ``w_dropped`` each (reward term ``dropped``) and use no energy.

Every task keeps its latent draws while it waits (common random numbers): its outcome under
each configuration does not depend on when it is served. Conservation, every slot and copy:
``sum arrived = sum served + sum dropped + queued``.

Forecast: ``forecast_hours`` features, the mean harvest of each of the next hours divided by
the mean harvest, plus a Gaussian error of standard deviation ``forecast_noise * sqrt(h)`` for
lead h hours, floored at 0. The errors are drawn at reset from the harvest generator, after the
supply itself, so they never shift any other stream.
"""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Any

import numpy as np

from envs.config import FleetConfig
from envs.dynamics import FleetCore, SlotResult
from envs.outcomes import J_PER_KWH
from envs.trace_processes import lookahead_slots, slots_per_hour


def needs_realistic_core(config: FleetConfig) -> bool:
    """True if the config uses a queue (deadlines or caps) or forecast features."""
    return config.queue_enabled or config.forecast_hours > 0


def make_core(config: FleetConfig, batch_size: int = 1) -> FleetCore:
    """The simulator core for a config: ``FleetCore`` for the paper path, else ``RealisticCore``."""
    if needs_realistic_core(config):
        return RealisticCore(config, batch_size)
    return FleetCore(config, batch_size)


# ---------------------------------------------------------------------------------- features
def extra_feature_names(config: FleetConfig) -> list[str]:
    """Names of the observation features appended after the paper features."""
    names: list[str] = []
    if config.queue_enabled:
        names += [f"queue_{c}" for c in config.class_names]
    names += [f"forecast_{h + 1}h" for h in range(config.forecast_hours)]
    return names


def extra_features(core: FleetCore) -> np.ndarray:
    """Values of :func:`extra_feature_names` for every copy, shape (B, n_extra)."""
    if not isinstance(core, RealisticCore):
        return np.zeros((core.B, 0))
    return core.extra_features()


# ---------------------------------------------------------------------------------- actions
def queued_action_dim(config: FleetConfig) -> int:
    """Length of the continuous action with a queue: C x (J + 1) (J configs, then defer)."""
    return config.n_classes * (config.n_configs + 1)


def queued_action(mixture: np.ndarray, defer: np.ndarray) -> np.ndarray:
    """Continuous action of a mixture (C, J) and defer fractions (C,) in [0, 1], in [-1, 1].

    Inverse of :func:`decode_continuous` (up to float32 rounding): per class the weights
    ``(1 - f) * mixture`` and ``f`` are scaled so the largest maps to +1.
    """
    pi = np.asarray(mixture, dtype=np.float64)
    f = np.asarray(defer, dtype=np.float64)[..., None]
    w = np.concatenate([(1.0 - f) * pi, f], axis=-1)
    top = w.max(axis=-1, keepdims=True)
    w = np.divide(w, top, out=np.zeros_like(w), where=top > 0)
    return (2.0 * w - 1.0).reshape(*w.shape[:-2], -1).astype(np.float32)


def decode_continuous(config: FleetConfig, actions: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Continuous queue actions (B, C*(J+1)) in [-1, 1] -> mixtures (B, C, J), defer (B, C).

    Per class, weights w = (a + 1) / 2 over J configurations and one "defer" entry; the defer
    fraction is w_defer / sum(w); the mixture is the configuration weights normalised (uniform
    if they are all zero). All -1 in a class: uniform mixture, nothing deferred.
    """
    n_c, n_j = config.n_classes, config.n_configs
    a = np.asarray(actions, dtype=np.float64).reshape(-1, n_c, n_j + 1)
    w = (a + 1.0) * 0.5
    total = w.sum(axis=-1)
    defer = np.divide(w[..., n_j], total, out=np.zeros_like(total), where=total > 0)
    wj = w[..., :n_j]
    s = wj.sum(axis=-1, keepdims=True)
    mix = np.where(s > 0, wj / np.where(s > 0, s, 1.0), 1.0 / n_j)
    return mix, defer


def _sum_row(xs: list[float]) -> float:
    """``np.add.reduce`` of a contiguous float64 row of up to 128 entries on Python floats,
    bit for bit: numpy adds the row's pairwise sum to 0.0, and its pairwise sum is sequential
    below 8 entries, else 8 running partial sums over blocks of 8 combined as a tree, then the
    entries left over."""
    n = len(xs)
    if n < 8:
        res = 0.0
        for x in xs:
            res += x
        return 0.0 + res
    r0, r1, r2, r3, r4, r5, r6, r7 = xs[:8]
    i, stop = 8, n - n % 8
    while i < stop:
        r0 += xs[i]
        r1 += xs[i + 1]
        r2 += xs[i + 2]
        r3 += xs[i + 3]
        r4 += xs[i + 4]
        r5 += xs[i + 5]
        r6 += xs[i + 6]
        r7 += xs[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for x in xs[i:]:
        res += x
    return 0.0 + res


class QueuedActionMap:
    """Decodes one continuous queue action on Python floats, for the B = 1 queue step.

    The fast path of :func:`decode_continuous` (after ``validate_queued_action``) followed by
    the step's clip of the defer fractions and running sums of the mixtures: the same values,
    bit for bit. Call it with the action; it returns ``(thresholds, defer)``, per class the
    J - 1 running sums of the mixture and the defer fraction, or None when the action needs
    the general path (another type or shape, or a value outside [-1, 1] or NaN: the general
    path raises the error).
    """

    def __init__(self, config: FleetConfig) -> None:
        self.n_j = config.n_configs
        self.shape = (queued_action_dim(config),)
        self.uniform = 1.0 / self.n_j  # decode_continuous's weight of an all-zero row
        self.enabled = self.n_j + 1 <= 128  # _sum_row's range

    def __call__(self, action: object) -> tuple[list[list[float]], list[float]] | None:
        if not (self.enabled and type(action) is np.ndarray and action.shape == self.shape
                and action.dtype.kind == "f"):
            return None
        flat = action.tolist()
        if not (min(flat) >= -1.0 and max(flat) <= 1.0):
            return None
        n_j = self.n_j
        thresholds, defer = [], []
        for c in range(0, len(flat), n_j + 1):
            w = [(x + 1.0) * 0.5 for x in flat[c:c + n_j + 1]]
            total = _sum_row(w)
            if total != total:  # a NaN entry (min and max may skip it)
                return None
            f = w[n_j] / total if total > 0.0 else 0.0
            defer.append(1.0 if f > 1.0 else (0.0 if f < 0.0 else f))  # np.clip(f, 0, 1)
            del w[n_j]
            s = _sum_row(w)
            mix = [x / s for x in w] if s > 0.0 else [self.uniform] * n_j
            del mix[-1]
            thresholds.append(list(accumulate(mix)))
        return thresholds, defer


def decode_discrete(config: FleetConfig, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Discrete queue actions in [0, 2J) -> configuration (B,), defer (B, C).

    ``a < J``: serve every pending task on configuration a. ``a >= J``: defer every task that
    is not due, serve the due ones on configuration ``a - J``.
    """
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    n_j = config.n_configs
    defer = np.repeat((a >= n_j).astype(np.float64)[:, None], config.n_classes, axis=1)
    return a % n_j, defer


def validate_queued_action(config: FleetConfig, action: object, space: Any) -> np.ndarray:
    """Check one unbatched action of a queue env; return it batched, shape (1, ...).

    Besides actions of ``space``, a continuous action of the paper's shape (C*J,) is accepted
    and means "nothing deferred", so policies written for the paper ids run unchanged.
    """
    from gymnasium import spaces as gym_spaces  # local: keep this module numpy-only at import

    from envs.spaces import validate_action

    n_c, n_j = config.n_classes, config.n_configs
    if (config.queue_enabled and config.action_type != "discrete"
            and np.shape(action) == (n_c * n_j,)):
        paper = gym_spaces.Box(-1.0, 1.0, shape=(n_c * n_j,), dtype=np.float32)
        a = validate_action(config, action, paper).reshape(1, n_c, n_j)
        return np.concatenate([a, -np.ones((1, n_c, 1))], axis=-1).reshape(1, -1)
    return validate_action(config, action, space)


# ---------------------------------------------------------------------------------- core
class _LookaheadHarvest:
    """Wraps a harvest process to also draw the supply beyond the horizon and forecast errors."""

    def __init__(self, inner: Any, lookahead: int, n_hours: int) -> None:
        self.inner = inner
        self.lookahead = lookahead
        self.n_hours = n_hours
        self.mean_kwh = inner.mean_kwh
        self.var_kwh2 = inner.var_kwh2
        self.last_full: np.ndarray | None = None
        self.last_noise: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:  # capacity_kw etc. of the wrapped process
        if name == "inner" or name.startswith("__"):  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def sample(self, rng: np.random.Generator, horizon: int) -> np.ndarray:
        full = np.asarray(self.inner.sample(rng, horizon + self.lookahead), dtype=np.float64)
        self.last_full = full
        self.last_noise = rng.standard_normal((horizon, self.n_hours))
        return full[:horizon]


class RealisticCore(FleetCore):
    """``FleetCore`` plus deadlines, a queue, throughput caps and forecast features.

    See the module docstring for the rules. Extra state per copy: ``queue_len`` (B, C) tasks
    waiting after the last slot; ``forecast`` (B, T, F) forecast features.
    """

    def __init__(self, config: FleetConfig, batch_size: int = 1) -> None:
        super().__init__(config, batch_size)
        B, T, C = self.B, self.T, self.C
        self.queued = config.queue_enabled
        deadlines = config.class_deadlines or (0,) * C
        self.deadlines = np.asarray(deadlines, dtype=np.int64)
        self.W = int(self.deadlines.max()) + 1  # slots a task can be pending
        caps = config.model_tokens_per_slot or (math.inf,) * self.M
        self.caps = np.asarray(caps, dtype=np.float64)
        self.capped = bool(np.isfinite(self.caps).any())
        self.F = config.forecast_hours
        self.slots_per_hour = slots_per_hour(config)
        if self.F:
            self.harvest_process = _LookaheadHarvest(
                self.harvest_process, lookahead_slots(config), self.F)
        self.forecast = np.zeros((B, T, self.F))
        self.queue_len = np.zeros((B, C), dtype=np.int64)
        #: Per copy, the oldest slot that may hold a pending task (every task that arrived
        #: before it is served, dropped or past its deadline): the step looks no further back.
        self.first_open = np.zeros(B, dtype=np.int64)
        self._done_A = self.A
        self.done = np.zeros((B, T + self.W - 1, self.A), dtype=bool)
        self.rates = config.arrival_rate * np.asarray(config.class_shares, dtype=np.float64)
        #: 1 / class rate (0 for a class that never arrives): scales the queue features.
        self.inv_rates = np.where(self.rates > 0, 1.0 / np.maximum(self.rates, 1e-300), 0.0)

    # ------------------------------------------------------------------ reset
    #: Per-copy state a step changes beyond ``FleetCore``'s (the vector env restores it for
    #: copies that are reset, not stepped, in a next-step autoreset).
    EXTRA_STEP_STATE = ("queue_len", "done", "first_open")

    def reset_copies(self, copies, rngs) -> None:  # noqa: ANN001 - as FleetCore.reset_copies
        """Start new episodes (as ``FleetCore``), clearing each copy's queue.

        Copies are reset one at a time: the forecast of a copy is built from the harvest
        process's last draw, which belongs to that copy.
        """
        if len(copies) != len(rngs):
            raise ValueError(f"copies and rngs must have the same length, got {len(copies)} "
                             f"and {len(rngs)}")
        for b, rng3 in zip(copies, rngs):
            super().reset_copies([b], [rng3])
            if self.A != self._done_A:  # the task buffers grew: grow the served/dropped flags
                old = self.done
                self.done = np.zeros((self.B, self.T + self.W - 1, self.A), dtype=bool)
                self.done[:, :, :self._done_A] = old
                self._done_A = self.A
            self.done[b] = False
            self.queue_len[b] = 0
            self.first_open[b] = 0
            if self.F:
                self._build_forecast(b)

    def _build_forecast(self, b: int) -> None:
        hp = self.harvest_process
        full, noise = hp.last_full, hp.last_noise
        per_h = self.slots_per_hour
        # Mean harvest of hour h ahead of slot t: slots t + h*per_h .. t + (h+1)*per_h - 1.
        cum = np.concatenate([[0.0], np.cumsum(full)])
        t = np.arange(self.T)[:, None]
        h = np.arange(self.F)[None, :]
        lo = t + h * per_h
        mean = (cum[lo + per_h] - cum[lo]) / per_h
        h_ref = max(hp.mean_kwh, 1e-300)
        sd = self.config.forecast_noise * np.sqrt(h + 1.0)
        self.forecast[b] = np.maximum(0.0, mean / h_ref + sd * noise)

    # ------------------------------------------------------------------ features
    def extra_features(self) -> np.ndarray:
        """Queue lengths per class / class rate, then the forecast, shape (B, n_extra)."""
        parts = []
        if self.queued:
            parts.append(self.queue_len * self.inv_rates)
        if self.F:
            t = np.minimum(self.t, self.T - 1)
            parts.append(self.forecast[self._rows, t])
        return np.concatenate(parts, axis=1) if parts else np.zeros((self.B, 0))

    # ------------------------------------------------------------------ step
    def step_action(self, actions: np.ndarray) -> SlotResult:
        """Advance every copy by one slot from raw actions of the env's action space.

        Args:
            actions: Continuous actions (B, C*(J+1)) with a queue, (B, C*J) without; or discrete
                actions (B,) in [0, 2J) with a queue, [0, J) without.
        """
        cfg = self.config
        discrete = cfg.action_type == "discrete"
        if not self.queued:
            if discrete:
                return self.step(configs=np.asarray(actions).reshape(-1))
            from envs.spaces import action_weights  # local: spaces imports gymnasium

            return self.step(mixtures=action_weights(cfg, actions))
        if discrete:
            configs, defer = decode_discrete(cfg, actions)
            return self.step(configs=configs, defer=defer)
        mixtures, defer = decode_continuous(cfg, actions)
        return self.step(mixtures=mixtures, defer=defer)

    def step(self, mixtures: np.ndarray | None = None, configs: np.ndarray | None = None,
             defer: np.ndarray | None = None) -> SlotResult:
        """Advance every copy by one slot (see ``FleetCore.step``).

        Args:
            mixtures: Mixture weights per class, shape (B, C, J); or
            configs: One configuration per copy, shape (B,).
            defer: Fraction of each class's pending tasks to keep waiting, shape (B, C) in
                [0, 1]; None = 0. Used only when the queue is enabled.
        """
        if not self.queued:
            return super().step(mixtures=mixtures, configs=configs)
        return self._step_queued(mixtures, configs, defer)

    def _step_queued(self, mixtures: np.ndarray | None, configs: np.ndarray | None,
                     defer: np.ndarray | None) -> SlotResult:
        if np.any(self.t >= self.T):
            raise RuntimeError("an episode has ended (t == horizon); reset the copy first")
        B, C, M, T = self.B, self.C, self.M, self.T
        rows, t = self._rows, self.t
        # 1. Pending tasks. Window of the W slots a pending task can come from, oldest first:
        # (B, W). A task waits at most max(deadlines) slots, and no copy looks back past its
        # oldest open slot (tasks before it are neither pending nor due).
        W = int(min(self.W, max(1, int((t - self.first_open).max()) + 1)))
        slots = t[:, None] - (W - 1) + np.arange(W)[None, :]
        in_ep = slots >= 0
        sl = np.maximum(slots, 0)
        R = rows[:, None]
        # Task slots up to the most arrivals of any window slot (the rest are padding).
        A = max(1, int(np.where(in_ep, self.n_slot[R, sl], 0).max()))
        cls_raw = self.cls[R, sl, :A]  # (B, W, A)
        pad = slots + (self.W - 1)  # index into the padded done flags, distinct per slot
        valid = (cls_raw < C) & in_ep[..., None]
        cls = np.minimum(cls_raw, C - 1)
        dl = np.minimum(sl[..., None] + self.deadlines[cls], T - 1)
        pend = valid & ~self.done[R, pad, :A] & (dl >= t[:, None, None])
        # From here on only the pending tasks, as one list ordered by copy, then window
        # position (slot, then arrival order): the oldest first.
        N = W * A
        p = np.flatnonzero(pend.reshape(-1))
        b_p = p // N
        w_p, a_p = np.divmod(p - b_p * N, A)
        slot_p = sl[b_p, w_p]
        c_p = cls.reshape(-1)[p].astype(np.intp)
        dl_p = dl.reshape(-1)[p]
        due_p = dl_p <= t[b_p]
        # Flat index of each task in the slot-major (T, B, A) task buffers.
        buf = (slot_p * self.B + b_p) * self.A + a_p

        # 2. defer the newest non-due tasks of each class: round(f * pending) of them
        f = np.zeros((B, C)) if defer is None else np.clip(
            np.asarray(defer, dtype=np.float64).reshape(B, C), 0.0, 1.0)
        cand = np.ones(p.size, dtype=bool)
        if np.any(f > 0) and p.size:
            g = b_p * C + c_p  # (copy, class) group
            n_def = np.floor(f.reshape(-1) * np.bincount(g, minlength=B * C) + 0.5)
            can = ~due_p
            # Within each group (kept in window order by the stable sort), the number of
            # deferrable tasks at or after each one: 1 = the newest.
            order = np.argsort(g, kind="stable")
            can_s = can[order]
            ends = np.cumsum(np.bincount(g, weights=can, minlength=B * C)).astype(np.int64)
            g_s = g[order]
            rank_new = ends[g_s] - np.cumsum(can_s) + can_s
            cand[order] = ~(can_s & (rank_new <= n_def[g_s]))

        # 3. configuration of every task, from its latent assignment quantile
        if configs is not None:
            j = np.asarray(configs, dtype=np.intp).reshape(B)[b_p]
        else:
            cum = np.cumsum(np.asarray(mixtures, dtype=np.float64), axis=-1)[:, :, :-1]
            u = self._ua_tm.reshape(-1)[buf]
            j = (u[:, None] >= cum[b_p, c_p]).sum(axis=-1)
        i = self.model_of[j]
        budget = self.budget_of[j]
        k = self._steps_tm.reshape(-1)[buf * M + i]
        solv = self._us_tm.reshape(-1)[buf] < self.solvable[i, c_p]
        step_tok = self.omega * k.astype(np.int64)
        finished = solv & (step_tok <= budget)
        tokens = np.where(finished, step_tok, budget)

        # 4. throughput caps: per copy, candidates in earliest-deadline-first order (ties:
        # window order), each model admitting while its running tokens stay within its cap
        served = cand.copy()
        if self.capped and p.size:
            order = np.argsort(b_p * T + dl_p, kind="stable")
            b_s = b_p[order]
            on = cand[order]
            i_s = i[order]
            tok_s = tokens[order]
            admit_s = np.ones(p.size, dtype=bool)
            for m in range(M):
                if not math.isfinite(self.caps[m]):
                    continue
                on_m = on & (i_s == m)
                x = np.where(on_m, tok_s, 0)
                # Running tokens within each copy: the running sum over all copies less
                # the tokens of the copies before it.
                per_copy = np.bincount(b_s, weights=x, minlength=B).astype(np.int64)
                used = np.cumsum(x)
                used -= (np.cumsum(per_copy) - per_copy)[b_s]
                admit_s &= ~on_m | (used <= self.caps[m])
            admit = np.empty_like(admit_s)
            admit[order] = admit_s
            served &= admit
        dropped = due_p & ~served
        # 5. book-keeping: mark served and dropped tasks, count the queue
        gone = served | dropped
        self.done[b_p[gone], slot_p[gone] + (self.W - 1), a_p[gone]] = True
        waiting = ~gone
        correct = served & finished

        tok_by = np.bincount(b_p * M + i, weights=np.where(served, tokens, 0),
                             minlength=B * M)
        tokens_by_model = tok_by.astype(np.int64).reshape(B, M)  # exact: integers < 2**53
        energy_j = np.zeros(B)
        for m in range(M):
            energy_j += self.j_per_token[m] * tokens_by_model[:, m]
        demand = self.idle_kwh + energy_j / J_PER_KWH
        g = b_p * C + c_p
        correct_by_class = np.bincount(g, weights=correct, minlength=B * C
                                       ).astype(np.int64).reshape(B, C)
        queue_len = np.bincount(g, weights=waiting, minlength=B * C
                                ).astype(np.int64).reshape(B, C)
        value = np.zeros(B)
        for c in range(C):
            value += self.values[c] * correct_by_class[:, c]
        arrived = self.n_slot[rows, t].copy()
        # Oldest slot still holding a waiting task (else the next slot).
        first_open = t + 1
        b_w = b_p[waiting]
        if b_w.size:
            copies, first = np.unique(b_w, return_index=True)
            first_open[copies] = slot_p[waiting][first]
        self.first_open = first_open

        harvest = self.harvest[rows, t]
        self.queue_len = queue_len
        aux, waste, loss, storage = self.advance(harvest, demand)
        return SlotResult(
            harvest_kwh=harvest, demand_kwh=demand, aux_kwh=aux, waste_kwh=waste,
            loss_kwh=loss, storage_kwh=storage, arrived=arrived,
            served=np.bincount(b_p, weights=served, minlength=B).astype(np.int64),
            correct=correct_by_class.sum(axis=1),
            dropped=np.bincount(b_p, weights=dropped, minlength=B).astype(np.int64),
            value_correct=value, correct_by_class=correct_by_class,
            tokens_by_model=tokens_by_model)
