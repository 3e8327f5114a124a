"""The pod network (``pot.localcluster.podnet``) against the real kernel: a pod's veth whose
name is still taken by a leftover does not keep the pod from starting."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pot.localcluster import podnet

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


def test_a_lingering_host_veth_does_not_stop_the_pod(tmp_path: Path) -> None:
    cluster, state = tmp_path / "cluster", tmp_path / "state"
    cluster.mkdir()
    net = podnet.ensure_network(state, cluster)
    veth = net.veth(0)
    try:
        # What a deleted namespace leaves behind for a while: the kernel tears it down
        # asynchronously, and its veth's host end keeps the name (seen after a control-plane
        # restart under load: "RTNETLINK answers: File exists", the pod never ran again).
        subprocess.run(
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "x"], check=True
        )
        ip = asyncio.run(podnet.add_pod(net, 0))
        assert ip == net.address(0)
        assert Path(f"/sys/class/net/{veth}/master").resolve().name == net.bridge
        assert (podnet.NETNS_DIR / net.netns(0)).exists()
    finally:
        asyncio.run(podnet.remove_pod(net, 0))
        podnet.teardown(state, cluster)
    assert not Path(f"/sys/class/net/{veth}").exists()
