"""The shared list+watch caches of the scheduler, controllers and kubelet.

They run in one process (``controlplane``), so each resource is listed and
watched once and every component registers handlers on the same cache: with
5,000 virtual pods, three separate pod watches would triple the API server's
work for nothing.
"""

from __future__ import annotations

import asyncio

from pot.localcluster import apiclient

RESOURCES = {
    "pods": "/api/v1/pods",
    "nodes": "/api/v1/nodes",
    "configmaps": "/api/v1/configmaps",
    "secrets": "/api/v1/secrets",
    "services": "/api/v1/services",
    "endpoints": "/api/v1/endpoints",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "persistentvolumeclaims": "/api/v1/persistentvolumeclaims",
    "replicasets": "/apis/apps/v1/replicasets",
    "deployments": "/apis/apps/v1/deployments",
    "statefulsets": "/apis/apps/v1/statefulsets",
    "jobs": "/apis/batch/v1/jobs",
}


class Caches:
    """One informer per resource in ``RESOURCES``."""

    def __init__(self, api: apiclient.Api) -> None:
        self.api = api
        self.informers = {name: apiclient.Informer(api, path) for name, path in RESOURCES.items()}
        self.tasks: list[asyncio.Task[None]] = []

    def __getitem__(self, name: str) -> apiclient.Informer:
        return self.informers[name]

    def start(self, names: list[str] | None = None) -> None:
        """Start list+watch for ``names`` (default: all)."""
        for name in names or list(self.informers):
            self.tasks.append(
                asyncio.create_task(self.informers[name].run(), name=f"informer {name}")
            )

    async def wait_synced(self, names: list[str] | None = None) -> None:
        """Until the first list of each of ``names`` is in."""
        for name in names or list(self.informers):
            await self.informers[name].synced.wait()

    async def stop(self) -> None:
        """Cancel every informer."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
