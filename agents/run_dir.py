"""The run directory of a training run: its default name, ``config.json`` (written atomically,
read back on a resume), the monitor files a resume cuts back to its checkpoint, the
TensorBoard logger, and the clean-up of a run that could not start."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from agents.cli import UsageError
from agents.train_config import ROOT, TrainConfig


def default_run_dir(cfg: TrainConfig) -> Path:
    """``runs/<env with / as _>__<algo>__seed<S>__<YYYYmmdd-HHMMSS>``."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return ROOT / "runs" / f"{cfg.env.replace('/', '_')}__{cfg.algo}__seed{cfg.seed}__{stamp}"


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    import gymnasium
    import numpy
    import stable_baselines3
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(),
            "gymnasium": gymnasium.__version__, "numpy": numpy.__version__,
            "stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__}


def atomic_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically (``config.json``)."""
    from agents.files import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def read_saved_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a run to resume (UsageError when missing or unreadable)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume: no run to resume in {run_dir} (config.json missing)")
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--resume: {path} cannot be read ({type(exc).__name__}); the run "
                         f"cannot be resumed") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("train"), dict)
            and isinstance(saved.get("hyperparams_raw"), dict)):
        raise UsageError(f"--resume: {path} is not the config.json of a training run")
    return saved


def monitor_sizes(monitor_dir: Path) -> dict[str, int]:
    """Byte size of each ``*.monitor.csv`` (recorded in a checkpoint's state)."""
    if not monitor_dir.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in sorted(monitor_dir.glob("*.monitor.csv"))}


def rewind_monitor_files(monitor_dir: Path, sizes: dict[str, int]) -> list[float | None]:
    """Cut each monitor file back to its size at the checkpoint (the episodes that ended
    after it are replayed by the resumed run) and return each file's ``t_start`` header.

    Returns:
        Per file ``0.monitor.csv``, ``1.monitor.csv``, ... (in ``sizes``), the creation time
        of the run's monitor (None when its header cannot be read).
    """
    t_starts: list[float | None] = []
    for name, size in sorted(sizes.items(), key=lambda kv: int(kv[0].split(".")[0])):
        path = monitor_dir / name
        t0 = None
        if path.is_file():
            if path.stat().st_size > int(size):
                with open(path, "r+b") as fh:
                    fh.truncate(int(size))
            with open(path) as fh:
                first = fh.readline()
            try:
                t0 = float(json.loads(first[1:])["t_start"]) if first.startswith("#") else None
            except (ValueError, KeyError, TypeError):
                t0 = None
        t_starts.append(t0)
    return t_starts


def continue_monitor_clock(venv: Any, t_starts: list[float | None]) -> None:
    """Let the monitors of a resumed run count time from the run's first start (the ``t``
    column goes on forward instead of starting again at 0)."""
    from agents.vec import FleetSB3VecEnv

    inner = venv
    while inner is not None and not isinstance(inner, FleetSB3VecEnv):
        inner = getattr(inner, "venv", None)
    if inner is not None:
        if t_starts and t_starts[0] is not None:
            inner._t_start = t_starts[0]
        return
    for i, t0 in enumerate(t_starts[:venv.num_envs]):
        if t0 is not None:
            venv.set_attr("t_start", t0, indices=[i])


def make_logger(folder: Path, verbose: int, purge_step: int | None = None) -> Any:
    """SB3 logger writing TensorBoard events to ``folder`` (and stdout when ``verbose``).

    With ``purge_step`` the event file starts with TensorBoard's restart marker: readers
    drop the events of earlier files at steps >= ``purge_step`` (those a resumed run
    replays), so the resumed run reads as one run.
    """
    from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat, make_output_format
    from torch.utils.tensorboard import SummaryWriter

    class _TensorBoard(TensorBoardOutputFormat):
        def __init__(self) -> None:
            self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)
            self._is_closed = False

    folder.mkdir(parents=True, exist_ok=True)
    if purge_step is not None:
        _wait_for_a_later_event_file_name(folder)
    formats = [make_output_format("stdout", str(folder))] if verbose else []
    return Logger(folder=str(folder), output_formats=[*formats, _TensorBoard()])


def _wait_for_a_later_event_file_name(folder: Path, most: float = 2.0) -> None:
    """Wait (at most ``most`` seconds) until a new event file's name sorts after those in
    ``folder``. TensorBoard reads the files in name order, ``events.out.tfevents.<unix
    seconds>.<host>.<pid>...``: a run resumed within the second its killed predecessor
    started would otherwise be read first (the lower pid), before the events it purges."""
    stamps = []
    for p in folder.glob("events.out.tfevents.*"):
        with contextlib.suppress(IndexError, ValueError):
            stamps.append(int(p.name.split(".")[3]))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if 0 < wait <= most:
            time.sleep(wait)


def discard_run_dir(run_dir: Path, before: set[str] | None) -> None:
    """Remove what a fresh run wrote before it could start: the whole directory if it did
    not exist (``before`` None), else only the entries it did not hold before."""
    if before is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in set(os.listdir(run_dir)) - before if run_dir.is_dir() else ():
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
