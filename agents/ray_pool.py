"""Evaluation jobs on a Ray cluster (``evaluate.py --ray-address``).

:class:`RayPool` has the part of :class:`concurrent.futures.Executor` that ``evaluate.py``
uses (``submit`` returning a :class:`~concurrent.futures.Future`, and ``shutdown``), and runs
each job as a Ray task with one CPU. A job names its function by module and name: a Ray
worker imports the module (``evaluate``, ``agents.*``) from the project root, which Ray puts
on its ``PYTHONPATH``; a cluster's machines need the project at the same path.

Ray is imported only when a pool is made.
"""

from __future__ import annotations

import importlib
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from agents.cli import UsageError

#: The project root (where ``evaluate.py`` lives).
ROOT = Path(__file__).resolve().parent.parent
#: The install hint printed when Ray is missing.
INSTALL_HINT = 'a Ray address needs Ray: pip install -e ".[ray]" (or pip install "ray[tune]")'


def _call(module: str, name: str, args: tuple) -> Any:
    """Run ``module.name(*args)`` (in a Ray worker)."""
    return getattr(importlib.import_module(module), name)(*args)


class RayPool:
    """Jobs as Ray tasks on the cluster at ``address`` (``local``: a Ray started here)."""

    def __init__(self, address: str, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError(INSTALL_HINT) from None
        self._ray = ray
        self._own = not ray.is_initialized()
        if self._own:
            from agents.ray_address import start_or_join

            start_or_join(ray, address, num_cpus, ROOT)
        self._remote = ray.remote(num_cpus=1)(_call)

    @property
    def cpus(self) -> int:
        """CPUs of the cluster."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def submit(self, fn: Any, *args: Any) -> Future:
        """Run ``fn(*args)`` as a Ray task; ``fn`` is a module-level function."""
        module = fn.__module__
        if module == "__main__":
            module = Path(getattr(importlib.import_module("__main__"), "__file__", "")).stem
        return self._remote.remote(module, fn.__name__, args).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Shut Ray down when this pool started it."""
        if self._own and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
