"""Outside RL clients: TorchRL's keyword retry, worker processes that never ran ``import envs``,
RLlib's positional ``env_config``, and action masks for sb3-contrib's MaskablePPO."""

from __future__ import annotations

import math
import multiprocessing as mp
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs import PRESETS
from envs.config import resolve_config
from envs.fleet_env import FleetEnv

ROOT = Path(__file__).resolve().parents[1]
#: A paper id and a queue id (Discrete(J) and Discrete(2J), Box with and without defer).
CLIENT_IDS = ("lrm/Critical-v0", "lrm/R1Trace-v0")


# ---------------------------------------------------------------------------- TorchRL
def _make_like_torchrl(env_id: str, **kwargs):
    """TorchRL's ``GymEnv`` rule: build with ``frameskip``, and retry without it only when
    the TypeError contains ``unexpected keyword argument 'frameskip'``
    (``ACCEPTED_TYPE_ERRORS`` of ``torchrl/envs/libs/gym.py``)."""
    try:
        return gym.make(env_id, frameskip=1, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument 'frameskip'" not in str(err):
            raise
        return gym.make(env_id, **kwargs)


@pytest.mark.parametrize("env_id", CLIENT_IDS)
def test_unknown_keyword_uses_pythons_wording_so_torchrl_retries(env_id):
    env = _make_like_torchrl(env_id, horizon=4)
    assert env.unwrapped.config.horizon == 4
    # The message keeps naming the known fields, for a person reading it.
    with pytest.raises(TypeError, match=r"got an unexpected keyword argument 'horizn'; known "
                                        r"fields: \[.*'horizon'"):
        gym.make(env_id, horizn=4)
    # Several unknown fields: the first in Python's wording, then all of them.
    with pytest.raises(TypeError, match=r"argument 'aa' \(unknown: \['aa', 'bb'\]\)"):
        resolve_config("critical", bb=1, aa=2)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'horizn'"):
        resolve_config({"horizn": 3})


@pytest.mark.parametrize("env_id", CLIENT_IDS)
@pytest.mark.parametrize("action_type", ["continuous", "discrete"])
def test_torchrl_gym_env_passes_check_env_specs(env_id, action_type):
    pytest.importorskip("torchrl")
    from torchrl.envs.libs.gym import GymEnv
    from torchrl.envs.utils import check_env_specs

    env = GymEnv(env_id, action_type=action_type, horizon=6)
    check_env_specs(env, seed=0)
    rollout = env.rollout(8, break_when_any_done=False)  # crosses an episode end
    assert rollout.batch_size == (8,)
    assert rollout["next", "truncated"].sum().item() == 1
    assert np.isfinite(rollout["next", "reward"].numpy()).all()


# ---------------------------------------------------------------------------- worker processes
def test_readme_shows_the_module_form_for_worker_processes_near_the_top():
    lines = (ROOT / "README.md").read_text().splitlines()
    top = "\n".join(lines[:70])
    assert '"envs:lrm/Critical-v0"' in top
    assert "SubprocVecEnv" in top and "register_env" in top
    assert top.index("register_env") < top.index("## Environments")


START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]


@pytest.mark.parametrize("start_method", START_METHODS)
def test_train_env_factory_under_every_start_method(start_method):
    """``train.py --vec-env subproc`` builds its workers from this factory."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from agents.training_envs import EnvFactory

    fns = [EnvFactory("lrm/Critical-v0", {"horizon": 3}),
           EnvFactory("lrm/Critical-v0", {"horizon": 3, "storage_kwh": 0.01})]
    venv = SubprocVecEnv(fns, start_method=start_method)
    try:
        venv.seed(0)
        venv.reset()
        done_seen = 0
        for _ in range(4):
            _, rew, done, _ = venv.step(np.zeros((2, 27), dtype=np.float32))
            assert np.isfinite(rew).all()
            done_seen += int(done.sum())
        assert done_seen == 2  # one episode end per copy after 3 steps
        assert [s.kwargs.get("storage_kwh") for s in venv.get_attr("spec")] == [None, 0.01]
    finally:
        venv.close()


@pytest.mark.parametrize("start_method", START_METHODS)
def test_module_form_of_the_id_in_fresh_worker_processes(start_method):
    """The README's form: the worker imports ``envs`` itself (spawn, forkserver)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = make_vec_env("envs:lrm/Critical-v0", n_envs=2, seed=0, env_kwargs={"horizon": 2},
                        vec_env_cls=SubprocVecEnv,
                        vec_env_kwargs={"start_method": start_method})
    try:
        venv.reset()
        _, rew, done, _ = venv.step(np.zeros((2, 27), dtype=np.float32))
        assert np.isfinite(rew).all() and not done.any()
    finally:
        venv.close()


# ---------------------------------------------------------------------------- RLlib env_config
class _EnvContext(dict):
    """Stand-in for RLlib's ``EnvContext``: a dict with worker attributes."""

    worker_index = 1
    num_workers = 2
    vector_index = 0


@pytest.mark.parametrize("env_config, expected", [
    ({"config": "critical"}, PRESETS["critical"]),
    ({"config": "volatile", "horizon": 12}, PRESETS["volatile"].__class__(
        **{**PRESETS["volatile"].to_dict(), "horizon": 12})),
    (_EnvContext(config="r1_trace", action_type="discrete"),
     resolve_config("r1_trace", action_type="discrete")),
    ({"config": {"harvest_cv": 1.0}, "horizon": 5}, resolve_config(None, harvest_cv=1.0,
                                                                     horizon=5)),
    ({}, resolve_config(None)),
    ({"horizon": 7}, resolve_config(None, horizon=7)),
])
def test_positional_env_config_with_a_preset_key(env_config, expected):
    env = FleetEnv(env_config)
    assert env.unwrapped.config == expected
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    # The same mapping through gym.make's config argument.
    assert gym.make("lrm/Critical-v0", config=dict(env_config)).unwrapped.config == expected


def test_positional_env_config_errors_and_render_mode():
    env = FleetEnv({"config": "critical", "render_mode": "ansi", "horizon": 3})
    assert env.render_mode == "ansi" and env.config.horizon == 3
    with pytest.raises(ValueError, match="unknown preset 'critcal'"):
        FleetEnv({"config": "critcal"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'horizn'"):
        FleetEnv({"config": "critical", "horizn": 3})
    with pytest.raises(TypeError, match=re.escape("['horizon'] given both")):
        FleetEnv({"config": "critical", "horizon": 3}, horizon=4)
    with pytest.raises(ValueError, match=r"FleetConfig\.horizon must be in"):
        FleetEnv({"config": "critical", "horizon": 0})


# ---------------------------------------------------------------------------- action masks
@pytest.mark.parametrize("env_id", CLIENT_IDS)
def test_action_masks_all_legal_on_discrete_ids(env_id):
    env = gym.make(env_id, action_type="discrete", horizon=4)
    mask = env.unwrapped.action_masks()
    assert mask.dtype == np.bool_ and mask.shape == (env.action_space.n,) and mask.all()
    env.reset(seed=0)
    for a in range(env.action_space.n):  # every masked-in action steps without error
        if env.step(a)[3]:
            env.reset(seed=a)
    with pytest.raises(TypeError, match="discrete actions only"):
        gym.make(env_id).unwrapped.action_masks()


@pytest.mark.parametrize("env_id, kwargs", [
    ("lrm/Critical-v0", {"n_steps": 128}), ("lrm/R1Trace-v0", {"n_steps": 128}),
    pytest.param("lrm/Critical-v0", {}, marks=pytest.mark.slow),  # the defaults: 2048 steps
])
def test_maskable_ppo_learns_on_discrete_ids(env_id, kwargs):
    pytest.importorskip("sb3_contrib")
    from sb3_contrib import MaskablePPO

    env = gym.make(env_id, action_type="discrete")
    model = MaskablePPO("MlpPolicy", env, seed=0, device="cpu", **kwargs)
    model.learn(256)
    assert model.num_timesteps >= 256
    action, _ = model.predict(env.reset(seed=1)[0], action_masks=env.unwrapped.action_masks())
    assert 0 <= int(action) < env.action_space.n
    assert math.isfinite(float(env.step(action)[1]))
