"""Container probes (httpGet, tcpSocket, exec) and their threshold bookkeeping.

The kubelet probes pods from the host through the pod network, as a real
kubelet does from the node: httpGet and tcpSocket go to the pod IP, exec runs
inside the container's namespaces. ``Tracker`` is the pure part: it turns a
stream of probe results into the state changes Kubernetes defines
(successThreshold / failureThreshold consecutive results).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from pot.localcluster import containers

if TYPE_CHECKING:
    from pot.localcluster.kubelet_pods import Container, PodWorker

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Timing:
    """A probe's schedule and thresholds, with Kubernetes' defaults."""

    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Obj, *, kind: str) -> Timing:
        """Read ``probe``'s timing fields (liveness/startup need successThreshold 1)."""
        success = int(probe.get("successThreshold", 1))
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=success if kind == "readiness" else 1,
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


@dataclass(slots=True)
class Tracker:
    """Consecutive-result counting; ``ok`` is the probe's current verdict."""

    timing: Timing
    ok: bool
    successes: int = 0
    failures: int = 0

    def observe(self, success: bool) -> bool:
        """Record one result; True when the verdict flipped."""
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if not self.ok and self.successes >= self.timing.success_threshold:
                self.ok = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.ok and self.failures >= self.timing.failure_threshold:
                self.ok = False
                return True
        return False


def _port(value: Any, container: Obj) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"port {value!r} is not a number nor a named container port")


async def run_once(
    probe: Obj,
    *,
    container: Obj,
    pod_ip: str,
    exec_argv: list[str] | None,
    env: Mapping[str, str],
    timeout: float,
) -> tuple[bool, str]:
    """Run one probe; (success, message for the Unhealthy event)."""
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            host = get.get("host") or pod_ip
            scheme = str(get.get("scheme", "HTTP")).lower()
            url = f"{scheme}://{host}:{_port(get.get('port'), container)}{get.get('path', '/')}"
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/1.37")
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                session.get(url, headers=headers, ssl=False, allow_redirects=False) as resp,
            ):
                if 200 <= resp.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {resp.status}"
        if "tcpSocket" in probe:
            sock = probe["tcpSocket"]
            host = sock.get("host") or pod_ip
            port = _port(sock.get("port"), container)
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True, ""
        if "exec" in probe:
            if exec_argv is None:
                return False, "container is not running"
            proc = await asyncio.create_subprocess_exec(
                *exec_argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return False, f"command timed out after {timeout:g}s"
            if proc.returncode == 0:
                return True, ""
            text = out.decode(errors="replace").strip()
            return False, f"command failed with exit code {proc.returncode}: {text[:200]}"
        if "grpc" in probe:
            return False, "grpc probes are not supported by the local cluster"
        return True, ""
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except (OSError, aiohttp.ClientError, ValueError) as exc:
        return False, f"probe failed: {exc}"


async def supervise(worker: PodWorker, c: Container, kind: str) -> None:
    """Probe ``c`` (``kind``: startup, liveness or readiness) while it runs; a failed liveness
    or startup probe stops it (its supervisor restarts it as the restartPolicy says)."""
    probe = c.spec[f"{kind}Probe"]
    timing = Timing.of(probe, kind=kind)
    tracker = Tracker(timing, ok=(kind == "liveness"))
    if kind != "startup":
        while not c.status.started:
            await asyncio.sleep(0.1)
    await asyncio.sleep(timing.initial_delay)
    while c.running is not None:
        ok, message = await run_once(
            probe,
            container=c.spec,
            pod_ip=worker.ip or "127.0.0.1",
            exec_argv=worker.exec_argv(c, (probe.get("exec") or {}).get("command") or []),
            env=c.process_spec.env if c.process_spec else {},
            timeout=timing.timeout,
        )
        if not ok:
            worker.host.event(
                worker.pod, "Unhealthy", f"{kind.capitalize()} probe failed: {message}", "Warning"
            )
        flipped = tracker.observe(ok)
        if kind == "readiness" and flipped:
            c.status.ready = tracker.ok
            worker.changed()
        elif kind == "startup" and flipped and tracker.ok:
            c.status.started = True
            c.status.ready = "readinessProbe" not in c.spec
            c.started_event.set()
            worker.changed()
            return
        elif (
            kind in {"liveness", "startup"}
            and not tracker.ok
            and (kind == "liveness" or tracker.failures >= timing.failure_threshold)
        ):
            c.kill_reason = kind
            worker.host.event(
                worker.pod,
                "Killing",
                f"Container {c.status.name} failed {kind} probe, will be restarted",
            )
            running = c.running
            if running is not None:
                grace = probe.get("terminationGracePeriodSeconds", worker.grace())
                await containers.stop(running, float(grace))
            return
        await asyncio.sleep(timing.period)
