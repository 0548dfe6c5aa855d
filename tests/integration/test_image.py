"""`make image` (e2e/docker/image.py): the image it builds runs read-only, as non-root, with no
network; each failure is one error line naming its step, and leaves nothing running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.docker import engine, image
from tests.fixtures import REPO

EXAMPLE = REPO / "tests" / "unit" / "data" / "expect-example.yaml"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def containers() -> list[str]:
    return docker("ps", "-aq").stdout.split()


def test_the_image_runs_expect_read_only_non_root_offline(operator_image: str) -> None:
    """README's promise, as a user types it."""
    proc = subprocess.run(
        [
            *("docker", "run", "--rm", "-i", "--read-only", "--network", "none"),
            *(operator_image, "expect", "-f", "-", "-o", "json"),
        ],
        input=EXAMPLE.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    local = subprocess.run(
        [Path(sys.executable).with_name("svcaudit"), "expect", "-f", str(EXAMPLE), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out == json.loads(local.stdout)  # the image computes what the tested code does
    config = json.loads(docker("image", "inspect", operator_image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["svcaudit"] and config["Cmd"] == ["run"]


def test_base_and_wheels_are_cached_by_content(operator_image: str) -> None:
    tag = image.local_base_tag()
    if image.has_image(image.public_base()):
        pytest.skip("the public base is present: the local base is not used here")
    assert image.has_image(tag)
    assert len(tag.rsplit("-", 1)[1]) == 12  # the recipe's hash
    wheels = image.wheels()  # cached: no download
    assert (wheels / ".complete").exists()
    assert any(w.name.startswith("kopf-") for w in wheels.glob("*.whl"))
    assert any(w.name.startswith("setuptools-") for w in wheels.glob("*.whl"))  # the backend


def test_a_failed_base_build_names_its_step(
    operator_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image, "DEBIAN_MIRROR", "http://127.0.0.1:9/debian")  # nothing listens
    tag = "svcaudit.local/python-base:test-broken"
    with pytest.raises(image.StepFailed) as failed:
        image.build_local_base(tag)
    assert failed.value.step == "base" and "debootstrap failed" in str(failed.value)
    assert not image.has_image(tag)
    assert not list(Path("/tmp").glob("svcaudit-base-*"))  # its scratch folder is gone


def test_an_image_that_does_not_start_names_its_step(operator_image: str) -> None:
    broken = "svcaudit-test:no-svcaudit"
    docker("tag", image.local_base_tag(), broken)  # a Python base without svcaudit in it
    before = containers()
    try:
        with pytest.raises(image.StepFailed) as failed:
            image.smoke(broken)
        assert failed.value.step == "smoke"
        assert containers() == before  # nothing left running or stopped
    finally:
        docker("rmi", broken, check=False)


def test_no_docker_engine_is_one_error_line(tmp_path: Path) -> None:
    """Without docker on PATH (no client, no daemon), one line names the step and the fix."""
    proc = subprocess.run(
        [sys.executable, "-m", "e2e.docker.image"],
        cwd=REPO,
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "[image] FAILED at step engine: no dockerd on this machine: run `make deps` "
        "(apt-get install docker.io)"
    ], proc.stderr
    assert engine.answers()  # the running engine was not touched
