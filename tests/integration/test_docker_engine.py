"""The Docker engine the project starts (e2e/docker/engine.py) keeps every container on this
machine, pulls nothing, and `down` stops exactly what `up` started.

The network test sends a packet from a container towards a test host of our own: a network
namespace this test makes, behind a veth whose address is outside every container range, so
the packet would leave the host by an ordinary interface. The host itself reaches that test
host (the path works); a container's packet is dropped by the guard, whose counter says so.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.docker import engine
from tests.fixtures import process_alive
from tests.outside import (
    PORT,
    TEST_HOST,
    forwarding_on,
    guard_drops,
    outside_host,
    run,
    wait_received,
)


@pytest.fixture(scope="module")
def our_engine(operator_image: str) -> str:
    """Our engine, running (the operator image's build started it where none answered)."""
    if engine.our_pid() is None:
        pytest.skip("a Docker engine we did not start answers here: its settings are its own")
    return operator_image


@pytest.fixture
def forwarding() -> Iterator[None]:
    with forwarding_on():
        yield


@pytest.fixture
def test_host(tmp_path: Path) -> Iterator[Path]:
    with outside_host(tmp_path) as received:
        yield received


def send_from_container(image: str, network: str, message: str) -> None:
    code = (
        "import socket;"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
        f"[s.sendto(b'{message}',('{TEST_HOST}',{PORT})) for _ in range(3)]"
    )
    proc = run(
        "docker",
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        network,
        "--entrypoint",
        "python3",
        image,
        "-c",
        code,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_containers_cannot_send_a_packet_off_the_machine(
    our_engine: str, test_host: Path, forwarding: None
) -> None:
    # (outside_host checked that the host itself reaches the test host: the path works)
    network = f"svcaudit-guard-{uuid.uuid4().hex[:6]}"
    run("docker", "network", "create", network)  # a user network, as kind makes
    try:
        for net in ("bridge", network):
            before = guard_drops()
            send_from_container(our_engine, net, f"from-{net}")
            assert not wait_received(test_host, f"from-{net}", 1), f"a packet left from {net}"
            assert guard_drops() >= before + 3, f"the guard did not drop {net}'s packets"
    finally:
        run("docker", "network", "rm", network, check=False)


def test_pulls_fail_at_once_without_asking_any_name(our_engine: str) -> None:
    pid = engine.our_pid()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"HTTPS_PROXY={engine.NO_PULL_PROXY}".encode() in environ
    started = time.monotonic()
    proc = run("docker", "pull", "svcaudit.invalid/nothing:1", check=False)
    assert proc.returncode != 0
    assert time.monotonic() - started < 10
    assert "127.0.0.1:9" in proc.stderr or "proxyconnect" in proc.stderr, proc.stderr


def test_engine_settings_keep_containers_local(our_engine: str) -> None:
    info = json.loads(run("docker", "info", "--format", "{{json .}}").stdout)
    assert info["DefaultRuntime"] == engine.RUNTIME_NAME
    cmdline = Path(f"/proc/{engine.our_pid()}/cmdline").read_bytes().decode().split("\0")
    for flag in ("--iptables=false", "--ip-masq=false", "--dns=127.0.0.1"):
        assert flag in cmdline
    bridge = json.loads(run("docker", "network", "inspect", "bridge").stdout)[0]
    (subnet,) = [c["Subnet"] for c in bridge["IPAM"]["Config"]]
    import ipaddress

    assert ipaddress.ip_network(subnet).subnet_of(ipaddress.ip_network(engine.GUARDED_RANGE))


def test_privileged_containers_run(our_engine: str) -> None:
    """root here lacks CAP_SYS_RESOURCE; the runtime wrapper lets --privileged containers
    (kind's nodes) start, without that one capability."""
    proc = run(
        "docker",
        "run",
        "--rm",
        "--privileged",
        "--user",
        "0",
        "--network",
        "none",
        "--entrypoint",
        "grep",
        our_engine,
        "CapEff",
        "/proc/self/status",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    caps = int(proc.stdout.split()[1], 16)
    assert caps & (1 << 21)  # CAP_SYS_ADMIN: privileged indeed
    assert not caps & (1 << 24)  # CAP_SYS_RESOURCE: removed


def test_down_stops_ours_and_removes_what_it_made(our_engine: str) -> None:
    pid = engine.our_pid()
    assert pid is not None
    try:
        assert engine.down() is True
        assert engine.our_pid() is None and not process_alive(pid)
        assert not engine.answers(timeout=3)
        chains = run("iptables", "-t", "mangle", "-S").stdout
        assert engine.GUARD_CHAIN not in chains
        assert "docker0" not in engine.links()
        assert engine.down() is False  # nothing of ours left to stop
    finally:
        assert engine.up() in ("started", "ours")
    assert engine.GUARD_CHAIN in run("iptables", "-t", "mangle", "-S").stdout
