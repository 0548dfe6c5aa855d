"""A Docker engine the project can rely on: the one that answers, or one we start and stop.

`up` uses a Docker engine that already answers (a user's own: we start nothing and change
nothing). Where none answers, it starts Debian's `dockerd` with the settings below, recorded
in a state folder so that `down` stops exactly that daemon and removes exactly what it made.

The engine we start is kept on this machine (no packet may leave it):
- pulls fail at once: the daemon's HTTP(S) proxy is a closed local port, so no registry name
  is even looked up (as the real node's containerd);
- containers get addresses only in GUARDED_RANGE (default bridge BRIDGE_CIDR, user networks
  from ADDRESS_POOL), no masquerading, no iptables rules of Docker's own, DNS 127.0.0.1
  (the container's own loopback: refused at once);
- a mangle/FORWARD guard drops anything that comes in from a Docker bridge and would go out by
  another interface, and anything from GUARDED_RANGE that would (tests/integration/
  test_docker_engine.py sends a packet from a container towards a test host of ours and checks
  the guard stops it; e2e/tests/test_kind.py does the same from a pod in kind).
- runc is wrapped (runc-wrapper): root here lacks CAP_SYS_RESOURCE, which a --privileged
  container (a kind node) asks for; the wrapper removes it from the container's capability
  sets, then runs runc. Ordinary containers never ask for it.

Standard library only (it runs before any virtualenv exists). Usage, from the repository's
root: python3 -m e2e.docker.engine up | down | status
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNC_WRAPPER = HERE / "runc-wrapper"
BRIDGE_CIDR = "10.210.0.1/24"
ADDRESS_POOL = "10.211.0.0/16"
GUARDED_RANGE = "10.210.0.0/15"  # BRIDGE_CIDR and ADDRESS_POOL
GUARD_CHAIN = "SVCAUDIT-DOCKER"
GUARD_HOOK = "FORWARD"  # in the mangle table
RUNTIME_NAME = "svcaudit-runc"
NO_PULL_PROXY = "http://127.0.0.1:9"
SOCKET = Path("/var/run/docker.sock")
START_TIMEOUT = 60.0


class EngineError(RuntimeError):
    """A step of the engine failed; the message names it and what to do."""


def say(message: str) -> None:
    print(f"[docker] {message}", flush=True)


def state_dir() -> Path:
    """Where our daemon's pid file, log and runtime wrapper live (outside any checkout, so a
    fresh clone finds the daemon another clone started)."""
    cache = Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache" / "svcaudit"))
    return cache / "dockerd"


def docker_cli() -> str:
    found = shutil.which("docker")
    if not found:
        raise EngineError("no docker client: run `make deps` (apt-get install docker.io)")
    return found


def docker_env() -> dict[str, str]:
    """The environment for docker commands: the classic builder where the client has no
    buildx plugin (Debian's client has none; `docker build` would refuse otherwise)."""
    env = dict(os.environ)
    if not _has_buildx(docker_cli()):
        env["DOCKER_BUILDKIT"] = "0"
    return env


@functools.cache
def _has_buildx(client: str) -> bool:
    """Asked once per process: every docker command of ours needs the answer."""
    return subprocess.run([client, "buildx", "version"], capture_output=True).returncode == 0


def answers(timeout: float = 10.0) -> bool:
    """True when a Docker engine (not just the client) answers."""
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and bool(probe.stdout.strip())


def our_pid() -> int | None:
    """The pid of the dockerd we started, if it still runs."""
    path = state_dir() / "dockerd.pid"
    try:
        pid = int(path.read_text().split()[0])
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (OSError, ValueError, IndexError):
        return None
    return pid if exe.endswith("dockerd") else None


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def links() -> set[str]:
    out = run("ip", "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def guard_rules() -> list[list[str]]:
    """mangle/FORWARD (kube-proxy adds nothing there that could accept first): a packet that
    came in from a Docker bridge may only go out to a Docker bridge. Whatever its source
    address: a kind pod's packet that its node did not masquerade is caught too."""
    drop = ["-m", "comment", "--comment", "svcaudit: containers stay local", "-j", "DROP"]
    return [
        ["-o", "docker0", "-j", "RETURN"],
        ["-o", "br-+", "-j", "RETURN"],
        ["-i", "docker0", *drop],
        ["-i", "br-+", *drop],
        ["-s", GUARDED_RANGE, *drop],
    ]


def guard_up() -> None:
    if run("iptables", "-t", "mangle", "-n", "-L", GUARD_CHAIN, check=False).returncode != 0:
        run("iptables", "-t", "mangle", "-N", GUARD_CHAIN)
    run("iptables", "-t", "mangle", "-F", GUARD_CHAIN)
    for rule in guard_rules():
        run("iptables", "-t", "mangle", "-A", GUARD_CHAIN, *rule)
    jump = [GUARD_HOOK, "-j", GUARD_CHAIN]
    if run("iptables", "-t", "mangle", "-C", *jump, check=False).returncode != 0:
        run("iptables", "-t", "mangle", "-I", GUARD_HOOK, "1", "-j", GUARD_CHAIN)


def guard_down() -> None:
    jump = [GUARD_HOOK, "-j", GUARD_CHAIN]
    while run("iptables", "-t", "mangle", "-D", *jump, check=False).returncode == 0:
        pass
    run("iptables", "-t", "mangle", "-F", GUARD_CHAIN, check=False)
    run("iptables", "-t", "mangle", "-X", GUARD_CHAIN, check=False)


def dockerd_argv(folder: Path) -> list[str]:
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    return [
        dockerd,
        f"--host=unix://{SOCKET}",
        f"--pidfile={folder / 'dockerd.pid.daemon'}",
        f"--bip={BRIDGE_CIDR}",
        f"--default-address-pool=base={ADDRESS_POOL},size=24",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--ipv6=false",
        "--dns=127.0.0.1",
        f"--add-runtime={RUNTIME_NAME}={folder / 'runc-wrapper'}",
        f"--default-runtime={RUNTIME_NAME}",
        "--log-level=warn",
    ]


def up() -> str:
    """Make sure an engine answers; returns 'existing', 'ours' or 'started'."""
    if our_pid() and answers():
        return "ours"
    if answers():
        say("a Docker engine already answers: using it as it is (not ours to change or stop)")
        return "existing"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineError("no dockerd on this machine: run `make deps` (apt-get install docker.io)")
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(RUNC_WRAPPER, folder / "runc-wrapper")
    (folder / "links-before.json").write_text(json.dumps(sorted(links())))
    guard_up()  # before the first container can exist
    env = {**os.environ}
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[key] = NO_PULL_PROXY
    for key in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        env[key] = ""
    log = open(folder / "dockerd.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        dockerd_argv(folder),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    log.close()
    (folder / "dockerd.pid").write_text(f"{proc.pid}\n")
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT:
        if proc.poll() is not None:
            tail = (folder / "dockerd.log").read_text(errors="replace").splitlines()[-15:]
            guard_down()
            raise EngineError(
                f"dockerd exited with {proc.returncode}; its log {folder / 'dockerd.log'}:\n"
                + "\n".join(tail)
            )
        if answers(timeout=3):
            say(f"started dockerd (pid {proc.pid}) in {time.monotonic() - started:.1f}s")
            return "started"
        time.sleep(0.3)
    down()
    raise EngineError(
        f"dockerd did not answer within {START_TIMEOUT:.0f}s: see {folder}/dockerd.log"
    )


def down() -> bool:
    """Stop the dockerd we started (never another), and remove what it left."""
    folder = state_dir()
    pid = our_pid()
    if pid is None:
        (folder / "dockerd.pid").unlink(missing_ok=True)
        return False
    # Our containers first (dockerd would leave them for its next start otherwise).
    ids = run("docker", "ps", "-aq", check=False).stdout.split()
    if ids:
        run("docker", "rm", "-f", *ids, check=False)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and our_pid() == pid:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    if our_pid() == pid:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    before_path = folder / "links-before.json"
    before = set(json.loads(before_path.read_text())) if before_path.exists() else set()
    for link in sorted(links() - before):
        if link == "docker0" or link.startswith(("br-", "veth")):
            run("ip", "link", "delete", link, check=False)
    guard_down()
    (folder / "dockerd.pid").unlink(missing_ok=True)
    say(f"stopped dockerd (pid {pid})")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            if not down():
                say("no dockerd of ours is running (an engine we did not start is left alone)")
        else:
            pid = our_pid()
            owner = f"ours (pid {pid})" if pid else "not ours" if answers() else "none"
            say(f"engine: {owner}")
            return 0 if pid or answers() else 1
    except EngineError as exc:
        print(f"[docker] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
