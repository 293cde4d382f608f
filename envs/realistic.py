"""Realistic extensions of the core: deadlines and a queue, throughput caps, supply forecast.

Kept apart from :class:`envs.dynamics.FleetCore` so the paper path of ``FleetCore.step`` is
untouched: :func:`make_core` returns a plain ``FleetCore`` unless the config enables a queue
(``class_deadlines`` or ``model_tokens_per_slot``) or a forecast (``forecast_hours``), and then
a :class:`RealisticCore`, a subclass that only adds code. Imports numpy, and numba through
:mod:`envs.kernel_queue`, the compiled slot step of the queue rules below.

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
from typing import Any

import numpy as np

from envs import kernel_queue as kq
from envs.actions import action_weights, decode_continuous
from envs.bound import table
from envs.config import FleetConfig
from envs.dynamics import FleetCore, SlotResult
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
        #: Constants of the compiled queue step (envs.kernel_queue.pack_constants).
        self._qconsts = kq.pack_constants(
            self.W, self.omega, self.deadlines, self.model_of, self.budget_of, self.caps,
            self.solvable, self.j_per_token, self.values, self.idle_kwh)
        #: Whether the compiled step decodes continuous actions (its row sums need J < 128).
        self._box_in_kernel = self.J + 1 <= 128
        self._discrete = config.action_type == "discrete"
        self._bind()

    def _bind(self) -> None:
        """The core kernel's table (``FleetCore._bind``) and the queue step's
        (``envs.kernel_queue.queue_step_bound16``, ``32``), once the queue's arrays exist."""
        super()._bind()
        if getattr(self, "_qconsts", None) is not None:
            #: Scratch space of the compiled step (sized for the current task buffers).
            self._qscratch = np.empty(kq.scratch_size(self.W, self.A, self.C, self.J, self.M),
                                      dtype=np.int64)
            self._qtab = np.concatenate([self._tab, table([
                self.done, self.first_open, self.queue_len, self._qconsts, self._qscratch])])
            self._qstep = (kq.queue_step_bound16 if self._steps_tm.dtype == np.int16
                           else kq.queue_step_bound32)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for k in ("_qscratch",):  # rebuilt by _bind
            state.pop(k, None)
        return state

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
                self._bind()
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

    # ------------------------------------------------------------------ step
    def step_action(self, actions: np.ndarray) -> SlotResult:
        """Advance every copy by one slot from raw actions of the env's action space.

        Args:
            actions: Continuous actions (B, C*(J+1)) in [-1, 1] with a queue, (B, C*J) without;
                or discrete actions (B,) in [0, 2J) with a queue, [0, J) without. With a
                queue, the compiled step decodes them (as :func:`decode_continuous` and
                :func:`decode_discrete`) and raises ValueError for values out of range.
        """
        cfg = self.config
        if not self.queued:
            if cfg.action_type == "discrete":
                return self.step(configs=np.asarray(actions).reshape(-1))
            return self.step(mixtures=action_weights(cfg, actions))
        self._queue_kernel(*self._action_args(actions))
        return self.result()

    def run_action(self, actions: np.ndarray) -> None:
        """:meth:`step_action` with a queue, leaving the slot in the result rows ``res_f``,
        ``res_i`` and the observation rows ``obs`` (as ``FleetCore.run``; the forecast
        features, if any, are not written) instead of returning a ``SlotResult``."""
        self._queue_kernel(*self._action_args(actions))

    def _action_args(self, actions: np.ndarray) -> tuple[int, np.ndarray]:
        """(mode, act) of :func:`envs.kernel_queue.queue_step` for raw queue actions."""
        if self._discrete:
            a = np.asarray(actions, dtype=np.float64).ravel()
            return kq.DISCRETE, a if a.flags.carray else a.copy()
        a = np.asarray(actions)
        if a.dtype.char not in "fd":  # the kernel reads float32 and float64
            a = a.astype(np.float64)
        if a.ndim != 1:
            a = a.ravel()
        if not a.flags.carray:  # contiguous, aligned and writeable: no other compiled variant
            a = a.copy()
        if not self._box_in_kernel:  # rows too long for the kernel's sums: numpy's decode
            if a.size % (self.C * (self.J + 1)) or not np.max(np.abs(a), initial=0.0) <= 1.0:
                return kq.BOX, a  # the kernel reports the error
            mixtures, defer = decode_continuous(self.config, a)
            return kq.MIXTURES, np.concatenate([mixtures.ravel(), defer.ravel()])
        return kq.BOX, a

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
        B, C, J = self.B, self.C, self.J
        if configs is not None:
            j = np.asarray(configs)
            if j.size != B or not np.issubdtype(j.dtype, np.integer):
                raise ValueError(f"configs must be {B} integers (one per copy), got shape "
                                 f"{j.shape}, dtype {j.dtype}")
            mode, act = kq.CONFIGS, j.astype(np.float64).ravel()
        else:
            w = np.asarray(mixtures, dtype=np.float64)
            if w.shape != (B, C, J):
                raise ValueError(f"mixtures must have shape ({B}, {C}, {J}) (copies x classes "
                                 f"x configurations), got shape {w.shape}")
            mode, act = kq.MIXTURES, w.ravel()
        if defer is not None:  # the kernel reads the defer fractions after the actions
            d = np.asarray(defer, dtype=np.float64)
            if d.size != B * C:
                raise ValueError(f"defer must have shape ({B}, {C}) (copies x classes), got "
                                 f"shape {d.shape}")
            act = np.concatenate([act, d.ravel()])
        self._queue_kernel(mode, act)
        return self.result()

    def _queue_kernel(self, mode: int, act: np.ndarray) -> None:
        """One slot of every copy by the compiled ``envs.kernel_queue.queue_step`` (``act``
        read as ``mode`` says): the queue rules, then the slot's close as the core kernel's step and
        the observation as :meth:`observe` (plus the queue features) by the core kernel's
        functions; results in ``res_f``, ``res_i`` and ``obs``."""
        status = self._qstep(self._qtab, mode, act)[0]
        if status != kq.OK:
            raise self._queue_error(status, mode, act)

    def _queue_error(self, status: int, mode: int, act: np.ndarray) -> Exception:
        """The exception of a :func:`envs.kernel_queue.queue_step` status other than OK."""
        B, C, J = self.B, self.C, self.J
        if status == kq.ENDED:
            return RuntimeError("an episode has ended (t == horizon); reset the copy first")
        if status == kq.OUT_OF_RANGE:
            a = np.asarray(act, dtype=np.float64)
            return ValueError(f"action entries must be finite and in [-1, 1], got min "
                              f"{float(a.min())!r}, max {float(a.max())!r}")
        if status == kq.BAD_INDEX:
            hi, what = (J - 1, "configs") if mode == kq.CONFIGS else (2 * J - 1, "actions")
            bad = [x for x in act.tolist() if not (0 <= x <= hi and x == int(x))]
            return ValueError(f"{what} must be integers in [0, {hi}], got "
                              f"{_number(bad[0])!r}")
        if mode == kq.BOX:
            return ValueError(f"actions must have {B} x {C * (J + 1)} entries (copies x "
                              f"classes x (configurations + defer)), got {act.size}")
        return ValueError(f"actions must have {B} entries (one per copy), got {act.size}")



def _number(x: float) -> int | float:
    """An integer-valued float as an int (for error messages)."""
    return int(x) if x == x and abs(x) != math.inf and x == int(x) else x
