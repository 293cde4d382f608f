"""Trajectory digests of every id: the episodes a seed gives, recorded so that a change to the
simulator's implementation can prove it leaves every episode unchanged, bit for bit.

``python -m tests.golden --add-missing`` records the digests of ids that are not in
``tests/fixtures/trajectory_hashes.json`` yet (a newly registered id or version) and never
touches a recorded key. ``python -m tests.golden`` rewrites the whole file (only when an id's
dynamics change on purpose, which also registers a new version of the id).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the lrm/* ids)

FIXTURE = Path(__file__).parent / "fixtures" / "trajectory_hashes.json"

#: Config variants run on every id besides its preset: sparse arrivals (slots without any task),
#: lossy finite storage.
VARIANTS: dict[str, dict[str, Any]] = {
    "preset": {},
    "sparse": {"arrival_rate": 0.3},
    "very_sparse": {"arrival_rate": 0.05},
    "lossy_finite": {"storage_kwh": 0.01, "initial_storage_kwh": 0.004,
                     "charge_efficiency": 0.9, "discharge_efficiency": 0.85},
}
ACTION_TYPES = ("continuous", "discrete")
HORIZON = 48
EPISODES = 3


def _update(h: Any, value: Any) -> None:
    """Feed one observation, reward or info value into the digest, type and bits included."""
    if isinstance(value, dict):
        for key in sorted(value):
            h.update(key.encode())
            _update(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _update(h, v)
        h.update(b"]")
    else:
        arr = np.asarray(value)
        h.update(str(arr.dtype).encode())
        h.update(np.ascontiguousarray(arr).tobytes())


def single_digest(env_id: str, action_type: str, kwargs: dict[str, Any], seed: int = 7) -> str:
    """Digest of ``EPISODES`` episodes of one env through ``gym.make`` under random actions."""
    env = gym.make(env_id, action_type=action_type, horizon=HORIZON, **kwargs)
    env.action_space.seed(seed + 1)
    h = hashlib.sha256()
    for ep in range(EPISODES):
        obs, info = env.reset(seed=seed + ep)
        _update(h, obs)
        _update(h, info)
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(env.action_space.sample())
            for v in (obs, float(reward), term, trunc, info):
                _update(h, v)
            done = term or trunc
    env.close()
    return h.hexdigest()


def vector_digest(env_id: str, action_type: str, kwargs: dict[str, Any], seed: int = 11,
                  num_envs: int = 3) -> str:
    """Digest of the native vector env over two episodes and a half, autoresets included."""
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                       action_type=action_type, horizon=HORIZON, **kwargs)
    env.action_space.seed(seed + 1)
    h = hashlib.sha256()
    obs, info = env.reset(seed=seed)
    _update(h, obs)
    _update(h, info)
    for _ in range(HORIZON * 5 // 2):
        out = env.step(env.action_space.sample())
        for v in out:
            _update(h, v)
    env.close()
    return h.hexdigest()


def all_keys() -> list[str]:
    """Every fixture key: ``single|`` and ``vector|`` of each (id, action type, variant)."""
    return [f"{kind}|{env_id}|{action_type}|{name}" for env_id in sorted(envs.ENV_IDS)
            for action_type in ACTION_TYPES for name in VARIANTS
            for kind in ("single", "vector")]


def digest(key: str) -> str:
    """The digest of one fixture key."""
    kind, env_id, action_type, name = key.split("|")
    fn = single_digest if kind == "single" else vector_digest
    return fn(env_id, action_type, VARIANTS[name])


def all_digests() -> dict[str, str]:
    """Every (id, action type, variant) digest, single env and native vector env."""
    return {key: digest(key) for key in all_keys()}


def add_missing(recorded: dict[str, str]) -> dict[str, str]:
    """``recorded`` with the digests of the keys it lacks added; recorded keys unchanged."""
    out = dict(recorded)
    for key in all_keys():
        if key not in out:
            out[key] = digest(key)
    return out


if __name__ == "__main__":
    import sys

    FIXTURE.parent.mkdir(exist_ok=True)
    if sys.argv[1:] == ["--add-missing"]:
        old = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}
        new = add_missing(old)
        FIXTURE.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
        print(f"added {len(new) - len(old)} keys to {FIXTURE}")
    elif sys.argv[1:]:
        sys.exit("usage: python -m tests.golden [--add-missing]")
    else:
        FIXTURE.write_text(json.dumps(all_digests(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {FIXTURE}")
