"""Starting or joining Ray, one way for every job (curation, benchmark scoring, training, encoding)."""

from __future__ import annotations

import os
import socket
from typing import Any


def _reachable(host_port: str, timeout_s: float = 3.0) -> bool:
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def connect(
    address: str | None, num_cpus: int, object_store_mb: int | None = None, log_to_driver: bool = True
) -> bool:
    """Start or join Ray; returns True when this call started a local instance (the caller then shuts it down).
    Nothing happens when this process is already connected.

    Without an address the job always starts its own local instance (``address="local"``), even where an earlier
    ``ray start`` or a test cluster left Ray's address file behind: joining a stranger's cluster by accident is
    worse than starting a new one. ``auto`` joins the cluster of that file (or ``RAY_ADDRESS``); ``host:port`` or
    ``ray://host:port`` joins that one. A stale address is an error that says so, instead of a long hang.
    """
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": log_to_driver}
    if not address:
        init = dict(address="local", num_cpus=num_cpus, **common)
        store = os.environ.get("ALCHEMIST_RAY_OBJECT_STORE_MB") or object_store_mb
        if store:
            init["object_store_memory"] = int(store) * 1024**2
        ray.init(**init)
        return True
    target = address
    if not address.startswith("ray://"):
        from ray._private.services import canonicalize_bootstrap_address

        try:
            target = canonicalize_bootstrap_address(address) or ""
        except ConnectionError as err:
            raise ValueError(f"--ray-address {address}: {err}. Start one with `ray start --head`.") from err
        if not target:
            raise ValueError(
                f"--ray-address {address}: no running Ray cluster was found on this machine; start one with "
                "`ray start --head`, pass its host:port, or drop --ray-address to run on a fresh local instance"
            )
    probe = target.removeprefix("ray://")
    if not _reachable(probe):
        raise ValueError(
            f"--ray-address {address}: nothing answers at {probe} (a stale address: the cluster that wrote it is "
            "gone). Start the cluster with `ray start --head`, pass the right host:port, or drop --ray-address"
        )
    try:
        ray.init(address=target, **common)
    except (ConnectionError, RuntimeError) as err:
        raise ValueError(f"--ray-address {address}: could not join the Ray cluster at {target}: {err}") from err
    return False
