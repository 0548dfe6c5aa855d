"""The Docker engine the project starts (e2e/docker/engine.py) keeps every container on this
machine, pulls nothing, and `down` stops exactly what `up` started.

The network test sends a packet from a container towards a test host of our own: a network
namespace this test makes, behind a veth whose address is outside every container range, so
the packet would leave the host by an ordinary interface. The host itself reaches that test
host (the path works); a container's packet is dropped by the guard, whose counter says so.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.docker import engine

TEST_HOST = "10.199.77.2"  # the namespace's end of the veth: ours, on this machine
HOST_SIDE = "10.199.77.1/30"
PORT = 9999


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture(scope="module")
def our_engine(operator_image: str) -> str:
    """Our engine, running (the operator image's build started it where none answered)."""
    if engine.our_pid() is None:
        pytest.skip("a Docker engine we did not start answers here: its settings are its own")
    return operator_image


@pytest.fixture
def test_host(tmp_path: Path) -> Iterator[Path]:
    """A network namespace with a UDP listener on TEST_HOST:PORT; yields the file where it
    writes each datagram it receives."""
    name = f"svcaudit-out-{uuid.uuid4().hex[:6]}"
    netns_dir_was_there = Path("/run/netns").exists()
    host_if, ns_if = f"sva-o{name[-6:]}", f"sva-i{name[-6:]}"
    received = tmp_path / "received"
    received.touch()
    run("ip", "netns", "add", name)
    listener = None
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", name)
        run("ip", "addr", "add", HOST_SIDE, "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "netns", "exec", name, "ip", "addr", "add", f"{TEST_HOST}/30", "dev", ns_if)
        run("ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up")
        run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        code = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{TEST_HOST}',{PORT}))\n"
            "while True:\n"
            "    data,peer=s.recvfrom(2048)\n"
            f"    open('{received}','a').write(peer[0]+' '+data.decode()+'\\n')\n"
        )
        listener = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-c", code])
        time.sleep(0.5)
        yield received
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        run("ip", "link", "delete", host_if, check=False)
        run("ip", "netns", "delete", name, check=False)
        if not netns_dir_was_there and not any(Path("/run/netns").iterdir()):
            # `ip netns add` made /run/netns a mount point of its own: leave no trace
            run("umount", "/run/netns", check=False)
            Path("/run/netns").rmdir()


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (PID 1 here may not reap orphans at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def guard_drops() -> int:
    """Packets the guard's DROP rule has dropped so far."""
    out = run("iptables", "-t", "mangle", "-nvxL", engine.GUARD_CHAIN).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if " DROP " in f" {line} ")


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


def test_containers_cannot_send_a_packet_off_the_machine(our_engine: str, test_host: Path) -> None:
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1", (
        "forwarding is off: the test would prove nothing (the real node turns it on)"
    )
    # The path works: the host itself reaches the test host.
    run("python3", "-c", f"import socket;socket.socket(2,2).sendto(b'host',('{TEST_HOST}',{PORT}))")
    deadline = time.monotonic() + 5
    while "host" not in test_host.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "host" in test_host.read_text()
    network = f"svcaudit-guard-{uuid.uuid4().hex[:6]}"
    run("docker", "network", "create", network)  # a user network, as kind makes
    try:
        for net in ("bridge", network):
            before = guard_drops()
            send_from_container(our_engine, net, f"from-{net}")
            time.sleep(1)
            assert f"from-{net}" not in test_host.read_text(), f"a packet left from {net}"
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
        assert engine.our_pid() is None and not alive(pid)
        assert not engine.answers(timeout=3)
        chains = run("iptables", "-t", "mangle", "-S").stdout
        assert engine.GUARD_CHAIN not in chains
        assert "docker0" not in engine.links()
        assert engine.down() is False  # nothing of ours left to stop
    finally:
        assert engine.up() in ("started", "ours")
    assert engine.GUARD_CHAIN in run("iptables", "-t", "mangle", "-S").stdout
