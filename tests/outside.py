"""A test host "outside" this machine's containers: a network namespace of ours behind a veth,
whose address is in no container, pod or service range, so a packet towards it leaves the
host by an ordinary interface unless a guard stops it. Used to prove that containers (Docker's,
kind's pods) cannot send a packet off the machine, without sending one anywhere but here."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from e2e.docker import engine

TEST_HOST = "10.199.77.2"  # the namespace's end of the veth: ours, on this machine
HOST_SIDE = "10.199.77.1/30"
PORT = 9999
LISTENER = Path(__file__).with_name("outside_listener.py")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=120)


@contextlib.contextmanager
def outside_host(folder: Path) -> Iterator[Path]:
    """The namespace, with UDP and TCP listeners on TEST_HOST:PORT; yields the file where they
    write `<source> <payload>` for each datagram or connection. Everything is removed
    afterwards."""
    name = f"svcaudit-out-{uuid.uuid4().hex[:6]}"
    netns_dir_was_there = Path("/run/netns").exists()
    host_if, ns_if = f"sva-o{name[-6:]}", f"sva-i{name[-6:]}"
    received = folder / "received"
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
        listen = [str(LISTENER), TEST_HOST, str(PORT), str(received)]
        listener = subprocess.Popen(["ip", "netns", "exec", name, "python3", *listen])
        time.sleep(0.5)
        # The path works: the host itself reaches the test host.
        run(
            "python3",
            "-c",
            f"import socket;socket.socket(2,2).sendto(b'host',('{TEST_HOST}',{PORT}))",
        )
        assert wait_received(received, "host", 5), "the host cannot reach its own test host"
        yield received
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        run("ip", "link", "delete", host_if, check=False)
        run("ip", "netns", "delete", name, check=False)
        if not netns_dir_was_there and not any(Path("/run/netns").iterdir()):
            # `ip netns add` made /run/netns a mount point of its own (possibly stacked):
            # leave no trace
            while run("umount", "/run/netns", check=False).returncode == 0:
                pass
            Path("/run/netns").rmdir()


@contextlib.contextmanager
def forwarding_on() -> Iterator[None]:
    """IP forwarding on meanwhile: without it the host would drop a container's packet anyway,
    and a test would not prove that the guard does."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    before = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(before)


def wait_received(received: Path, payload: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if payload in received.read_text():
            return True
        time.sleep(0.1)
    return payload in received.read_text()


def guard_drops() -> int:
    """Packets the Docker engine's guard has dropped so far."""
    out = run("iptables", "-t", "mangle", "-nvxL", engine.GUARD_CHAIN).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if " DROP " in f" {line} ")
