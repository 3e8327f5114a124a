"""Pod networking: one network namespace per pod on a bridge this cluster owns.

Each pod gets its own IP (so two pods can both bind 0.0.0.0:8080 and reach
each other by address, as on a real cluster) without a CNI plugin: a Linux
bridge with an address from a private /22, and per pod a netns joined to it by
a veth pair. Nothing is routed off the machine (TOOLCHAIN: no NAT, no default
route in pods); the host reaches pods through the bridge address, which is
how the kubelet probes them and tests talk to them.

Names derive from a short hash of the cluster directory, so several clusters
(parallel test runs) never collide, and a restarted kubelet finds exactly the
leftovers of its own cluster to clean up. The subnet is chosen once per
cluster directory, avoiding every route already on the machine, under a host
wide lock so two clusters starting together cannot pick the same one.

Pods on virtual (kwok-like) nodes get addresses from 100.64.0.0/10 that exist
nowhere: nothing ever connects to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pot import errors

NETNS_DIR = Path("/run/netns")
LOCK_FILE = Path("/run/pot-localcluster-net.lock")
#: Subnets are /22 blocks (1,022 pods) carved from this range.
POOL = ipaddress.ip_network("10.200.0.0/13")
VIRTUAL_POOL = ipaddress.ip_network("100.64.0.0/10")


def tag(cluster_dir: Path) -> str:
    """Six hex digits naming this cluster's bridge, namespaces and veths."""
    return hashlib.sha256(str(cluster_dir.resolve()).encode()).hexdigest()[:6]


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    with LOCK_FILE.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    nets = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst in {"default", ""}:
            continue
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def _run(argv: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise errors.ClusterError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")


@dataclass(frozen=True, slots=True)
class Network:
    """This cluster's bridge and subnet (persisted in ``state_dir/network.json``)."""

    tag: str
    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        """The bridge's address: how the host (and probes) reach pods."""
        return str(self.subnet.network_address + 1)

    def netns(self, slot: int) -> str:
        """Network namespace name of the pod in ``slot``."""
        return f"pot{self.tag}-{slot}"

    def veth(self, slot: int) -> str:
        """Host-side veth name of the pod in ``slot`` (<= 15 chars)."""
        return f"pv{self.tag}{slot:x}"

    def address(self, slot: int) -> str:
        """Pod IP of ``slot`` (slot 0 is the gateway's neighbour, .2)."""
        return str(self.subnet.network_address + 2 + slot)

    @property
    def slots(self) -> int:
        """How many pods fit in the subnet."""
        return self.subnet.num_addresses - 3


def ensure_network(state_dir: Path, cluster_dir: Path) -> Network:
    """Create (or find) this cluster's bridge; idempotent across restarts."""
    state_dir.mkdir(parents=True, exist_ok=True)
    record = state_dir / "network.json"
    t = tag(cluster_dir)
    bridge = f"pb{t}"
    with _host_lock():
        subnet: ipaddress.IPv4Network | None = None
        if record.exists():
            subnet = ipaddress.IPv4Network(json.loads(record.read_text())["subnet"])
        exists = Path(f"/sys/class/net/{bridge}").exists()
        if subnet is None or not exists:
            used = [] if subnet else _used_networks()
            if subnet is None:
                subnet = next(  # type: ignore[assignment]  # subnets() of an IPv4 pool
                    (
                        s
                        for s in POOL.subnets(new_prefix=22)
                        if not any(s.overlaps(u) for u in used)
                    ),
                    None,
                )
                if subnet is None:
                    raise errors.ClusterError(f"no free /22 left in {POOL} for the pod network")
            if not exists:
                gateway = f"{subnet.network_address + 1}/{subnet.prefixlen}"
                _run(
                    ["ip", "-batch", "-"],
                    f"link add {bridge} type bridge\naddr add {gateway} dev {bridge}\n"
                    f"link set {bridge} up\n",
                )
            record.write_text(json.dumps({"subnet": str(subnet), "bridge": bridge}))
    return Network(tag=t, bridge=bridge, subnet=subnet)


async def _arun(argv: list[str], stdin: str | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(stdin.encode() if stdin else None)
    if proc.returncode != 0:
        raise errors.ClusterError(f"{' '.join(argv)}: {err.decode().strip() or proc.returncode}")


ADD_TRIES = 12
"""Attempts at a pod's namespace and veth while a leftover's are still going away (~8 s)."""


async def add_pod(net: Network, slot: int) -> str:
    """Create the pod's namespace and veth; returns its IP."""
    ns, veth, ip = net.netns(slot), net.veth(slot), net.address(slot)
    for attempt in range(ADD_TRIES):
        # A leftover from a crash: start clean. The kernel tears a deleted namespace down
        # asynchronously, so the host end of its veth can outlive the namespace's name for a
        # while (seen under load right after a control-plane restart: "File exists").
        if (NETNS_DIR / ns).exists() or Path(f"/sys/class/net/{veth}").exists():
            await remove_pod(net, slot)
        try:
            await _arun(
                ["ip", "-batch", "-"],
                f"netns add {ns}\n"
                f"link add {veth} type veth peer name eth0 netns {ns} address {mac(ip)}\n"
                f"link set {veth} master {net.bridge} up\n",
            )
            break
        except errors.ClusterError as exc:
            if "File exists" not in str(exc) or attempt == ADD_TRIES - 1:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))
    await _arun(
        ["ip", "-n", ns, "-batch", "-"],
        f"addr add {ip}/{net.subnet.prefixlen} dev eth0\nlink set eth0 up\nlink set lo up\n",
    )
    return ip


def mac(ip: str) -> str:
    """The pod's MAC, derived from its IP as the CNI bridge plugin does (0a:58:IP).

    A pod recreated with the same IP (a StatefulSet member) then has the same
    MAC, so its peers' ARP caches stay right and they reach it at once.
    """
    octets = ipaddress.IPv4Address(ip).packed
    return "0a:58:" + ":".join(f"{b:02x}" for b in octets)


async def remove_pod(net: Network, slot: int) -> None:
    """Delete the pod's namespace (its veth pair goes with it)."""
    ns = net.netns(slot)
    with contextlib.suppress(errors.ClusterError):
        await _arun(["ip", "netns", "del", ns])
    with contextlib.suppress(errors.ClusterError):
        if Path(f"/sys/class/net/{net.veth(slot)}").exists():
            await _arun(["ip", "link", "del", net.veth(slot)])


def leftover_namespaces(net_tag: str) -> list[str]:
    """Network namespaces of this cluster still on the machine."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"pot{net_tag}-"))


def teardown(state_dir: Path, cluster_dir: Path) -> None:
    """Remove every namespace, veth and the bridge of this cluster (for `down`)."""
    t = tag(cluster_dir)
    for ns in leftover_namespaces(t):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    for dev in Path("/sys/class/net").iterdir():
        if dev.name.startswith(f"pv{t}") or dev.name == f"pb{t}":
            subprocess.run(["ip", "link", "del", dev.name], capture_output=True, check=False)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / "network.json").unlink()


def virtual_address(index: int) -> str:
    """A never-routed address for a pod on a virtual node."""
    return str(VIRTUAL_POOL.network_address + 1 + (index % (VIRTUAL_POOL.num_addresses - 2)))


def cleanup_hint() -> str:
    """Shell lines a human can run if a cluster directory was lost (docs/tests)."""
    return "ip -br link | grep ^pb; ip netns list | grep ^pot"


__all__ = [
    "Network",
    "add_pod",
    "cleanup_hint",
    "ensure_network",
    "leftover_namespaces",
    "remove_pod",
    "tag",
    "teardown",
    "virtual_address",
]
