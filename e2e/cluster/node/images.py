"""Container images for the real node, built without any registry or image tool.

Each image is assembled by hand as a docker-archive tarball (one tar per layer, a config JSON,
manifest.json) from Debian's busybox-static plus the project's own files under `images/`, then
imported into containerd with `ctr images import`. Tags live under `svcaudit.local/`, a name
nobody serves, so with imagePullPolicy IfNotPresent/Never nothing is ever pulled.

Tarballs are cached in `<cache>/images-<hash>/`, the hash covering every input (this file, the
files under images/, the busybox binary), so they are rebuilt only when a source changes.
Standard library only: `python -m e2e.cluster` runs before any virtualenv exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "images"
BUSYBOX = Path("/bin/busybox")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PAUSE_IMAGE = "svcaudit.local/pause:3.10"
SIMPLESERVICE_IMAGE = "svcaudit.local/simpleservice:0.5.0"
SHELL_IMAGE = "svcaudit.local/shell:1.0"


@dataclass(frozen=True)
class ImageSpec:
    """One image: its layers (folders under images/; `base` also gets busybox) and its config."""

    file: str
    layers: tuple[str, ...]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    ports: tuple[int, ...] = ()
    env: tuple[str, ...] = field(default=(PATH_ENV,))


IMAGES: dict[str, ImageSpec] = {
    # The pod sandbox: holds the namespaces, exits at once on SIGTERM.
    PAUSE_IMAGE: ImageSpec("pause.tar", ("base",), entrypoint=["/usr/local/bin/idle"]),
    # The tutorial's app: HTTP on 9876 (/info, /env, /health), written in busybox shell.
    SIMPLESERVICE_IMAGE: ImageSpec(
        "simpleservice.tar", ("base", "simpleservice"), entrypoint=["/app/serve"], ports=(9876,)
    ),
    # The jump pod: busybox sh, wget, nslookup, ip; idles until told to stop.
    SHELL_IMAGE: ImageSpec("shell.tar", ("base",), cmd=["/usr/local/bin/idle"]),
}


def cache_root() -> Path:
    return Path(os.environ.get("SVCAUDIT_CACHE", Path.home() / ".cache" / "svcaudit"))


def arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def source_files() -> list[Path]:
    return sorted(p for p in SOURCES.rglob("*") if p.is_file())


def sources_hash() -> str:
    """A digest of every input of the images: change any and they are rebuilt."""
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} missing: apt-get install busybox-static")
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(arch().encode())
    h.update(hashlib.sha256(BUSYBOX.read_bytes()).digest())
    for path in source_files():
        h.update(str(path.relative_to(SOURCES)).encode() + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def tar_info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    return info


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def busybox_applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return sorted(a for a in out.stdout.split() if a and "/" not in a and a != "busybox")


def layer(name: str) -> bytes:
    """The layer tar for folder images/<name> (deterministic: fixed owners and times)."""
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    dirs: dict[str, int] = {}
    files: dict[str, tuple[int, bytes | None, str]] = {}  # path -> (mode, data, symlink target)
    if name == "base":
        for d, mode in (
            ("bin", 0o755),
            ("dev", 0o755),
            ("etc", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("tmp", 0o1777),
            ("root", 0o700),
            ("var", 0o755),
            ("run", 0o755),
            ("usr", 0o755),
            ("usr/local", 0o755),
        ):
            dirs[d] = mode
        files["bin/busybox"] = (0o755, BUSYBOX.read_bytes(), "")
        for applet in busybox_applets():
            files.setdefault(f"bin/{applet}", (0o777, None, "busybox"))
    root = SOURCES / name
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            dirs.setdefault(rel, 0o755)
        else:
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            files[rel] = (mode, path.read_bytes(), "")
    for rel in list(files):  # every parent folder gets an entry
        parent = os.path.dirname(rel)
        while parent:
            dirs.setdefault(parent, 0o755)
            parent = os.path.dirname(parent)
    for d in sorted(dirs):
        entries.append((tar_info(d + "/", tarfile.DIRTYPE, dirs[d]), None))
    for rel in sorted(files):
        mode, data, target = files[rel]
        if target:
            entries.append((tar_info(rel, tarfile.SYMTYPE, mode, link=target), None))
        else:
            entries.append((tar_info(rel, tarfile.REGTYPE, mode, len(data or b"")), data))
    return _tar(entries)


def archive_metadata(
    ref: str, diff_ids: list[str], config: dict[str, object], created_by: list[str]
) -> tuple[str, bytes, bytes]:
    """(config file name, image config, manifest.json) of a docker-archive (`docker save`
    layout) holding one image tagged `ref`, whose layers have these diff IDs (hex sha256)."""
    image_config = json.dumps(
        {
            "architecture": arch(),
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": by} for by in created_by],
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(image_config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{d}/layer.tar" for d in diff_ids]}]
    ).encode()
    return config_name, image_config, manifest


def image_archive(ref: str, spec: ImageSpec, layers: dict[str, bytes]) -> bytes:
    """A docker-archive (`docker save` layout) holding one image tagged `ref`."""
    diff_ids = [hashlib.sha256(layers[name]).hexdigest() for name in spec.layers]
    config: dict[str, object] = {"Env": list(spec.env), "WorkingDir": "/"}
    if spec.entrypoint:
        config["Entrypoint"] = spec.entrypoint
    if spec.cmd:
        config["Cmd"] = spec.cmd
    if spec.ports:
        config["ExposedPorts"] = {f"{p}/tcp": {} for p in spec.ports}
    config["Labels"] = {"org.opencontainers.image.source": "svcaudit e2e/cluster/node/images"}
    config_name, image_config, manifest = archive_metadata(
        ref, diff_ids, config, [f"svcaudit images.py: layer {name}" for name in spec.layers]
    )
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name, digest in zip(spec.layers, diff_ids, strict=True):
        entries.append((tar_info(f"{digest}/", tarfile.DIRTYPE, 0o755), None))
        entries.append(
            (
                tar_info(f"{digest}/layer.tar", tarfile.REGTYPE, 0o644, len(layers[name])),
                layers[name],
            )
        )
    entries.append((tar_info(config_name, tarfile.REGTYPE, 0o644, len(image_config)), image_config))
    entries.append((tar_info("manifest.json", tarfile.REGTYPE, 0o644, len(manifest)), manifest))
    return _tar(entries)


def build(cache: Path | None = None) -> Path:
    """The folder of image tarballs for the current sources, built if not cached yet."""
    out = (cache or cache_root()) / f"images-{sources_hash()}"
    if (out / "images.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".images-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        layers = {name: layer(name) for name in {n for s in IMAGES.values() for n in s.layers}}
        index = {}
        for ref, spec in IMAGES.items():
            (tmp / spec.file).write_bytes(image_archive(ref, spec, layers))
            index[ref] = spec.file
        (tmp / "images.json").write_text(json.dumps(index, indent=2) + "\n")
        try:
            tmp.rename(out)
        except OSError:  # built meanwhile by someone else
            if not (out / "images.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"[images] built {len(IMAGES)} images in {time.monotonic() - started:.1f}s: {out}",
        flush=True,
    )
    return out


def tarballs(folder: Path) -> dict[str, Path]:
    """Image reference -> tarball, for a folder made by build()."""
    index = json.loads((folder / "images.json").read_text())
    return {ref: folder / name for ref, name in index.items()}


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
