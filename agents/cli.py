"""What ``train.py`` and ``evaluate.py`` share: usage errors, output checks, signal exits and
worker processes that die with their parent (atomic file writes: :mod:`agents.files`).

* :class:`UsageError`: bad command-line input, reported as one line with exit code 2, and
  :class:`OneLineParser`, argparse reporting its errors the same way.
* :func:`parse_env_kwargs`: ``--env-kwarg KEY=VALUE`` items typed by their FleetConfig field,
  the same in both scripts.
* :func:`check_out_dir`: an output directory that is a file, or cannot be written, is found
  before any work starts (nothing is created to check it but a probe that is removed again).
* :func:`exit_on_signals` / :func:`signal_exit_code`: SIGTERM ends the program the way Ctrl-C
  does (a :class:`KeyboardInterrupt`, so ``finally`` blocks and context managers run), with
  the shell's exit code ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).
* :func:`watch_parent`: called first in a worker process, makes it die with its parent (on
  Linux ``prctl(PR_SET_PDEATHSIG)``, elsewhere a thread polling the parent's pid) and leaves
  SIGINT to the parent, which ends its workers itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """Bad command-line input; reported in one line with exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr with exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        """Print ``message`` as one line and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# --------------------------------------------------------------------------- output checks
def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Raise :class:`UsageError` unless ``path`` is, or can be made, a writable directory.

    The nearest existing ancestor must be a directory in which a directory can be created
    (tried with a probe that is removed at once: permissions, read-only file systems and
    full disks show up as they would later). Nothing is left behind.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option}: {p} exists and is not a directory")
    anc = p.absolute()
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"{option}: cannot create {p}: {anc} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=anc, prefix=".write-test-"))
    except OSError as exc:
        raise UsageError(f"{option}: cannot write to {anc} ({exc.strerror or exc})") from None
    return p


# --------------------------------------------------------------------------- env overrides
def _field_types() -> dict[str, Any]:
    from envs.config import FleetConfig

    return typing.get_type_hints(FleetConfig)


def parse_env_kwarg(item: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value typed by the FleetConfig field).

    A tuple field takes comma-separated values, optionally in parentheses, or a JSON list
    (``class_deadlines=0,2,6,12``, ``harvest_months=[6,7]``; empty: ``()``); a float takes
    ``inf``; a bool ``true``/``false``/``1``/``0``; a string is kept as given.

    Raises:
        UsageError: no ``=``, unknown field, or a value of the wrong type.
    """
    if "=" not in item:
        raise UsageError(f"--env-kwarg expects KEY=VALUE, got {item!r}")
    key, raw = (s.strip() for s in item.split("=", 1))
    types = _field_types()
    if key not in types:
        raise UsageError(f"--env-kwarg: unknown FleetConfig field {key!r}; known: "
                         f"{', '.join(sorted(types))}")
    typ = types[key]

    def scalar(t: Any, s: str) -> Any:
        if t is int:
            return int(s)
        if t is float:
            return float(s)
        if t is bool:
            if s.lower() not in ("true", "false", "1", "0"):
                raise ValueError(s)
            return s.lower() in ("true", "1")
        return s

    try:
        if typing.get_origin(typ) is tuple:
            inner = typing.get_args(typ)[0]
            parts = json.loads(raw) if raw.startswith("[") else raw.strip("()").split(",")
            value: Any = tuple(scalar(inner, str(x).strip()) for x in parts if str(x).strip())
        else:
            value = scalar(typ, raw)
    except (ValueError, json.JSONDecodeError):
        name = getattr(typ, "__name__", str(typ))
        raise UsageError(f"--env-kwarg {key}: expected {name}, got {raw!r}") from None
    return key, value


def parse_env_kwargs(items: Iterable[str]) -> dict[str, Any]:
    """The ``--env-kwarg`` items of a command line as ``gym.make`` overrides (later wins)."""
    return dict(parse_env_kwarg(item) for item in items)


# --------------------------------------------------------------------------- signals
class Terminated(KeyboardInterrupt):
    """SIGTERM (or another signal) turned into an interrupt; ``signum`` tells which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_exit_code(exc: BaseException) -> int:
    """The shell's exit code of an interrupt: 128 + signal number (130 for Ctrl-C)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def exit_on_signals(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """While active, each of ``signals`` raises :class:`Terminated` in the main thread and
    SIGINT raises KeyboardInterrupt (Python's own handler, also where a script replaced it
    while its modules loaded); the previous handlers come back afterwards. Does nothing
    outside the main thread (where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_terminated) for s in signals}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


# --------------------------------------------------------------------------- workers
#: ``prctl`` option that sends the calling process a signal when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)`` through ctypes; False where it is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent_pid: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(1)


def watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Make this (worker) process die with the process ``parent_pid`` that started it.

    The kernel kills it when its parent dies (``PR_SET_PDEATHSIG`` with SIGKILL, Linux),
    elsewhere a daemon thread checks the parent's pid every ``interval`` seconds. A parent
    already gone ends it at once. SIGINT is ignored and SIGTERM gets its default action: a
    Ctrl-C in the terminal reaches the whole process group, and the parent then ends its
    workers itself (no traceback per worker).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not _set_parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_poll_parent, args=(parent_pid, interval), daemon=True,
                         name="watch-parent").start()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
