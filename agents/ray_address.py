"""``--ray-address``: checked in a few seconds before Ray is asked to join it.

``ray.init(address=...)`` waits a long time where no Ray cluster answers (Ray 2.60 on Linux:
24 s for an unroutable host, over 80 s for a port nobody listens on, 34 s for ``ray://`` with
no Ray Client server, and ``auto`` joins any Ray running on the machine, even one started
inside another user's program). Every entry point that takes ``--ray-address`` (train.py
grids and ``--tune``, ``evaluate.py``, ``python -m agents.leaderboard``) calls
:func:`check_ray_address` first, before it writes anything:

* ``local`` (or no address): a Ray started in this process; nothing to check.
* ``auto``: the cluster in ``RAY_ADDRESS``, else the one last started with ``ray start`` on
  this machine (the address Ray records in ``<Ray temp dir>/ray_current_cluster``); neither:
  an error.
* ``HOST:PORT`` (the head's GCS port, 6379 by default) or ``ray://HOST:PORT`` (its Ray Client
  server, 10001 by default): within :data:`PROBE_TIMEOUT_S` seconds the server there must
  answer one gRPC call of the GCS (or of the Ray Client server), see :func:`probe`. This
  checks that a Ray head listens there, not that its Ray version or its authentication
  token match: Ray reports those itself when it joins (one line, exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

from agents.cli import UsageError

#: Seconds the check of a ``--ray-address`` may take (name lookup, connection and the reply
#: to one gRPC call together).
PROBE_TIMEOUT_S = 3.0
_HINT_GCS = 'start one with "ray start --head --port {port}" on {host}, or check the address'
_HINT_CLIENT = 'start one with "ray start --head" on {host} (its Ray Client server listens ' \
               'on 10001), or check the address'


def ray_temp_dir() -> Path:
    """Ray's temporary directory (``$RAY_TMPDIR/ray``, ``$TMPDIR/ray`` or ``/tmp/ray``), where
    ``ray start`` records the address of the cluster it started."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(base) / "ray"


def _resolve_auto() -> str:
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env not in ("auto", "local"):
        return env
    path = ray_temp_dir() / "ray_current_cluster"
    try:
        addr = path.read_text().strip()
    except OSError:
        addr = ""
    if not addr:
        raise UsageError(f'--ray-address auto: no Ray cluster started with "ray start" on '
                         f'this machine (no {path}, RAY_ADDRESS unset); start one with '
                         f'"ray start --head", or give the head\'s HOST:PORT')
    return addr


def _split(address: str, shown: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"--ray-address {shown}: expected auto, local, HOST:PORT or "
                         f"ray://HOST:PORT (PORT in [1, 65535])")
    return host, int(port)


#: What :func:`probe` returns for a head that asks for Ray's authentication token.
TOKEN = "token"


def probe(host: str, port: int, client: bool = False,
          timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a Ray head answers at ``host:port`` within ``timeout`` seconds,
    :data:`TOKEN` when it answers that it needs Ray's authentication token, else what went
    wrong (a few words).

    One gRPC call without arguments: ``NodeInfoGcsService/GetClusterId`` of a GCS, or
    ``RayletDriver/ClusterInfo`` of a Ray Client server (``client``). Any reply of that
    service counts ("unauthenticated": :data:`TOKEN`); "unimplemented" (some other gRPC or
    HTTP/2 server, such as a proxy answering for any address), "unavailable" (nothing
    listens, or the host is unknown) and no reply within ``timeout`` do not.
    """
    try:
        import grpc
    except ImportError:
        raise UsageError('--ray-address needs Ray: pip install -e ".[ray]"') from None
    method = "/ray.rpc.RayletDriver/ClusterInfo" if client else \
        "/ray.rpc.NodeInfoGcsService/GetClusterId"
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
    try:
        channel.unary_unary(method)(b"", timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return TOKEN
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"no answer from {host}:{port} within {timeout:g} s"
        if code == grpc.StatusCode.UNIMPLEMENTED:
            what = "Ray Client server" if client else "Ray head (GCS)"
            return f"{host}:{port} answers but is not a {what}"
        detail = " ".join((exc.details() or "").split())
        if "refused" in detail.lower():
            return f"nothing listens on {host}:{port} (connection refused)"
        if "dns" in detail.lower() or "resolution" in detail.lower():
            return f"unknown host {host}"
        return f"cannot reach {host}:{port} ({code.name.lower()}: {detail[:120]})"
    finally:
        channel.close()
    return None


def check_ray_address(address: str | None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """The address to give ``ray.init`` (None: start Ray here), after checking that a Ray
    head answers there (see the module docstring).

    Raises:
        UsageError: one line naming ``--ray-address``, the address, what failed and what to
            do. Takes at most about ``timeout`` seconds (plus a name lookup).
    """
    if address is None or address.strip() in ("", "local"):
        return None
    shown = address = address.strip()
    if address == "auto":
        address = _resolve_auto()
        shown = f"auto ({address})"
    if address.startswith("ray://"):
        host, port = _split(address[len("ray://"):], shown)
        hint = _HINT_CLIENT.format(host=host)
    else:
        if "://" in address:
            raise UsageError(f"--ray-address {shown}: expected auto, local, HOST:PORT or "
                             f"ray://HOST:PORT")
        host, port = _split(address, shown)
        hint = _HINT_GCS.format(host=host, port=port)
    problem = probe(host, port, client=address.startswith("ray://"), timeout=timeout)
    if problem == TOKEN:
        _use_token(shown)
    elif problem is not None:
        raise UsageError(f"--ray-address {shown}: {problem}; {hint}")
    return address


def _use_token(shown: str) -> None:
    """Make Ray send its authentication token (the head asks for one), or raise UsageError
    when this machine has none.

    ``ray.init`` with an explicit address does not turn token authentication on by itself
    (it waits about 20 s and fails with "Failed to connect"): ``RAY_AUTH_MODE=token`` does,
    read again by Ray's configuration when Ray is already imported.
    """
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "token":
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if mode == "disabled" or not (os.environ.get("RAY_AUTH_TOKEN") or path.is_file()):
        why = "RAY_AUTH_MODE=disabled" if mode == "disabled" else \
            f"no {path}, RAY_AUTH_TOKEN unset"
        raise UsageError(f"--ray-address {shown}: the cluster asks for Ray's authentication "
                         f"token and this machine gives none ({why}); copy the head's "
                         f"~/.ray/auth_token to {path} (or set RAY_AUTH_TOKEN)")
    os.environ["RAY_AUTH_MODE"] = "token"
    import sys

    if "ray._raylet" in sys.modules:
        sys.modules["ray._raylet"].Config.initialize("")


def join_error(address: str, exc: BaseException) -> UsageError:
    """The one-line error for a ``ray.init`` that failed to join ``address``."""
    msg = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return UsageError(f"--ray-address {address}: Ray could not join the cluster: "
                      f"{type(exc).__name__}: {msg[:300]}")


# --------------------------------------------------------------------------- the nodes
def _node_report(root: str, shared: str | None) -> dict:
    """What one node has (runs as a Ray task pinned to it)."""
    import importlib
    import socket

    rep = {"host": socket.gethostname(), "train_py": os.path.isfile(os.path.join(root,
                                                                                 "train.py")),
           "shared": shared is None or os.path.isdir(shared), "import": None}
    try:
        for mod in ("envs", "agents.evaluation"):
            importlib.import_module(mod)
    except Exception as exc:  # noqa: BLE001 - reported by the driver
        rep["import"] = f"{type(exc).__name__}: {exc}"
    return rep


def check_nodes(ray, address: str, root: Path, shared_parent: Path | None = None,
                timeout: float = 120.0) -> int:
    """Check every alive node of the cluster joined at ``address``: the project at ``root``
    (``train.py`` there, ``envs`` and ``agents`` importable) and, with ``shared_parent``, a
    directory made there by this process visible on the node (``--out`` on a file system
    every node shares). Returns the number of nodes; raises UsageError naming the first node
    that lacks something. One small Ray task per node, pinned to it.
    """
    import tempfile

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    marker = None
    if shared_parent is not None:
        marker = tempfile.mkdtemp(dir=shared_parent, prefix=".ray-nodes-check-")
    try:
        task = ray.remote(num_cpus=0)(_node_report)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(root), marker) for n in nodes]
        try:
            reports = ray.get(refs, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a node that cannot run the check
            raise UsageError(f"--ray-address {address}: a node did not run the check of the "
                             f"project within {timeout:g} s ({type(exc).__name__})") from None
    finally:
        if marker is not None:
            os.rmdir(marker)
    for n, rep in zip(nodes, reports):
        where = f"node {n.get('NodeManagerAddress')} ({rep['host']})"
        if not rep["train_py"] or rep["import"]:
            why = f"no {root}/train.py" if not rep["train_py"] else rep["import"]
            raise UsageError(f"--ray-address {address}: {where}: {why}; install the project "
                             f"at {root} on every node (docs/scaling.md)")
        if not rep["shared"]:
            raise UsageError(f"--ray-address {address}: {where} does not see {shared_parent}; "
                             f"--out must be on a file system every node mounts at the same "
                             f"path (docs/scaling.md)")
    return len(nodes)


def start_or_join(ray, address: str | None, num_cpus: int | None, root: Path,
                  shared_dir: Path | None = None) -> None:
    """``ray.init`` for the project's Ray users (grids, ``evaluate.py``'s pool).

    Without an address (or ``local``): a new Ray on this machine (``num_cpus`` caps it), never
    one ``ray.init()`` would find (``RAY_ADDRESS``, a cluster of ``ray start``). Otherwise the
    address is checked first (:func:`check_ray_address`), a failure to join is one line
    (:func:`join_error`), and the joined cluster's nodes are checked (:func:`check_nodes`:
    the project at ``root`` and, with ``shared_dir``, the nearest existing parent of it seen
    by every node); Ray is shut down again if that check fails. Workers get ``root`` on their
    ``PYTHONPATH``; no dashboard, no worker logs forwarded.
    """
    target = check_ray_address(address)
    kwargs: dict = {"include_dashboard": False, "log_to_driver": False,
                    "runtime_env": {"env_vars": {"PYTHONPATH": str(root)}}}
    if target is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(address=target or "local", **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure to join is reported in one line
        if target is None:
            raise
        raise join_error(address or "", exc) from None
    if target is None:
        return
    parent = None
    if shared_dir is not None:
        parent = shared_dir.absolute()
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    try:
        check_nodes(ray, address or "", root, parent)
    except BaseException:
        ray.shutdown()
        raise
