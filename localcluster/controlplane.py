"""``python -m pot.localcluster.controlplane``: scheduler, controllers and kubelet.

The one process `pot local up` starts next to the API server (DESIGN §6). The
three components share list+watch caches (``caches``) and one event loop but
talk to the cluster only through the API server, as real ones do. SIGTERM
stops every pod's processes, removes the pod network and exits; ``cleanup``
does the same from outside for a control plane that was SIGKILLed.

The node layout comes from ``DIR/nodes.json`` (written by ``pot local up
--nodes FILE``) or ``--nodes FILE``, else the default two 4-GPU rigs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from pot import errors
from pot.localcluster import apiclient, containers, kubelet, nodes, podnet
from pot.localcluster.caches import Caches
from pot.localcluster.controlling import ControllerManager, LifecycleConfig
from pot.localcluster.scheduling import Scheduler

log = logging.getLogger(__name__)
LAYOUT_FILE = "nodes.json"


def layout_for(directory: Path, nodes_file: Path | None = None) -> list[nodes.NodeConfig]:
    """The node layout of the cluster in ``directory``."""
    if nodes_file is not None:
        return nodes.load_layout(nodes_file)
    recorded = directory / LAYOUT_FILE
    return nodes.load_layout(recorded) if recorded.exists() else nodes.default_layout()


def install_layout(directory: Path, nodes_file: Path) -> list[nodes.NodeConfig]:
    """Validate ``nodes_file`` and record it as the layout of ``directory``."""
    configs = nodes.load_layout(nodes_file)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LAYOUT_FILE).write_text(nodes.dump_layout(configs))
    return configs


def cleanup(directory: Path) -> None:
    """Kill leftover container processes and remove this cluster's pod network."""
    directory = directory.expanduser().resolve()
    containers.kill_marked(podnet.tag(directory))
    podnet.teardown(directory / "kubelet", directory)


async def serve(
    kubeconfig: Path,
    directory: Path,
    configs: list[nodes.NodeConfig],
    *,
    kubelet_config: kubelet.KubeletConfig | None = None,
    lifecycle: LifecycleConfig | None = None,
) -> None:
    """Run all three components until cancelled."""
    api = apiclient.Api(apiclient.load_kubeconfig(kubeconfig), user_agent="pot-controlplane")
    caches = Caches(api)
    kcfg = kubelet_config or kubelet.KubeletConfig(cluster_dir=directory, nodes=configs)
    the_kubelet = kubelet.Kubelet(api, kcfg, caches)
    caches.start()
    tasks = [
        asyncio.create_task(the_kubelet.run(), name="kubelet"),
        asyncio.create_task(Scheduler(api, caches).run(), name="scheduler"),
        asyncio.create_task(
            ControllerManager(api, caches, lifecycle or LifecycleConfig()).run(), name="controllers"
        ),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await caches.stop()
        await api.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point (``python -m pot.localcluster.controlplane``)."""
    parser = argparse.ArgumentParser(prog="pot.localcluster.controlplane", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="the cluster's state directory")
    parser.add_argument("--nodes", type=Path, default=None, help="node layout (YAML/JSON)")
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--node-grace", type=float, default=6.0)
    parser.add_argument("--eviction-timeout", type=float, default=5.0)
    parser.add_argument("--backoff-base", type=float, default=2.0)
    parser.add_argument("--backoff-max", type=float, default=60.0)
    parser.add_argument("--no-pod-network", action="store_true", help="pods share the host network")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s controlplane %(levelname)s %(name)s %(message)s"
    )
    directory = args.dir.expanduser().resolve()
    try:
        configs = layout_for(directory, args.nodes)
    except errors.PotError as exc:
        parser.error(str(exc))
    kcfg = kubelet.KubeletConfig(
        cluster_dir=directory,
        nodes=configs,
        heartbeat=args.heartbeat,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        pod_network=not args.no_pod_network,
    )
    lifecycle = LifecycleConfig(node_grace=args.node_grace, eviction_timeout=args.eviction_timeout)

    async def run() -> None:
        task = asyncio.create_task(
            serve(args.kubeconfig, directory, configs, kubelet_config=kcfg, lifecycle=lifecycle)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
    finally:
        cleanup(directory)
        log.info("control plane stopped; pod processes and network removed")


if __name__ == "__main__":
    main()
