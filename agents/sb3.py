"""Trained stable-baselines3 models as policies: ``"ppo:runs/<run>/model.zip"``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

#: Algorithm name -> (SB3 class name, needs a discrete action space).
ALGOS: dict[str, tuple[str, bool]] = {
    "ppo": ("PPO", False),
    "a2c": ("A2C", False),
    "sac": ("SAC", False),
    "td3": ("TD3", False),
    "dqn": ("DQN", True),
    "recurrent_ppo": ("RecurrentPPO", False),  # sb3-contrib: PPO with an LSTM policy
}

#: Algorithms of sb3-contrib rather than stable-baselines3.
CONTRIB_ALGOS = ("recurrent_ppo",)

#: File name of the saved observation normaliser beside a model.
VECNORMALIZE_FILE = "vecnormalize.pkl"


def check_model_zip(path: str | Path) -> None:
    """Raise ValueError (naming ``path``) unless it is an intact stable-baselines3 model zip.

    Checks what a load needs without importing torch: a zip archive whose members pass their
    CRC check, with the ``data`` (JSON) and ``policy.pth`` members SB3's ``save`` writes.
    """
    import json
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = sorted({"data", "policy.pth"} - names)
            if missing:
                raise ValueError(f"{path} is not a saved stable-baselines3 model (no "
                                 f"{', '.join(missing)} in the zip)")
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"{path} is damaged (member {bad} fails its CRC check)")
            data = json.loads(zf.read("data"))
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a saved stable-baselines3 model (not a zip "
                         f"file)") from None
    except (OSError, EOFError, RuntimeError, UnicodeDecodeError, zlib.error,
            zipfile.LargeZipFile) as exc:
        raise ValueError(f"{path} cannot be read ({exc})") from None
    except json.JSONDecodeError:
        raise ValueError(f"{path} is damaged (its data member is not JSON)") from None
    if not isinstance(data, dict) or "policy_class" not in data:
        raise ValueError(f"{path} is not a saved stable-baselines3 model (no policy_class "
                         f"in its data)")


def algo_class(algo: str) -> type:
    """The SB3 class of an algorithm name (``ppo``, ``a2c``, ``sac``, ``td3``, ``dqn``, or
    ``recurrent_ppo`` from sb3-contrib)."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; known: {sorted(ALGOS)}")
    if algo in CONTRIB_ALGOS:
        import sb3_contrib

        return getattr(sb3_contrib, ALGOS[algo][0])
    import stable_baselines3 as sb3

    return getattr(sb3, ALGOS[algo][0])


class SB3Policy:
    """A saved SB3 model (and its VecNormalize statistics, if saved beside it) as a policy.

    Observations are normalised with the saved running mean and variance exactly as during
    training, so the model sees what it was trained on.
    """

    def __init__(self, model: Any, normalizer: Any | None = None, name: str = "sb3",
                 action_map: Any | None = None) -> None:
        self.model = model
        self.normalizer = normalizer
        #: Map from the model's actions to the env's (a training-time action wrapper), or None.
        self.action_map = action_map
        self.name = name
        self.observation_space = model.observation_space
        self.action_space = model.action_space

    def predict(self, observation: Any, state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """SB3 ``predict`` after applying the saved observation normalisation."""
        obs = np.asarray(observation, dtype=np.float32)
        if self.normalizer is not None:
            obs = self.normalizer.normalize_obs(obs).astype(np.float32)
        action, state = self.model.predict(obs, state=state, episode_start=episode_start,
                                           deterministic=deterministic)
        if self.action_map is not None:
            if getattr(self.action_map, "needs_obs", False):  # residual mode: raw observation
                action = self.action_map(action, np.asarray(observation))
            else:
                action = self.action_map(action)
        return action, state


def load_sb3_policy(spec: str, device: str = "cpu", env: Any = None) -> SB3Policy:
    """Load ``"algo:path/to/model.zip"`` (``vecnormalize.pkl`` beside it is used if present).

    If ``action_wrapper.json`` lies beside the model, the model was trained through an action
    wrapper of :mod:`agents.wrappers`; its map is applied to every predicted action. A
    residual map (:mod:`agents.residual`) rebuilds its heuristic from the public config of
    ``env`` if given (the env the policy will act in, e.g. a held-out id), else from the
    training config saved in the spec.

    Raises:
        ValueError: unknown algorithm or malformed spec.
        FileNotFoundError: the model file does not exist.
    """
    if ":" not in spec:
        raise ValueError(f"a trained policy is given as ALGO:PATH, e.g. ppo:runs/x/model.zip; "
                         f"got {spec!r}")
    algo, path_str = spec.split(":", 1)
    cls = algo_class(algo.lower())
    path = Path(path_str)
    if path.is_dir():
        path = path / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    model = cls.load(str(path), device=device)
    normalizer = None
    norm_path = path.parent / VECNORMALIZE_FILE
    if norm_path.is_file():
        with open(norm_path, "rb") as fh:
            normalizer = pickle.load(fh)
        normalizer.training = False
    amap = None
    wrapper_path = path.parent / "action_wrapper.json"
    if wrapper_path.is_file():
        import json

        from agents.wrappers import action_map

        wspec = json.loads(wrapper_path.read_text())
        if env is not None and "config" in wspec:  # the residual mode: the env's heuristic
            wspec["config"] = env.unwrapped.config.to_dict()
        amap = action_map(wspec)
    return SB3Policy(model, normalizer, name=spec, action_map=amap)
