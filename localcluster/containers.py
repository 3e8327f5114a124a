"""Containers as local processes: start inside the pod's namespaces, stop, log.

A container is one process group started as::

    ip netns exec <pod netns> /bin/sh -c '<bind mounts>; exec "$@"' pot-container <argv>

``ip netns exec`` puts the process in the pod's network namespace *and* a new
mount namespace (iproute2 unshares one for every exec), so the bind mounts of
the pod's ``/etc/hosts`` and of its volumes at their mountPaths are seen by
that container alone and vanish with it. The shell ``exec``s the real
program, so the process the kubelet waits on, signals and ``nsenter``s for
``kubectl exec`` is the container's own.

Missing mountpoints are created as empty directories (or empty files, for a
single-file subPath) on the host: a bind mount needs a target, and the
contents stay private to the pod. stdout and stderr go straight to a log file
per container instance, which is what ``kubectl logs`` (and ``--previous``)
read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pot.localcluster import podspecs

STAGE = "/run/pot-stage"
"""Where volume sources are bound first, inside the pod's own mount namespace."""

IMAGE_ROOTS = sorted({str(Path(sys.prefix).resolve()), str(Path(__file__).resolve().parents[1])})
"""What stands in for the image: the venv and the repository. A real image's
files never lie under a pod's mountPaths; here they might (a clone under /tmp
and the chart's emptyDir at /tmp), so they are bound back over any volume."""


def _shadowed(root: str, targets: list[str]) -> bool:
    return any(root == t or root.startswith(t.rstrip("/") + "/") for t in targets)


def _mount_lines(spec: podspecs.ProcessSpec, hosts_file: str | None) -> list[str]:
    # Two phases: every source is bound to a private staging tmpfs before any
    # mountPath is mounted, so a volume at a path that contains other volumes'
    # sources (an emptyDir at /tmp while the kubelet keeps pod data under
    # /tmp/...) cannot hide them.
    lines = ["set -e"]
    if hosts_file:
        lines.append(f"mount --bind {shlex.quote(hosts_file)} /etc/hosts")
    if spec.mounts:
        lines.append(f"mkdir -p {STAGE}; mount -t tmpfs -o size=1m pot-stage {STAGE}")
    shadowed = [r for r in IMAGE_ROOTS if _shadowed(r, [m.target for m in spec.mounts])]
    for i, root in enumerate(shadowed):
        lines.append(
            f"mkdir -p {STAGE}/image{i}; mount --bind {shlex.quote(root)} {STAGE}/image{i}"
        )
    staged: list[tuple[str, podspecs.Mount]] = []
    for i, m in enumerate(spec.mounts):
        src, stage = shlex.quote(m.source), f"{STAGE}/{i}"
        if os.path.isdir(m.source) or not os.path.exists(m.source):
            lines.append(f"mkdir -p {stage}")
        else:
            lines.append(f": > {stage}")
        lines.append(f"mount --bind {src} {stage}")
        staged.append((stage, m))
    for stage, m in staged:
        dst = shlex.quote(m.target)
        if os.path.isdir(m.source) or not os.path.exists(m.source):
            lines.append(f"[ -d {dst} ] || mkdir -p {dst}")
        else:
            lines.append(f"[ -e {dst} ] || {{ mkdir -p $(dirname {dst}); : > {dst}; }}")
        lines.append(f"mount --bind {stage} {dst}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {dst}")
    for i, root in enumerate(shadowed):
        lines.append(
            f"mkdir -p {shlex.quote(root)}; mount --bind {STAGE}/image{i} {shlex.quote(root)}"
        )
    if spec.working_dir:
        wd = shlex.quote(spec.working_dir)
        lines.append(f"mkdir -p {wd}; cd {wd}")
    lines.append('exec "$@"')
    return lines


def launch_argv(spec: podspecs.ProcessSpec, netns: str | None, hosts_file: str | None) -> list[str]:
    """The full argv that starts ``spec`` inside the pod (``netns`` None: host network)."""
    script = "\n".join(_mount_lines(spec, hosts_file if netns else None))
    if netns is None:
        if spec.mounts:
            return [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                script,
                "pot-container",
                *spec.argv,
            ]
        return list(spec.argv)
    # A pod has its own hostname, as on a real node (UTS namespace); its
    # /etc/hosts maps that name to the pod IP. Peers that resolve their own
    # hostname to find the address to advertise (gloo, c10d) depend on it.
    hostname = spec.env.get("HOSTNAME")
    if hostname:
        script = f"hostname {shlex.quote(hostname)}\n{script}"
        return [
            "ip",
            "netns",
            "exec",
            netns,
            "unshare",
            "-u",
            "/bin/sh",
            "-c",
            script,
            "pot-container",
            *spec.argv,
        ]
    return ["ip", "netns", "exec", netns, "/bin/sh", "-c", script, "pot-container", *spec.argv]


@dataclass(slots=True)
class Running:
    """One started container instance."""

    process: asyncio.subprocess.Process
    log_path: Path
    started: float
    instance: str = ""
    """Its ``INSTANCE`` marker: what its descendants carry even outside its process group."""

    @property
    def pid(self) -> int:
        """The container's main process (also its process group)."""
        return self.process.pid


async def start(
    spec: podspecs.ProcessSpec, *, netns: str | None, hosts_file: str | None, log_path: Path
) -> Running:
    """Start the container; raises OSError if it cannot be executed at all."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *launch_argv(spec, netns, hosts_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=spec.env,
            cwd="/",
            start_new_session=True,  # its own process group: signals reach its children too
        )
    return Running(
        process=process, log_path=log_path, started=time.time(), instance=spec.env.get(INSTANCE, "")
    )


def prune_logs(directory: Path, current: int) -> None:
    """Keep the logs of instance ``current`` and the one before (``kubectl logs --previous``),
    as the kubelet does: a crash loop must not pile up a file per restart."""
    with contextlib.suppress(FileNotFoundError):
        for path in directory.glob("*.log"):
            if path.stem.isdigit() and int(path.stem) < current - 1:
                path.unlink(missing_ok=True)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop(running: Running, grace: float) -> int:
    """SIGTERM the container's process group, SIGKILL after ``grace`` seconds; exit code."""
    if running.process.returncode is None:
        _signal_group(running.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(running.process.wait(), timeout=max(grace, 0.01))
        except TimeoutError:
            _signal_group(running.pid, signal.SIGKILL)
            await running.process.wait()
    # Children that ignored SIGTERM and outlived the leader go too.
    _signal_group(running.pid, signal.SIGKILL)
    await reap(running)
    return exit_code(running.process.returncode)


async def reap(running: Running) -> int:
    """SIGKILL what is left of an instance whose main process ended: its process group and
    the descendants that left it (``setsid``, a daemon), found by its ``INSTANCE`` marker.
    A container runtime kills them with the container's cgroup; here they would outlive
    the pod (in a deleted network namespace) or hold a port its restart needs."""
    _signal_group(running.pid, signal.SIGKILL)
    if not running.instance:
        return 0
    needle = f"{INSTANCE}={running.instance}".encode()
    return await asyncio.to_thread(lambda: _kill_all(_pids_with(needle)))


def kill_now(running: Running) -> None:
    """SIGKILL the whole group at once (node failure, kubelet shutdown)."""
    _signal_group(running.pid, signal.SIGKILL)


def exit_code(returncode: int | None) -> int:
    """Container exit code as Kubernetes reports it (128+signal for signals)."""
    if returncode is None:
        return 0
    return 128 - returncode if returncode < 0 else returncode


#: Env var every container process (and so every descendant) carries, with the
#: cluster's tag: how leftovers of a crashed kubelet are found without trusting
#: recorded pids that the machine may since have reused.
MARKER = "POT_LOCALCLUSTER"

#: Env var naming one container instance (pod uid, container, restart count), which its
#: descendants inherit: how those that left its process group are found when it ends.
INSTANCE = "POT_LOCALCLUSTER_CONTAINER"


def marked_pids(tag: str) -> list[int]:
    """Processes on this machine whose environment carries ``MARKER=tag``."""
    return _pids_with(f"{MARKER}={tag}".encode())


def _pids_with(needle: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def kill_marked(tag: str, wait_s: float = 5.0) -> int:
    """SIGKILL every leftover container process of cluster ``tag``, each with its process
    group, and wait (up to ``wait_s``) until those are gone; how many. Waiting matters: a
    container started while its predecessor is still dying can find its port taken, fail,
    and be restarted once more. The group catches what a listed process forked between the
    scan and its SIGKILL (each container leads a group of its own).

    One scan, not a loop until none is left: this runs as a kubelet starts, and a rescan can
    find (and kill) the containers that a kubelet already back on its feet has just started
    (seen: pods counted restarted but never ready again)."""
    pids = marked_pids(tag)
    _kill_all(pids)
    needle = f"{MARKER}={tag}".encode()
    deadline = time.monotonic() + wait_s
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        # Only those killed above: gone, a zombie (its environ reads empty) or a reused pid.
        left = [p for p in left if needle in _environ(p)]
    return len(pids)


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _kill_all(pids: list[int]) -> int:
    """SIGKILL each of ``pids`` with its process group (never this process's own); how many."""
    own_group = os.getpgrp()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
