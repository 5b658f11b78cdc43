"""Connecting the controller to a Ray cluster, with one clear message for each way it fails."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from overnight import __version__
from overnight.errors import UsageError

INSTALL_HINT = 'the ray executor needs Ray on this machine: pip install "overnight[ray]"'
NAMESPACE = "overnight"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


def check_reachable(address: str) -> None:
    """Fail in seconds with a clear message instead of Ray's long retry loop."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port; let Ray interpret it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(
            f"[executor].address: cannot reach the Ray cluster at {address} ({exc}); start it "
            "with `ray start --head --port PORT` or fix the address"
        ) from None


def connect(ray: Any, address: str, runtime_env: dict[str, Any] | None = None) -> bool:
    """Connect the driver; False when the caller had connected already (then the caller,
    a notebook or the Python API, also disconnects)."""
    if ray.is_initialized():
        return False
    if address not in ("auto", "local") and "://" not in address:
        check_reachable(address)
    try:
        ray.init(
            address=address, namespace=NAMESPACE, log_to_driver=False,
            logging_level=logging.WARNING, ignore_reinit_error=True, runtime_env=runtime_env,
        )  # fmt: skip
    except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError…
        hint = (
            "no Ray cluster is running on this machine; start one with `ray start --head`, "
            'set [executor].address, or use address = "local" for a private one'
            if address == "auto"
            else "check [executor].address and that the cluster runs the same Ray version"
        )
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {exc}; {hint}") from None
    return True


def check_resources(ray: Any, address: str, num_cpus: float, num_gpus: float) -> None:
    """Refuse a request no node could ever take: such a task would wait forever."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for n in nodes:
        have = n["Resources"]
        if have.get("CPU", 0) >= num_cpus and have.get("GPU", 0) >= num_gpus:
            return
    listing = "; ".join(
        f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
        f"{n['Resources'].get('GPU', 0):g} GPU"
        for n in nodes
    )
    raise UsageError(
        f"no node of the Ray cluster at {address} can take one run ({num_cpus:g} CPU, "
        f"{num_gpus:g} GPU: [executor].num_cpus/num_gpus); nodes: {listing or 'none'}"
    )


def alive_nodes(ray: Any) -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def on_each_node(ray: Any, fn: Any, *args: Any, timeout: float = 120) -> list[Any]:
    """`fn(*args)` once on every alive node (no CPU needed); results or exceptions."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(fn)
    refs = [
        remote.options(
            num_cpus=0, max_retries=0, name=f"overnight {fn.__name__}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(*args)
        for node in alive_nodes(ray)
    ]  # fmt: skip
    if not refs:
        return []
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    out: list[Any] = []
    for ref in refs:
        if ref not in ready:
            out.append(TimeoutError(f"no answer within {timeout:g}s"))
            continue
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayError as exc:
            out.append(exc)
    return out


def _code_problem(ray: Any) -> str | None:
    from overnight.executors.ray import worker as ray_worker

    for answer in on_each_node(ray, ray_worker.probe):
        if isinstance(answer, Exception):
            cause = getattr(answer, "cause", None) or answer
            lines = str(cause).strip().splitlines()
            return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:300]
        if answer != ray_worker.PROTOCOL:
            here = ray_worker.PROTOCOL
            return f"a node runs another overnight version (protocol {answer}, here {here})"
    return None


def ensure_code(ray: Any, address: str, owns: bool, ship: bool = False) -> bool:
    """Make sure every node can run overnight's worker side (the same version as here):
    when one cannot, reconnect sending this package along (Ray's py_modules). Returns
    whether the package is being shipped."""
    problem = None if ship else _code_problem(ray)
    if not ship and problem is None:
        return False
    hint = f'pip install "overnight[ray]=={__version__}" on every node'
    if not owns:
        raise UsageError(f"the Ray nodes cannot run overnight's worker ({problem}); {hint}")
    ray.shutdown()
    connect(ray, address, {"py_modules": [str(Path(__file__).resolve().parents[2])]})
    problem = _code_problem(ray)
    if problem is not None:
        ray.shutdown()
        raise UsageError(f"the Ray nodes cannot run overnight's worker: {problem}; {hint}")
    return True
