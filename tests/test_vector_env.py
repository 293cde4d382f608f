"""Native vector env: bit-identical to SyncVectorEnv of single envs; SB3 adapter; rollouts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the ids)
from agents.vec import FleetSB3VecEnv, make_sb3_vec_env, rollout_episodes
from envs.vector_env import FleetVectorEnv

IDS = sorted(envs.ENV_IDS)
#: Short episodes so autoresets happen within a few steps; a small store exercises the ledger.
SMALL = {"horizon": 5, "storage_kwh": 0.05}


def assert_same(a, b, path: str = "") -> None:
    """Exact equality of nested infos/arrays: keys, dtypes, shapes and bytes."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
        return
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
        return
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == object:
        assert a.shape == b.shape, path
        for x, y in zip(a, b):
            assert (x is None) == (y is None), path
            if x is not None:
                assert_same(x, y, path)
        return
    assert a.dtype == b.dtype, (path, a.dtype, b.dtype)
    assert a.shape == b.shape, (path, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), (path, a, b)


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_returns_native_env(env_id: str) -> None:
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point",
                        arrival_rate=12.0)
    assert isinstance(venv.unwrapped, FleetVectorEnv)
    assert venv.unwrapped.config.arrival_rate == 12.0
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    single = gym.make(env_id)
    assert venv.single_observation_space == single.observation_space
    assert venv.single_action_space == single.action_space
    sync = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync")
    assert venv.observation_space == sync.observation_space
    assert venv.action_space == sync.action_space


@pytest.mark.parametrize("action_type", ["continuous", "discrete"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize(("env_id", "n"), [("lrm/Critical-v0", 4), ("lrm/Volatile-v0", 4),
                                           ("lrm/UnderSupply-v0", 1), ("lrm/R1Trace-v0", 3),
                                           ("lrm/SolarDay-v0", 2), ("lrm/R1TraceBursty-v0", 1),
                                           ("lrm/Critical-v1", 4), ("lrm/R1Trace-v1", 3)])
def test_bit_identical_to_sync_vector_env(env_id: str, n: int, mode: AutoresetMode,
                                          action_type: str) -> None:
    """obs, rewards, flags and infos equal SyncVectorEnv's over several autoresets and a
    partial reset (reset_mask), for the same seeds and actions (N = 1 included)."""
    kw = {**SMALL, "action_type": action_type}
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                          autoreset_mode=mode, **kw)
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": mode}, **kw)
    assert_same(native.reset(seed=11), sync.reset(seed=11))
    sync.action_space.seed(3)
    rng = np.random.default_rng(0)
    ended = 0
    for k in range(17):
        actions = sync.action_space.sample()
        if action_type == "continuous" and k % 3 == 0:  # pure and all -1 rows too
            actions[rng.random(actions.shape) < 0.7] = -1.0
        out_n, out_s = native.step(actions), sync.step(actions)
        for x, y, name in zip(out_n, out_s, ("obs", "reward", "term", "trunc", "info")):
            assert_same(x, y, f"step {k} {name}")
        ended += int(out_s[3].sum())
        if k == 7:
            mask = np.arange(n) % 3 == 0
            seeds = [5 + i if m else None for i, m in enumerate(mask)]
            assert_same(native.reset(seed=seeds, options={"reset_mask": mask}),
                        sync.reset(seed=seeds, options={"reset_mask": mask.copy()}))
    assert ended >= 2 * n  # the episodes did cross autoreset boundaries


@pytest.mark.parametrize("action_type", ["continuous", "discrete"])
@pytest.mark.parametrize("env_id", ["lrm/Critical-v0", "lrm/R1Trace-v0"])
def test_slots_without_tasks_match_sync_vector_env(env_id: str, action_type: str) -> None:
    """At 0.3 tasks per slot most slots have no task in any copy (the batched step then has
    no task at all); the native env still equals SyncVectorEnv step for step."""
    kw = {**SMALL, "action_type": action_type, "arrival_rate": 0.3}
    native = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point", **kw)
    sync = gym.make_vec(env_id, num_envs=4, vectorization_mode="sync", **kw)
    assert_same(native.reset(seed=2), sync.reset(seed=2))
    sync.action_space.seed(4)
    empty = 0
    for k in range(30):
        actions = sync.action_space.sample()
        out_n, out_s = native.step(actions), sync.step(actions)
        for x, y, name in zip(out_n, out_s, ("obs", "reward", "term", "trunc", "info")):
            assert_same(x, y, f"step {k} {name}")
        empty += int(out_s[4]["arrived"].sum() == 0)
    assert empty >= 5  # slots where no copy had a task did occur


def test_desynchronised_copies_match_single_envs() -> None:
    """After a partial reset the copies sit at different slots (the core's gather path);
    each still follows its single env exactly, with an unseeded reset continuing its seed."""
    n = 3
    venv = FleetVectorEnv(n, config="critical", horizon=6)
    singles = [gym.make("lrm/Critical-v0", horizon=6) for _ in range(n)]
    obs, _ = venv.reset(seed=100)
    for i, e in enumerate(singles):
        assert_same(obs[i], e.reset(seed=100 + i)[0])
    rng = np.random.default_rng(1)
    for k in range(20):
        if k in (2, 9):
            mask = np.array([False, True, False])
            obs, _ = venv.reset(options={"reset_mask": mask})
            assert_same(obs[1], singles[1].reset()[0])
        a = rng.uniform(-1, 1, (n, 27)).astype(np.float32)
        obs, rew, term, trunc, info = venv.step(a)
        for i, e in enumerate(singles):
            if k > 0 and prev_done[i]:  # noqa: F821 - set below on the first step
                o, inf = e.reset()
                r, tr = 0.0, False
            else:
                o, r, _, tr, inf = e.step(a[i])
            assert_same(obs[i], o, f"obs {k} {i}")
            assert rew[i] == r and trunc[i] == tr
            assert info["aux_kwh"][i] == inf["aux_kwh"] and info["t"][i] == inf["t"]
        prev_done = term | trunc  # noqa: F841


def test_info_batching_and_errors() -> None:
    venv = FleetVectorEnv(2, config="critical", horizon=3)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros((2, 27), dtype=np.float32))
    _, info = venv.reset(seed=0)
    for k in ("harvest_kwh", "demand_kwh", "aux_kwh", "waste_kwh", "storage_kwh"):
        assert info[k].dtype == np.float64 and info[k].shape == (2,) and info[f"_{k}"].all()
    for k in ("arrived", "served", "correct", "dropped"):
        assert info[k].dtype == np.int64
    assert set(info["reward_terms"]) >= {"value_correct", "aux_kwh", "_aux_kwh"}
    with pytest.raises(ValueError, match=r"shape \(2, 27\)"):
        venv.step(np.zeros((3, 27)))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        venv.step(np.full((2, 27), np.nan))
    with pytest.raises(ValueError, match="num_envs"):
        FleetVectorEnv(0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        FleetVectorEnv(2, autoreset_mode="sometimes")
    with pytest.raises(TypeError, match="unexpected keyword argument .arrival_rte."):
        FleetVectorEnv(2, arrival_rte=3.0)
    d = FleetVectorEnv(2, action_type="discrete")
    d.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        d.step(np.array([0, 9]))


def test_sb3_adapter_matches_dummy_vec_env() -> None:
    """Same obs, float32 rewards, dones and infos (terminal_observation, TimeLimit.truncated,
    episode) as DummyVecEnv + Monitor with the same seed."""
    kw = {"horizon": 4}
    a = make_sb3_vec_env("lrm/Critical-v0", 3, seed=4, env_kwargs=kw)
    b = make_sb3_vec_env("lrm/Critical-v0", 3, seed=4, backend="dummy", env_kwargs=kw)
    assert isinstance(a, FleetSB3VecEnv)
    assert a.observation_space == b.observation_space and a.action_space == b.action_space
    oa, ob = a.reset(), b.reset()
    assert oa.shape == (3, *a.observation_space.shape) and oa.tobytes() == ob.tobytes()
    rng = np.random.default_rng(0)
    n_done = 0
    for _ in range(10):
        act = rng.uniform(-1, 1, (3, 27)).astype(np.float32)
        ra, rb = a.step(act), b.step(act)
        for x, y in zip(ra[:3], rb[:3]):
            assert_same(x, y)
        assert ra[1].shape == (3,) and ra[2].dtype == bool and len(ra[3]) == 3
        for ia, ib in zip(ra[3], rb[3]):
            assert set(ia) == set(ib)
            for key in ia:
                if key == "episode":
                    assert (ia[key]["r"], ia[key]["l"]) == (ib[key]["r"], ib[key]["l"])
                    n_done += 1
                elif key == "terminal_observation":
                    assert_same(ia[key], ib[key])
                else:
                    assert ia[key] == ib[key], key
        for ia, ib in zip(a.reset_infos, b.reset_infos):
            assert ia["storage_kwh"] == ib["storage_kwh"] and ia["t"] == ib["t"]
    assert n_done == 6


def test_ppo_learns_on_native_adapter_smoke() -> None:
    """A 2k-step PPO run on the native adapter finishes and produces valid actions."""
    torch = pytest.importorskip("torch")
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = make_sb3_vec_env("lrm/Critical-v0", 8, seed=0, env_kwargs={"horizon": 32})
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=512, n_epochs=1, seed=0,
                device="cpu", policy_kwargs={"net_arch": [32]})
    model.learn(2048)
    assert model.num_timesteps == 2048
    act, _ = model.predict(env.reset(), deterministic=True)
    assert act.shape == (8, 27) and np.all(np.abs(act) <= 1.0)


class _Fixed:
    """Deterministic test policy: a fixed mixture for every observation of a batch."""

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return np.tile(np.linspace(-1, 1, 27, dtype=np.float32), (len(obs), 1)), state


def test_rollout_episodes_equals_single_env_loop() -> None:
    kw = {"horizon": 7, "storage_kwh": 0.02}
    seeds = [3, 8, 1, 20, 5]
    tot = rollout_episodes(_Fixed(), "lrm/Volatile-v0", seeds, max_batch=2, env_kwargs=kw)
    assert tot["seed"].tolist() == seeds
    for i, s in enumerate(seeds):
        env = gym.make("lrm/Volatile-v0", **kw)
        obs, _ = env.reset(seed=s)
        sums = dict.fromkeys(("return", "aux_kwh", "waste_kwh", "harvest_kwh"), 0.0)
        terms = dict.fromkeys(("value_correct", "leftover_kwh"), 0.0)
        correct = length = 0
        done = False
        while not done:
            obs, r, te, tr, info = env.step(_Fixed().predict(obs[None])[0][0])
            sums["return"] += r
            for k in ("aux_kwh", "waste_kwh", "harvest_kwh"):
                sums[k] += info[k]
            for k in terms:
                terms[k] += info["reward_terms"][k]
            correct += info["correct"]
            length += 1
            done = te or tr
        for k, v in sums.items():
            assert tot[k][i] == v, k
        for k, v in terms.items():
            assert tot[f"reward_terms/{k}"][i] == v, k
        assert tot["correct"][i] == correct and tot["length"][i] == length == 7
        assert tot["final_storage_kwh"][i] == info["storage_kwh"]


@pytest.mark.slow
def test_sb3_subproc_backend_matches_native() -> None:
    """The SubprocVecEnv fallback gives the native adapter's trajectories."""
    kw = {"horizon": 3}
    a = make_sb3_vec_env("lrm/Critical-v0", 2, seed=7, env_kwargs=kw)
    b = make_sb3_vec_env("lrm/Critical-v0", 2, seed=7, backend="subproc", env_kwargs=kw)
    try:
        assert_same(a.reset(), b.reset())
        rng = np.random.default_rng(1)
        for _ in range(5):
            act = rng.uniform(-1, 1, (2, 27)).astype(np.float32)
            ra, rb = a.step(act), b.step(act)
            assert_same(ra[0], rb[0])
            assert_same(ra[2], rb[2])
            # SubprocVecEnv returns float64 rewards, DummyVecEnv and the adapter float32
            assert_same(ra[1], rb[1].astype(np.float32))
    finally:
        b.close()


def test_make_sb3_vec_env_rejects_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend"):
        make_sb3_vec_env("lrm/Critical-v0", 2, backend="threads")
