"""`make image`: the operator image svcaudit:dev, from the project's Dockerfile, here or anywhere.

Steps, each with a progress line and, on failure, one error line naming it:
1. engine: a Docker engine answers (engine.py starts ours where none does);
2. base: the Dockerfile's public Python base (PYTHON_IMAGE) if the engine has it or can pull
   it; otherwise an equivalent base made from Debian's packages (debootstrap bookworm +
   python3.11), cached in the engine under a tag holding the hash of its recipe;
3. wheels: every pinned runtime dependency and the build backend, fetched with the host's pip
   into a cache folder keyed by requirements/image.txt (a build container cannot verify this
   machine's registry certificates, so nothing is downloaded inside one);
4. build: `docker build --network none` of a context holding only what the image needs;
5. smoke: the image runs `svcaudit expect` read-only, as non-root, with no network.

Standard library only. Usage, from the repository's root:
  python3 -m e2e.docker.image [--tag svcaudit:dev] [--base auto|public|local]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e.docker import engine

REPO = Path(__file__).resolve().parent.parent.parent

DEFAULT_TAG = "svcaudit:dev"
# The local base: what the public python:3.11-slim-bookworm provides that the image uses.
BASE_SUITE = "bookworm"
BASE_PACKAGES = (
    "python3.11",
    "python3.11-venv",
    "python3-distutils",  # provides python3.11-distutils (venv needs it; debootstrap misses it)
    "python3-pip-whl",
    "python3-setuptools-whl",
    "python-is-python3",
    "ca-certificates",
)
BASE_REPOSITORY = "svcaudit.local/python-base"
DEBIAN_MIRROR = os.environ.get("SVCAUDIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SMOKE_OBJECTS = REPO / "tests" / "unit" / "data" / "expect-example.yaml"
IMAGE_LABEL = "org.opencontainers.image.title=svcaudit"  # set by the Dockerfile
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")

started = time.monotonic()


class StepFailed(RuntimeError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


def say(message: str) -> None:
    print(f"[image {time.monotonic() - started:5.1f}s] {message}", flush=True)


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        check=check,
        env=engine.docker_env(),
        **kw,
    )


def has_image(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def cache_root() -> Path:
    return Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache" / "svcaudit"))


def public_base() -> str:
    text = (REPO / "Dockerfile").read_text()
    found = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    if not found:
        raise StepFailed("base", "Dockerfile has no `ARG PYTHON_IMAGE=...` line")
    return found.group(1)


def local_base_tag() -> str:
    recipe = "\n".join([BASE_SUITE, *BASE_PACKAGES, "minbase", "v1"])
    return f"{BASE_REPOSITORY}:3.11-{BASE_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def build_local_base(tag: str) -> None:
    if shutil.which("debootstrap") is None:
        raise StepFailed("base", "debootstrap is missing: run `make deps`")
    say(f"base: debootstrap {BASE_SUITE} + {', '.join(BASE_PACKAGES)} (cold: about 1-2 min)")
    with tempfile.TemporaryDirectory(prefix="svcaudit-base-") as tmp:
        root = Path(tmp) / "rootfs"
        proc = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(root),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-5:])
            raise StepFailed("base", f"debootstrap failed:\n{tail}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
            for entry in (root / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        say("base: importing into the engine")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        tar.wait()
        if imported.returncode != 0:
            raise StepFailed("base", f"docker import failed: {imported.stderr.strip()}")


def choose_base(mode: str) -> str:
    """The base image to build on, made or pulled if needed."""
    explicit = os.environ.get("SVCAUDIT_PYTHON_IMAGE")
    if explicit:
        if not has_image(explicit):
            raise StepFailed("base", f"SVCAUDIT_PYTHON_IMAGE={explicit} is not in the engine")
        return explicit
    public = public_base()
    if mode in ("auto", "public"):
        if has_image(public):
            say(f"base: {public} (present)")
            return public
        pulled = docker("pull", public, check=False, timeout=300)
        if pulled.returncode == 0:
            say(f"base: {public} (pulled)")
            return public
        if mode == "public":
            raise StepFailed("base", f"cannot pull {public}: {pulled.stderr.strip()}")
        say(f"base: {public} cannot be pulled here; using a base made from Debian's packages")
    tag = local_base_tag()
    if has_image(tag):
        say(f"base: {tag} (cached)")
        return tag
    t = time.monotonic()
    build_local_base(tag)
    say(f"base: {tag} built in {time.monotonic() - t:.0f}s")
    return tag


def wheels() -> Path:
    """The pinned runtime closure and the build backend as wheels, fetched once per pin set."""
    pins = (REPO / "requirements" / "image.txt").read_bytes()
    backend = re.search(r"requires\s*=\s*\[([^\]]*)\]", (REPO / "pyproject.toml").read_text())
    backend_reqs = re.findall(r'"([^"]+)"', backend.group(1)) if backend else []
    key = hashlib.sha256(pins + "\n".join(backend_reqs).encode()).hexdigest()[:12]
    out = cache_root() / f"wheels-{key}"
    if (out / ".complete").exists():
        say(f"wheels: cached in {out}")
        return out
    say(f"wheels: fetching the pinned closure and {', '.join(backend_reqs)} with the host's pip")
    tmp = Path(tempfile.mkdtemp(prefix=".wheels-", dir=cache_root()))
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp)]
    for argv in (
        [*pip, "-r", str(REPO / "requirements" / "image.txt")],
        [*pip, *backend_reqs],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StepFailed(
                "wheels", proc.stderr.strip().splitlines()[-1] if proc.stderr else "pip failed"
            )
    (tmp / ".complete").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def context(folder: Path, wheel_dir: Path) -> None:
    """Only what the Dockerfile copies, plus the wheels under requirements/wheels."""
    for name in CONTEXT_FILES:
        shutil.copy2(REPO / name, folder / name)
    (folder / "requirements").mkdir()
    shutil.copy2(REPO / "requirements" / "image.txt", folder / "requirements" / "image.txt")
    shutil.copytree(wheel_dir, folder / "requirements" / "wheels")
    shutil.copytree(
        REPO / "operator",
        folder / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )


def build(tag: str, base: str, wheel_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="svcaudit-image-") as tmp:
        ctx = Path(tmp)
        context(ctx, wheel_dir)
        say(f"build: docker build --network none -t {tag} (base {base})")
        proc = docker(
            "build",
            "--network",
            "none",
            "--build-arg",
            f"PYTHON_IMAGE={base}",
            "--build-arg",
            "PIP_OFFLINE=1",
            "-t",
            tag,
            str(ctx),
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
            raise StepFailed("build", f"docker build failed:\n{tail}")
    # Earlier builds of ours that no tag names any more (the Dockerfile's title label).
    docker("image", "prune", "--force", "--filter", f"label={IMAGE_LABEL}", check=False)


def smoke(tag: str) -> None:
    """The image starts, read-only, as non-root, with no network, and answers."""
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-i",
            "--pull",
            "never",
            "--read-only",
            "--network",
            "none",
            tag,
            "expect",
            "-f",
            "-",
            "-o",
            "json",
        ],
        input=SMOKE_OBJECTS.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0 or '"services"' not in proc.stdout:
        raise StepFailed(
            "smoke", f"the image does not run `svcaudit expect`: {proc.stderr.strip()[-400:]}"
        )
    user = docker("image", "inspect", "--format", "{{.Config.User}}", tag).stdout.strip()
    if not user or user.split(":")[0] in ("0", "root"):
        raise StepFailed(
            "smoke", f"the image runs as {user or 'root'}, not a numeric non-root user"
        )
    say(f"smoke: `svcaudit expect` ran read-only, user {user}, no network")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=os.environ.get("IMAGE", DEFAULT_TAG))
    parser.add_argument(
        "--base",
        choices=("auto", "public", "local"),
        default=os.environ.get("SVCAUDIT_BASE", "auto"),
        help="auto: the public base if present or pullable, else one made from Debian's packages",
    )
    args = parser.parse_args(argv)
    try:
        try:
            engine.up()
        except engine.EngineError as exc:
            raise StepFailed("engine", str(exc)) from exc
        base = choose_base(args.base)
        wheel_dir = wheels()
        build(args.tag, base, wheel_dir)
        smoke(args.tag)
    except StepFailed as exc:
        print(f"[image] FAILED at step {exc}", file=sys.stderr, flush=True)
        return 1
    size = docker("image", "inspect", "--format", "{{.Size}}", args.tag).stdout.strip()
    say(f"{args.tag} ready ({int(size or 0) / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
