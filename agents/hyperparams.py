"""Hyperparameter files in the rl-baselines3-zoo format, read safely.

``hyperparams/<algo>.yml`` maps an env id (or ``default``) to an entry such as::

    lrm/Critical-v0:
      n_envs: 8
      n_timesteps: !!float 6e5
      policy: 'MlpPolicy'
      normalize: true                      # or "dict(norm_obs=True, norm_reward=False)"
      learning_rate: lin_3e-4              # linear decay from 3e-4 to 0
      policy_kwargs: "dict(net_arch=[64, 64], activation_fn=nn.Tanh)"

Every other key is a keyword argument of the SB3 algorithm class and is checked against its
signature. Strings such as ``policy_kwargs`` are parsed with :func:`safe_eval`, which accepts
literals, ``dict(...)`` and a short list of torch activation names, never arbitrary code.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

#: Keys handled by train.py itself rather than passed to the algorithm.
SPECIAL_KEYS = ("n_envs", "n_timesteps", "policy", "normalize", "policy_kwargs", "env_kwargs",
                "env_wrapper", "noise_type", "noise_std")

#: Keys of the zoo format that this project does not support.
UNSUPPORTED_KEYS = ("frame_stack", "callback", "vec_env_wrapper", "replay_buffer_class",
                    "replay_buffer_kwargs")

#: Names usable inside a hyperparameter expression, e.g. ``activation_fn=nn.Tanh``.
_ACTIVATIONS = ("ReLU", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU", "Sigmoid", "Softplus")


class HyperparamError(ValueError):
    """A hyperparameter file or entry is invalid (the message names the key and file)."""


def _allowed_names() -> dict[str, Any]:
    from torch import nn, optim

    names: dict[str, Any] = {}
    for a in _ACTIVATIONS:
        for prefix in ("nn.", "th.nn.", "torch.nn."):
            names[prefix + a] = getattr(nn, a)
    for o in ("Adam", "AdamW", "RMSprop", "SGD"):
        for prefix in ("optim.", "th.optim.", "torch.optim."):
            names[prefix + o] = getattr(optim, o)
    return names


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def safe_eval(text: str, what: str = "expression") -> Any:
    """Evaluate a literal-like expression without running code.

    Accepts numbers, strings, booleans, None, lists, tuples, dicts, ``dict(key=value, ...)``,
    unary minus and the names ``nn.<Activation>`` / ``th.optim.<Optimizer>``.

    Raises:
        HyperparamError: anything else (function calls, attribute access, operators...).
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise HyperparamError(f"{what}: cannot parse {text!r} ({exc.msg})") from None
    names = _allowed_names()

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise HyperparamError(f"{what}: '**' is not allowed in {text!r}")
            return {ev(k): ev(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise HyperparamError(f"{what}: unary sign on a non-number in {text!r}")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "dict" and not node.args:
            if any(k.arg is None for k in node.keywords):
                raise HyperparamError(f"{what}: '**' is not allowed in {text!r}")
            return {k.arg: ev(k.value) for k in node.keywords}
        name = _dotted(node)
        if name is not None and name in names:
            return names[name]
        if name in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[name]
        raise HyperparamError(
            f"{what}: {ast.unparse(node)!r} is not allowed in {text!r}; use literals, "
            f"dict(...), and nn.<Activation> ({', '.join(_ACTIVATIONS)})")

    return ev(tree.body)


def read_entry(path: str | Path, env_id: str) -> dict[str, Any]:
    """The entry of ``env_id`` (else ``default``) of a zoo-format YAML file, as a dict.

    Raises:
        HyperparamError: missing or unreadable file, not a mapping, no entry for the id.
    """
    path = Path(path)
    if not path.is_file():
        raise HyperparamError(f"hyperparameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HyperparamError(f"hyperparameter file {path} is not valid YAML: {first}") from None
    if not isinstance(data, Mapping):
        raise HyperparamError(f"hyperparameter file {path} must map env ids to entries, "
                              f"got {type(data).__name__}")
    key = env_id if env_id in data else "default"
    if key not in data:
        raise HyperparamError(f"hyperparameter file {path} has no entry for {env_id!r} and no "
                              f"'default' entry")
    entry = data[key]
    if entry is None:
        entry = {}
    if not isinstance(entry, Mapping):
        raise HyperparamError(f"hyperparameter entry {key!r} of {path} must be a mapping")
    return dict(entry)


def linear_schedule(initial: float) -> Callable[[float], float]:
    """Learning rate that decays linearly from ``initial`` to 0 over training."""
    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial
    return schedule


def _number(entry: Mapping[str, Any], key: str, lo: float, integer: bool, where: str) -> Any:
    v = entry[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise HyperparamError(f"{where}: {key} must be a number >= {lo}, got {v!r}")
    if integer and float(v) != int(v):
        raise HyperparamError(f"{where}: {key} must be an integer >= {lo}, got {v!r}")
    if v < lo:
        raise HyperparamError(f"{where}: {key} must be >= {lo}, got {v!r}")
    return int(v) if integer else float(v)


def _import(dotted: str, where: str) -> Any:
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        raise HyperparamError(f"{where}: env_wrapper {dotted!r} cannot be imported") from None


#: Ranges of numeric hyperparameters: key -> (low, high, low excluded, integer).
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "n_steps": (1, math.inf, False, True),
    "batch_size": (1, math.inf, False, True),
    "n_epochs": (1, math.inf, False, True),
    "buffer_size": (1, math.inf, False, True),
    "target_update_interval": (1, math.inf, False, True),
    "learning_starts": (0, math.inf, False, True),
    "learning_rate": (0, math.inf, True, False),
    "clip_range": (0, math.inf, True, False),
    "max_grad_norm": (0, math.inf, True, False),
    "gamma": (0, 1, False, False),
    "gae_lambda": (0, 1, False, False),
    "tau": (0, 1, True, False),
    "ent_coef": (0, math.inf, False, False),
    "vf_coef": (0, math.inf, False, False),
    "exploration_fraction": (0, 1, False, False),
    "exploration_initial_eps": (0, 1, False, False),
    "exploration_final_eps": (0, 1, False, False),
    "noise_std": (0, math.inf, False, False),
}


def _check_numbers(entry: Mapping[str, Any], where: str) -> None:
    """Every number of an entry (outside ``env_kwargs``, which the env checks) is finite, and
    the keys of :data:`RANGES` lie in their range (a ``lin_<x>`` schedule: its start x)."""
    def walk(key: str, v: Any) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise HyperparamError(f"{where}: {key} must be finite, got {v!r}")
        if isinstance(v, Mapping):
            for k, x in v.items():
                walk(f"{key}.{k}", x)
        elif isinstance(v, (list, tuple)):
            for j, x in enumerate(v):
                walk(f"{key}[{j}]", x)

    for key, v in entry.items():
        if key != "env_kwargs":
            walk(key, v)
        if key not in RANGES:
            continue
        if isinstance(v, str) and v.startswith("lin_"):
            try:
                v = float(v[4:])
            except ValueError:
                continue  # reported with the schedules
            if not math.isfinite(v):
                raise HyperparamError(f"{where}: {key} must be finite, got {entry[key]!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue  # not a number (e.g. ent_coef: auto); SB3 checks it
        lo, hi, lo_open, integer = RANGES[key]
        if integer and float(v) != int(v):
            raise HyperparamError(f"{where}: {key} must be an integer >= {lo}, got {v!r}")
        if v < lo or (lo_open and v == lo) or v > hi:
            rng = f"{'(' if lo_open else '['}{lo}, {hi}]" if math.isfinite(hi) else \
                f"{'> ' if lo_open else '>= '}{lo}"
            raise HyperparamError(f"{where}: {key} must be {rng}, got {v!r}")


def resolve_entry(entry: Mapping[str, Any], algo_cls: type, n_actions: int | None,
                  where: str = "hyperparameters") -> dict[str, Any]:
    """Turn a raw entry into constructor arguments and train.py settings.

    Args:
        entry: Raw entry from :func:`read_entry`.
        algo_cls: The SB3 algorithm class (its signature validates the keys).
        n_actions: Dimension of a continuous action space (for ``noise_type``); 0 for a
            discrete one; None when not known yet (no action noise is built).
        where: Text naming the file and entry in error messages.

    Returns:
        A dict with ``algo_kwargs`` (for the constructor, ``policy`` excluded), ``policy``,
        ``n_envs``, ``n_timesteps`` (None if absent), ``normalize`` (VecNormalize kwargs or
        None), ``env_kwargs`` and ``env_wrapper`` (a callable or None).

    Raises:
        HyperparamError: unknown or unsupported key, or a value of the wrong type.
    """
    entry = dict(entry)
    _check_numbers(entry, where)
    for k in UNSUPPORTED_KEYS:
        if k in entry:
            raise HyperparamError(f"{where}: key {k!r} is not supported by train.py")
    params = inspect.signature(algo_cls.__init__).parameters
    allowed = set(params) - {"self", "env", "policy", "seed", "device", "verbose",
                             "tensorboard_log", "_init_setup_model"}
    unknown = sorted(set(entry) - allowed - set(SPECIAL_KEYS))
    if unknown:
        raise HyperparamError(f"{where}: unknown key(s) {unknown} for {algo_cls.__name__}; "
                              f"allowed: {sorted(allowed | set(SPECIAL_KEYS))}")
    out: dict[str, Any] = {"policy": entry.pop("policy", "MlpPolicy"), "n_envs": 1,
                           "n_timesteps": None, "normalize": None, "env_kwargs": {},
                           "env_wrapper": None}
    if not isinstance(out["policy"], str):
        raise HyperparamError(f"{where}: policy must be a policy name such as 'MlpPolicy'")
    if "n_envs" in entry:
        out["n_envs"] = _number(entry, "n_envs", 1, True, where)
        entry.pop("n_envs")
    if "n_timesteps" in entry:
        out["n_timesteps"] = _number(entry, "n_timesteps", 1, True, where)
        entry.pop("n_timesteps")
    norm = entry.pop("normalize", False)
    if isinstance(norm, str):
        norm = safe_eval(norm, f"{where}: normalize")
    if norm is True:
        norm = {}
    if norm is False or norm is None:
        out["normalize"] = None
    elif isinstance(norm, Mapping):
        out["normalize"] = dict(norm)
        if "gamma" in entry and "gamma" not in out["normalize"]:
            # as rl-zoo: the reward normaliser discounts with the algorithm's gamma
            out["normalize"]["gamma"] = entry["gamma"]
    else:
        raise HyperparamError(f"{where}: normalize must be true/false or dict(...), got {norm!r}")
    env_kwargs = entry.pop("env_kwargs", {}) or {}
    if isinstance(env_kwargs, str):
        env_kwargs = safe_eval(env_kwargs, f"{where}: env_kwargs")
    if not isinstance(env_kwargs, Mapping):
        raise HyperparamError(f"{where}: env_kwargs must be a mapping, got {env_kwargs!r}")
    out["env_kwargs"] = dict(env_kwargs)
    wrapper = entry.pop("env_wrapper", None)
    if wrapper is not None:
        kw: dict[str, Any] = {}
        if isinstance(wrapper, Mapping) and len(wrapper) == 1:  # {dotted.Class: {kwargs}}
            wrapper, kw = next(iter(wrapper.items()))
            kw = {} if kw is None else kw
            if not isinstance(kw, Mapping):
                raise HyperparamError(f"{where}: env_wrapper {wrapper!r}: its arguments must be "
                                      f"a mapping, got {kw!r}")
        if not isinstance(wrapper, str):
            raise HyperparamError(f"{where}: env_wrapper must be a dotted class path or "
                                  f"{{dotted.Class: {{argument: value}}}}")
        cls = _import(wrapper, where)
        out["env_wrapper"] = functools.partial(cls, **kw) if kw else cls
    pk = entry.pop("policy_kwargs", None)
    if isinstance(pk, str):
        pk = safe_eval(pk, f"{where}: policy_kwargs")
    if pk is not None and not isinstance(pk, Mapping):
        raise HyperparamError(f"{where}: policy_kwargs must be dict(...), got {pk!r}")
    noise_type = entry.pop("noise_type", None)
    noise_std = entry.pop("noise_std", 0.1)
    kwargs: dict[str, Any] = dict(entry)
    if pk:
        kwargs["policy_kwargs"] = dict(pk)
    for key in ("learning_rate", "clip_range"):
        v = kwargs.get(key)
        if isinstance(v, str):
            if not v.startswith("lin_"):
                raise HyperparamError(f"{where}: {key} must be a number or lin_<number>, got {v!r}")
            try:
                kwargs[key] = linear_schedule(float(v[4:]))
            except ValueError:
                raise HyperparamError(f"{where}: {key} {v!r} is not lin_<number>") from None
    if noise_type is not None and n_actions is not None:
        from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

        if n_actions == 0:
            raise HyperparamError(f"{where}: noise_type needs a continuous action space")
        import numpy as np

        classes = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}
        if noise_type not in classes:
            raise HyperparamError(f"{where}: noise_type must be one of {sorted(classes)}, "
                                  f"got {noise_type!r}")
        kwargs["action_noise"] = classes[noise_type](
            mean=np.zeros(n_actions), sigma=float(noise_std) * np.ones(n_actions))
    out["algo_kwargs"] = kwargs
    return out


def printable(entry: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-friendly copy of a raw entry (values that are not plain become strings)."""
    out: dict[str, Any] = {}
    for k, v in entry.items():
        out[k] = v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v)
    return out
