"""A kind node image built here, offline: `kind build node-image` cannot work without a registry.

It does by hand what kind v0.33.0's base Dockerfile and node-image builder do, from Debian's
packages and the binaries e2e/cluster/build.sh makes (no registry is ever asked):
1. binaries: build.sh kube kubeadm etcd coredns crictl kind (each cached once built);
2. base: debootstrap bookworm (systemd 252 still boots on this cgroup v1 host; kind's trixie
   base would not) with containerd, runc, iptables... plus kind's base files from the kind
   module source (`go mod download sigs.k8s.io/kind@KIND_VERSION`), then the steps of kind's
   base Dockerfile; containerd is told to pull from nowhere, to use our pause image as the
   sandbox, a runc wrapper that drops CAP_SYS_RESOURCE and oom_score_adj no lower than its own
   (root here lacks CAP_SYS_RESOURCE); a ptp CNI conflist replaces kindnetd (which cannot be
   pulled); a unit refuses pods' packets to Service IPs kube-proxy has not translated (files
   under e2e/kind/node/). Cached in the engine as svcaudit.local/kind-base;
3. images: docker-archive tarballs of svcaudit.local/kube-{apiserver,controller-manager,
   scheduler,proxy}:KUBE_VERSION, svcaudit.local/etcd:ETCD_VERSION and
   svcaudit.local/coredns:COREDNS_VERSION, each a tiny root filesystem holding our binary
   (kube-proxy on a small Debian one with iptables and conntrack), plus the pause image of
   e2e/cluster/node/images.py;
4. node: a container of the base gets kubeadm, kubelet, kubectl and /kind/version; its own
   containerd imports every image (`ctr -n k8s.io images import`); every image `kubeadm config
   images list` asks for with kind-config-local.yaml's patches must be there; `docker commit`
   as svcaudit.local/kind-node:KUBE_VERSION-<hash of every input>.

The whole build is skipped when that tag exists. Progress goes to stderr, the tag to stdout:
  IMAGE=$(python3 -m e2e.kind.node_image)   # from the repository's root
  kind create cluster --name svcaudit-e2e --image "$IMAGE" --config e2e/kind/kind-config-local.yaml
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from e2e.cluster.cluster import read_versions
from e2e.cluster.node import images as busybox_images
from e2e.docker import engine
from e2e.docker.image import has_image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_SH = REPO / "e2e" / "cluster" / "build.sh"
VERSIONS_ENV = REPO / "e2e" / "cluster" / "versions.env"
KIND_CONFIG = HERE / "kind-config-local.yaml"
NODE_FILES = HERE / "node"  # copied over the node's root (after kind's base files)
KUBE_PROXY_FILES = HERE / "kube-proxy"

REGISTRY = "svcaudit.local"  # a name nobody serves: nothing can be pulled by mistake
NODE_REPOSITORY = f"{REGISTRY}/kind-node"
BASE_REPOSITORY = f"{REGISTRY}/kind-base"
SANDBOX_IMAGE = busybox_images.PAUSE_IMAGE
RUNC_WRAPPER = "/usr/local/sbin/runc-svcaudit"
SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("SVCAUDIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What kind's base Dockerfile installs, minus storage-test extras (nfs-common, open-iscsi,
# e2fsprogs, fuse-overlayfs) and curl; plus what kind installs from release tarballs
# (containerd, runc, CNI plugins: Debian's here) and socat.
BASE_PACKAGES = (
    "systemd",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "bash",
    "ca-certificates",
    "jq",
    "procps",
    "socat",
    "containerd",
    "runc",
    "containernetworking-plugins",
)
KUBE_PROXY_PACKAGES = ("iptables", "conntrack")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENTRYPOINT = ["/usr/local/bin/entrypoint", "/sbin/init"]
BUILD_CONTAINER_PREFIX = "svcaudit-kind-build-"

started = time.monotonic()


class BuildError(RuntimeError):
    """A step failed; the message names it."""


def say(message: str) -> None:
    print(f"[kind-node {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache" / "svcaudit"))


V = read_versions()
KUBE = V["KUBE_VERSION"]
ETCD = V["ETCD_VERSION"]
COREDNS = V["COREDNS_VERSION"]
KIND = V["KIND_VERSION"]
CRI_TOOLS = V["CRI_TOOLS_VERSION"]


def run(
    argv: list[str],
    *,
    step: str,
    input_file: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> str:
    """Run a command; on failure raise BuildError naming the step and the output's tail."""
    stdin = open(input_file, "rb") if input_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.run(argv, stdin=stdin, capture_output=True, env=env, cwd=cwd)
    finally:
        if input_file:
            stdin.close()  # type: ignore[union-attr]
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((out + proc.stderr.decode(errors="replace")).splitlines()[-12:])
        raise BuildError(f"{step}: `{' '.join(argv[:6])}...` exited {proc.returncode}:\n{tail}")
    return out


def docker(*args: str, step: str, input_file: Path | None = None) -> str:
    return run(["docker", *args], step=step, input_file=input_file, env=engine.docker_env())


# ---------------------------------------------------------------------------------- inputs


def binaries() -> dict[str, Path]:
    cache = cache_root()
    kube = cache / f"kubernetes-{KUBE}"
    out = {
        name: kube / name
        for name in (
            "kubeadm",
            "kubelet",
            "kubectl",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
        )
    }
    out["etcd"] = cache / f"etcd-{ETCD}" / "etcd"
    out["coredns"] = cache / f"coredns-{COREDNS}" / "coredns"
    out["crictl"] = cache / f"crictl-{CRI_TOOLS}" / "crictl"
    out["kind"] = cache / f"kind-{KIND}" / "kind"
    return out


def ensure_binaries() -> dict[str, Path]:
    bins = binaries()
    missing = [name for name, path in bins.items() if not os.access(path, os.X_OK)]
    if missing:
        say(f"binaries: building {', '.join(missing)} (e2e/cluster/build.sh; cold: minutes)")
        proc = subprocess.run(
            ["bash", str(BUILD_SH), "kube", "kubeadm", "etcd", "coredns", "crictl", "kind"],
            stdout=sys.stderr,
            stderr=sys.stderr,
        )
        if proc.returncode != 0:
            raise BuildError(f"binaries: build.sh exited {proc.returncode}")
        missing = [name for name, path in bins.items() if not os.access(path, os.X_OK)]
        if missing:
            raise BuildError(f"binaries: still missing after build.sh: {', '.join(missing)}")
    return bins


def kind_base_files() -> Path:
    """kind's images/base/files, from the kind module in the Go module cache."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    modcache = run(["go", "env", "GOMODCACHE"], step="kind files", env=env).strip()
    files = Path(modcache) / f"sigs.k8s.io/kind@{KIND}" / "images" / "base" / "files"
    if not files.is_dir():
        say(f"kind files: go mod download sigs.k8s.io/kind@{KIND}")
        with tempfile.TemporaryDirectory() as tmp:
            run(
                ["go", "mod", "download", f"sigs.k8s.io/kind@{KIND}"],
                step="kind files",
                env={**env, "GOFLAGS": ""},
                cwd=tmp,
            )
    if not files.is_dir():
        raise BuildError(f"kind files: {files} missing after go mod download")
    return files


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        h.update(file_digest(path).encode())
    return h.hexdigest()


def base_recipe_hash(kind_files: Path, crictl: Path) -> str:
    """Everything the base image is made of: change any and it is rebuilt."""
    h = hashlib.sha256()
    for part in (
        SUITE,
        busybox_images.arch(),
        ",".join(BASE_PACKAGES),
        SANDBOX_IMAGE,
        RUNC_WRAPPER,
        PATH_ENV,
        json.dumps(ENTRYPOINT),
        inspect.getsource(build_base),
        inspect.getsource(customize_base),
        inspect.getsource(patch_containerd_config),
        tree_digest(kind_files),
        tree_digest(NODE_FILES),
        file_digest(crictl),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------- debootstrap


def debootstrap(target: Path, packages: tuple[str, ...], step: str) -> None:
    if shutil.which("debootstrap") is None:
        raise BuildError(f"{step}: debootstrap is missing (apt-get install debootstrap)")
    debs = cache_root() / "debootstrap-debs" / SUITE
    debs.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--cache-dir={debs}",
            f"--include={','.join(packages)}",
            SUITE,
            str(target),
            DEBIAN_MIRROR,
        ],
        step=step,
    )
    say(f"{step}: debootstrap {SUITE} done in {time.monotonic() - t:.0f}s")


def slim(root: Path) -> None:
    """Drop what an image does not need (apt lists and caches, docs, logs)."""
    for rel in (
        "var/cache/apt",
        "var/lib/apt/lists",
        "var/log",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ):
        folder = root / rel
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    for rel in ("etc/resolv.conf", "etc/hostname"):  # the engine provides both
        path = root / rel
        if path.exists() or path.is_symlink():
            path.unlink()
            path.write_text("")


# ---------------------------------------------------------------------------------- base


def copy_tree(src: Path, dst: Path, file_mode: int | None = None) -> None:
    """Copy src's files over dst (folders 0755; files keep their mode unless file_mode)."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copyfile(path, target)
        mode = (
            file_mode if file_mode is not None else (0o755 if os.access(path, os.X_OK) else 0o644)
        )
        target.chmod(mode)


def patch_containerd_config(text: str) -> str:
    """kind's containerd config, for this machine (root lacks CAP_SYS_RESOURCE): our pause
    image as the sandbox, runc through the wrapper that drops CAP_SYS_RESOURCE (privileged
    pods such as kube-proxy) and oom_score_adj kept at or above containerd's own."""
    sandbox = 'sandbox_image = "registry.k8s.io/pause:3.10"'
    if sandbox not in text:
        raise BuildError(f"base: kind's containerd config has no `{sandbox}` line any more")
    text = text.replace(sandbox, f'sandbox_image = "{SANDBOX_IMAGE}"')
    # lowering a container's oom_score_adj below containerd's own needs CAP_SYS_RESOURCE too
    # (kubelet asks -998 for sandboxes: runc fails with "can't get final child's PID from
    # pipe"); as in a user namespace, containerd is told to keep it at or above its own
    restrict = "restrict_oom_score_adj = false"
    if restrict not in text:
        raise BuildError(f"base: kind's containerd config has no `{restrict}` line any more")
    text = text.replace(restrict, "restrict_oom_score_adj = true")
    options = re.findall(
        r"^[ \t]*\[plugins\.\"io\.containerd\.grpc\.v1\.cri\"\.containerd"
        r"\.runtimes\.[\w-]+\.options\]\n",
        text,
        re.M,
    )
    if len(options) < 2:
        raise BuildError("base: kind's containerd config has no runtime options tables")
    for header in options:
        indent = header[: len(header) - len(header.lstrip())]
        text = text.replace(header, f'{header}{indent}  BinaryName = "{RUNC_WRAPPER}"\n')
    return text


def customize_base(root: Path, kind_files: Path, crictl: Path) -> None:
    """What kind's base Dockerfile does after its `COPY`s and package installs."""
    # kind's static files: scripts 0755, everything else 0644
    copy_tree(kind_files / "usr" / "local" / "bin", root / "usr/local/bin", 0o755)
    copy_tree(kind_files / "kind", root / "kind", 0o644)
    copy_tree(kind_files / "kind" / "bin", root / "kind/bin", 0o755)
    copy_tree(kind_files / "LICENSES", root / "LICENSES", 0o644)
    for sub in (
        "",
        "containerd",
        "default",
        "sysctl.d",
        "systemd/system",
        "systemd/system/kubelet.service.d",
    ):
        src = kind_files / "etc" / sub
        for path in sorted(p for p in src.iterdir() if p.is_file()):
            target = root / "etc" / sub / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            target.chmod(0o644)
    (root / "kind").chmod(0o755)
    (root / "kind/bin").chmod(0o755)
    # the Dockerfile's clean-up of systemd units a container must not start
    lib = root / "lib/systemd/system"
    for pattern in (
        "sysinit.target.wants/systemd-tmpfiles-setup.service",
        "multi-user.target.wants/*",
        "local-fs.target.wants/*",
        "sockets.target.wants/*udev*",
        "sockets.target.wants/*initctl*",
        "basic.target.wants/*",
    ):
        for path in lib.glob(pattern):
            path.unlink()
    for path in (root / "etc/systemd/system").glob("*.wants/*"):
        path.unlink()
    with open(root / "etc/systemd/journald.conf", "a") as f:
        f.write("ReadKMsg=no\n")
    init = root / "sbin/init"
    if init.exists() or init.is_symlink():
        init.unlink()
    init.symlink_to("/usr/lib/systemd/systemd")
    # Debian's containerd lives in /usr/bin; kind's unit starts /usr/local/bin/containerd
    (root / "usr/local/bin/containerd").symlink_to("/usr/bin/containerd")
    shutil.copyfile(crictl, root / "usr/local/bin/crictl")
    (root / "usr/local/bin/crictl").chmod(0o755)
    # CNI plugins where kubelet and containerd look for them
    cni = root / "opt/cni/bin"
    cni.mkdir(parents=True, exist_ok=True)
    for plugin in sorted((root / "usr/lib/cni").iterdir()):
        shutil.copy2(plugin, cni / plugin.name)
    # our files: no-pull proxy for containerd, the runc wrapper, the CNI conflist
    copy_tree(NODE_FILES, root)
    config = root / "etc/containerd/config.toml"
    config.write_text(patch_containerd_config(config.read_text()))
    (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    chroot = ["chroot", str(root)]
    run(
        [
            *chroot,
            "systemctl",
            "enable",
            "kubelet.service",
            "containerd.service",
            "undo-mount-hacks.service",
            "svcaudit-service-range.service",
        ],
        step="base",
    )
    run([*chroot, "systemctl", "mask", "systemd-binfmt.service"], step="base")
    # /etc/containerd/cri-base.json = `ctr oci spec` + the product-files hook, no rlimits
    spec = json.loads(run([*chroot, "ctr", "oci", "spec"], step="base"))
    hooks = spec.setdefault("hooks", {}).setdefault("createContainer", [])
    hooks.append({"path": "/kind/bin/mount-product-files.sh"})
    spec.get("process", {}).pop("rlimits", None)
    (root / "etc/containerd/cri-base.json").write_text(json.dumps(spec, indent=4) + "\n")
    (root / "etc/containerd/cri-base.json").chmod(0o644)
    slim(root)


def build_base(tag: str, kind_files: Path, crictl: Path) -> None:
    work = cache_root() / ".work"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kind-base-", dir=work) as tmp:
        root = Path(tmp) / "rootfs"
        debootstrap(root, BASE_PACKAGES, "base")
        customize_base(root, kind_files, crictl)
        say("base: importing into the engine")
        imported = f"{BASE_REPOSITORY}:import-{tag.rsplit(':', 1)[1]}"
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-c", "."],
            stdout=subprocess.PIPE,
        )
        proc = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                "ENV container=docker",
                "--change",
                f"ENV {PATH_ENV}",
                "--change",
                f"ENTRYPOINT {json.dumps(ENTRYPOINT)}",
                "-",
                imported,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            env=engine.docker_env(),
        )
        if tar.stdout:
            tar.stdout.close()
        if tar.wait() != 0 or proc.returncode != 0:
            raise BuildError(f"base: docker import failed: {proc.stderr.strip()}")
        # `docker import --change` takes no STOPSIGNAL: systemd stops on SIGRTMIN+3
        context = Path(tmp) / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {imported}\nSTOPSIGNAL SIGRTMIN+3\n")
        docker("build", "--network", "none", "-q", "-t", tag, str(context), step="base")
        docker("rmi", imported, step="base")


# ---------------------------------------------------------------------------------- images


def minimal_layer(out: Path) -> None:
    """The root filesystem under every component image: folders, root and nobody, nsswitch."""
    files = {
        "etc/passwd": (
            "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
        ),
        "etc/group": "root:x:0:\nnogroup:x:65534:\n",
        "etc/nsswitch.conf": "hosts: files dns\n",
    }
    dirs = {
        "dev": 0o755,
        "etc": 0o755,
        "proc": 0o555,
        "sys": 0o555,
        "tmp": 0o1777,
        "root": 0o700,
        "run": 0o755,
        "var": 0o755,
        "usr": 0o755,
        "usr/local": 0o755,
        "usr/local/bin": 0o755,
    }
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for d, mode in dirs.items():
            tar.addfile(busybox_images.tar_info(d + "/", tarfile.DIRTYPE, mode))
        for name, text in files.items():
            data = text.encode()
            tar.addfile(
                busybox_images.tar_info(name, tarfile.REGTYPE, 0o644, len(data)), _bytes(data)
            )


def _bytes(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def binary_layer(out: Path, entries: dict[str, Path]) -> None:
    """A layer holding the given files (path in image -> file on the host), mode 0755."""
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        made: set[str] = set()
        for rel, src in entries.items():
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    tar.addfile(busybox_images.tar_info(d + "/", tarfile.DIRTYPE, 0o755))
                    made.add(d)
            with open(src, "rb") as f:
                tar.addfile(
                    busybox_images.tar_info(rel, tarfile.REGTYPE, 0o755, src.stat().st_size), f
                )


def kube_proxy_base_layer(out: Path) -> None:
    """Debian (minbase) with iptables and conntrack, iptables behind the mode-picking wrapper."""
    work = cache_root() / ".work"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kube-proxy-base-", dir=work) as tmp:
        root = Path(tmp) / "rootfs"
        debootstrap(root, KUBE_PROXY_PACKAGES, "images")
        slim(root)
        wrapper = root / "usr/sbin/iptables-wrapper"
        shutil.copyfile(KUBE_PROXY_FILES / "iptables-wrapper", wrapper)
        wrapper.chmod(0o755)
        for name in (
            "iptables",
            "iptables-save",
            "iptables-restore",
            "ip6tables",
            "ip6tables-save",
            "ip6tables-restore",
        ):
            link = root / "usr/sbin" / name
            if link.exists() or link.is_symlink():
                link.unlink()
            link.symlink_to("iptables-wrapper")
        run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "--exclude=./dev/*",
                "-C",
                str(root),
                "-cf",
                str(out),
                ".",
            ],
            step="images",
        )


def write_archive(out: Path, ref: str, layers: list[Path], config: dict[str, object]) -> None:
    """A docker-archive (the `docker save` layout) of one image, for `ctr images import`."""
    diff_ids = [file_digest(p) for p in layers]
    config_name, image_config, manifest = busybox_images.archive_metadata(
        ref,
        diff_ids,
        {
            "Env": [PATH_ENV],
            "WorkingDir": "/",
            **config,
            "Labels": {"org.opencontainers.image.source": "svcaudit e2e/kind/node_image.py"},
        },
        [f"svcaudit e2e/kind/node_image.py: {p.name}" for p in layers],
    )
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for layer, digest in zip(layers, diff_ids, strict=True):
            tar.addfile(busybox_images.tar_info(f"{digest}/", tarfile.DIRTYPE, 0o755))
            with open(layer, "rb") as f:
                tar.addfile(
                    busybox_images.tar_info(
                        f"{digest}/layer.tar", tarfile.REGTYPE, 0o644, layer.stat().st_size
                    ),
                    f,
                )
        tar.addfile(
            busybox_images.tar_info(config_name, tarfile.REGTYPE, 0o644, len(image_config)),
            _bytes(image_config),
        )
        tar.addfile(
            busybox_images.tar_info("manifest.json", tarfile.REGTYPE, 0o644, len(manifest)),
            _bytes(manifest),
        )
    tmp.rename(out)


def component_images() -> dict[str, tuple[str, str]]:
    """Image reference -> (binary name, path in the image) for every image of our binaries."""
    out = {
        f"{REGISTRY}/{name}:{KUBE}": (name, f"usr/local/bin/{name}")
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
    }
    out[f"{REGISTRY}/etcd:{ETCD}"] = ("etcd", "usr/local/bin/etcd")
    out[f"{REGISTRY}/coredns:{COREDNS}"] = ("coredns", "coredns")
    return out


def build_images(folder: Path, bins: dict[str, Path], kube_proxy_base: Path) -> dict[str, Path]:
    """The docker-archive of each component image (cached in folder), plus the pause image's."""
    folder.mkdir(parents=True, exist_ok=True)
    minimal = folder / "layer-minimal.tar"
    if not minimal.exists():
        minimal_layer(minimal.with_suffix(".partial"))
        minimal.with_suffix(".partial").rename(minimal)
    out: dict[str, Path] = {}
    for ref, (name, path) in component_images().items():
        archive = folder / f"{name}.tar"
        out[ref] = archive
        if archive.exists():
            continue
        t = time.monotonic()
        layer = folder / f"layer-{name}.tar"
        binary_layer(layer, {path: bins[name]})
        base = kube_proxy_base if name == "kube-proxy" else minimal
        write_archive(archive, ref, [base, layer], {"Entrypoint": ["/" + path]})
        layer.unlink()
        say(f"images: {ref} ({archive.stat().st_size >> 20} MB) in {time.monotonic() - t:.1f}s")
    pause_folder = busybox_images.build()
    out[SANDBOX_IMAGE] = busybox_images.tarballs(pause_folder)[SANDBOX_IMAGE]
    return out


# ---------------------------------------------------------------------------------- node


def kubeadm_patches(config_text: str) -> list[str]:
    """The literal-block items of `kubeadmConfigPatches:` in a kind config (no YAML parser:
    standard library only; the config writes each patch as a `- |` block)."""
    lines = config_text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("kubeadmConfigPatches:"))
    except StopIteration:
        return []
    patches: list[str] = []
    i = start + 1
    while i < len(lines):
        line = lines[i]
        if line.strip() and not line.startswith(" "):
            break  # the next top-level key
        item = re.match(r"^(\s*)- \|\s*$", line)
        if not item:
            i += 1
            continue
        indent = len(item.group(1))
        block: list[str] = []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            block.append(lines[i])
            i += 1
        width = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        patches.append("\n".join(b[width:] for b in block).strip() + "\n")
    return patches


def images_list_config() -> str:
    """A kubeadm config with kind-config-local.yaml's ClusterConfiguration patch (kind adds
    only fields that do not name images), for `kubeadm config images list`."""
    cluster = [
        p
        for p in kubeadm_patches(KIND_CONFIG.read_text())
        if re.search(r"^kind:\s*ClusterConfiguration\s*$", p, re.M)
    ]
    if not cluster:
        raise BuildError(f"check: {KIND_CONFIG.name} has no ClusterConfiguration patch")
    body = "\n".join(
        line for line in cluster[0].splitlines() if not line.startswith(("apiVersion:", "kind:"))
    )
    return (
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
        f"kubernetesVersion: {KUBE}\n{body}\n"
    )


def kubelet_pause_patch() -> str | None:
    found = re.search(r"pod-infra-container-image:\s*(\S+)", KIND_CONFIG.read_text())
    return found.group(1).strip("\"'") if found else None


def check_preloaded(container: str) -> None:
    """Every image kubeadm asks for (with our config) is in the node's containerd."""
    config = images_list_config()
    tmp = _write_tmp(config)
    try:
        docker(
            "exec",
            "-i",
            container,
            "sh",
            "-c",
            "cat > /tmp/images-list.yaml",
            step="check",
            input_file=tmp,
        )
    finally:
        tmp.unlink()
    wanted = docker(
        "exec",
        container,
        "kubeadm",
        "config",
        "images",
        "list",
        "--config",
        "/tmp/images-list.yaml",
        step="check",
    ).split()
    docker("exec", container, "rm", "-f", "/tmp/images-list.yaml", step="check")
    have = set(
        docker("exec", container, "ctr", "-n", "k8s.io", "images", "ls", "-q", step="check").split()
    )
    missing = []
    for ref in wanted:
        if re.search(r"/pause:[^/]+$", ref):
            # kubeadm names the pause image only for its preflight pulls (kind skips them)
            # and kubelet's GC pin (kind-config-local.yaml sets that to ours); the sandbox
            # containerd starts is its sandbox_image
            if SANDBOX_IMAGE not in have:
                missing.append(f"{SANDBOX_IMAGE} (containerd's sandbox_image; kubeadm: {ref})")
            continue
        if ref not in have:
            missing.append(ref)
    pinned = kubelet_pause_patch()
    if pinned and pinned != SANDBOX_IMAGE:
        raise BuildError(
            f"check: {KIND_CONFIG.name} pins pause {pinned}, the node's sandbox "
            f"image is {SANDBOX_IMAGE}"
        )
    if missing:
        raise BuildError(
            "check: kubeadm (with the patches of "
            f"{KIND_CONFIG.name}) asks for images the node does not have: {', '.join(missing)}; "
            f"it has: {', '.join(sorted(h for h in have if not h.startswith('sha256:')))}"
        )
    say(
        f"check: all {len(wanted)} images kubeadm asks for are preloaded: {', '.join(wanted)} "
        f"(pause: the sandbox image {SANDBOX_IMAGE})"
    )


def _write_tmp(text: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="svcaudit-kind-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)


def build_node(
    tag: str, base: str, bins: dict[str, Path], archives: dict[str, Path], inputs: str
) -> None:
    name = f"{BUILD_CONTAINER_PREFIX}{os.getpid()}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--pull",
        "never",
        "--network",
        "none",
        "--security-opt",
        "seccomp=unconfined",
        "--entrypoint",
        "sleep",
        base,
        "infinity",
        step="node",
    )
    try:
        for binary in ("kubeadm", "kubelet", "kubectl"):
            docker("cp", str(bins[binary]), f"{name}:/usr/bin/{binary}", step="node")
        docker(
            "exec",
            name,
            "sh",
            "-c",
            "chown root:root /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl && "
            "chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl && "
            f"printf %s {KUBE} > /kind/version",
            step="node",
        )
        # containerd inside the build container, only to import (no unpacking: no mounts)
        docker(
            "exec",
            name,
            "sh",
            "-c",
            "containerd >/tmp/containerd.log 2>&1 & echo $! > /tmp/containerd.pid",
            step="node",
        )
        docker(
            "exec",
            name,
            "bash",
            "-c",
            "for i in $(seq 50); do [ -S /run/containerd/containerd.sock ] && break; "
            "sleep 0.2; done; ctr version >/dev/null",
            step="node",
        )
        for ref, archive in archives.items():
            t = time.monotonic()
            docker(
                "exec",
                "-i",
                name,
                "ctr",
                "-n",
                "k8s.io",
                "images",
                "import",
                "--no-unpack",
                "--all-platforms",
                "-",
                step="node",
                input_file=archive,
            )
            say(f"node: imported {ref} in {time.monotonic() - t:.1f}s")
        check_preloaded(name)
        docker(
            "exec",
            name,
            "bash",
            "-c",
            "pid=$(cat /tmp/containerd.pid); kill $pid; "
            # its parent (sleep) never reaps it: gone or a zombie means it has stopped
            "for i in $(seq 100); do s=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null); "
            "case $s in ''|Z) break ;; esac; sleep 0.1; done; "
            "rm -rf /tmp/containerd.* /run/containerd /var/lib/containerd/tmpmounts",
            step="node",
        )
        t = time.monotonic()
        docker(
            "commit",
            "--change",
            f"ENTRYPOINT {json.dumps(ENTRYPOINT)}",
            "--change",
            f"LABEL io.svcaudit.kind-node.inputs={inputs}",
            name,
            tag,
            step="node",
        )
        say(f"node: committed in {time.monotonic() - t:.1f}s")
    finally:
        subprocess.run(
            ["docker", "rm", "-f", "-v", name], capture_output=True, env=engine.docker_env()
        )


# ---------------------------------------------------------------------------------- main


def inputs_hash(bins: dict[str, Path], base_tag: str, archives_key: str) -> str:
    h = hashlib.sha256()
    for part in (
        base_tag,
        archives_key,
        KIND_CONFIG.read_text(),
        Path(__file__).read_text(),
        *(f"{n}={file_digest(bins[n])}" for n in ("kubeadm", "kubelet", "kubectl")),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def images_key(bins: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for part in (
        busybox_images.arch(),
        json.dumps(component_images(), sort_keys=True),
        ",".join(KUBE_PROXY_PACKAGES),
        inspect.getsource(minimal_layer),
        inspect.getsource(binary_layer),
        inspect.getsource(kube_proxy_base_layer),
        inspect.getsource(write_archive),
        tree_digest(KUBE_PROXY_FILES),
        busybox_images.sources_hash(),
        *(f"{n}={file_digest(bins[n])}" for n, _ in component_images().values()),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def prune(keep: set[str], images_folder: Path) -> None:
    """Remove our older node and base images (not those a container still uses: `docker rmi`
    refuses) and older image archives: each build's inputs differ, so they pile up otherwise."""
    for repository in (NODE_REPOSITORY, BASE_REPOSITORY):
        listed = subprocess.run(
            ["docker", "images", repository, "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True,
            text=True,
            env=engine.docker_env(),
        ).stdout.split()
        for ref in sorted(set(listed) - keep):
            gone = (
                subprocess.run(
                    ["docker", "rmi", ref], capture_output=True, env=engine.docker_env()
                ).returncode
                == 0
            )
            if gone:
                say(f"pruned {ref}")
    for folder in cache_root().glob("kind-images-*"):
        if folder != images_folder and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            say(f"pruned {folder}")


def build(force: bool = False) -> str:
    engine_state = engine.up()
    if engine_state == "existing":
        say("using the Docker engine that answers (not ours)")
    bins = ensure_binaries()
    kind_files = kind_base_files()
    t = time.monotonic()
    base_tag = f"{BASE_REPOSITORY}:{SUITE}-{base_recipe_hash(kind_files, bins['crictl'])}"
    key = images_key(bins)
    tag = f"{NODE_REPOSITORY}:{KUBE}-{inputs_hash(bins, base_tag, key)}"
    say(f"inputs hashed in {time.monotonic() - t:.1f}s: {tag}")
    if has_image(tag) and not force:
        say(f"cached: {tag} exists")
        return tag
    if has_image(base_tag):
        say(f"base: cached ({base_tag})")
    else:
        t = time.monotonic()
        say(f"base: debootstrap {SUITE} + {len(BASE_PACKAGES)} packages (cold: 1-2 min)")
        build_base(base_tag, kind_files, bins["crictl"])
        say(f"base: {base_tag} in {time.monotonic() - t:.0f}s")
    t = time.monotonic()
    folder = cache_root() / f"kind-images-{key}"
    kube_proxy_base = folder / "layer-kube-proxy-base.tar"
    if not kube_proxy_base.exists():
        folder.mkdir(parents=True, exist_ok=True)
        say(f"images: kube-proxy base (debootstrap {SUITE} + {', '.join(KUBE_PROXY_PACKAGES)})")
        kube_proxy_base_layer(kube_proxy_base.with_suffix(".partial"))
        kube_proxy_base.with_suffix(".partial").rename(kube_proxy_base)
    archives = build_images(folder, bins, kube_proxy_base)
    say(f"images: {len(archives)} archives ready in {time.monotonic() - t:.1f}s ({folder})")
    t = time.monotonic()
    build_node(tag, base_tag, bins, archives, tag.rsplit("-", 1)[1])
    say(f"node: {tag} in {time.monotonic() - t:.0f}s")
    prune({tag, base_tag}, folder)
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild the node even if tagged")
    args = parser.parse_args(argv)
    try:
        tag = build(force=args.force)
    except (BuildError, engine.EngineError) as exc:
        say(f"FAILED: {exc}")
        return 1
    say(f"done in {time.monotonic() - started:.1f}s")
    print(tag, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
