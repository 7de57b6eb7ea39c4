"""The sandbox image: named by its content, cheap to rebuild, no setuid bits, no package index."""

from __future__ import annotations

import shutil
import time

import docker
import pytest

from sandbox.image import ROOT, build_image, image_files, image_tag

pytestmark = pytest.mark.docker


def copy_sources(target):
    for path in image_files(ROOT):
        destination = target / path.relative_to(ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, destination)
    return target


def test_tag_follows_exactly_the_files_in_the_image(tmp_path):
    root = copy_sources(tmp_path)
    tag = image_tag(root)
    assert tag.startswith("opsbot-sandbox:") and len(tag.partition(":")[2]) == 12
    (root / "sandbox" / "runner.py").write_text("# host-side only: not in the image\n")
    assert image_tag(root) == tag
    with (root / "tools" / "redis.py").open("a") as handle:
        handle.write("\n# changed\n")
    changed = image_tag(root)
    assert changed != tag
    requirements = root / "sandbox" / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("redis==", "redis>="))
    assert image_tag(root) not in (tag, changed)


def test_build_is_a_no_op_when_the_image_is_current(sandbox_image, docker_client):
    lines: list[str] = []
    began = time.monotonic()
    assert build_image(log=lines.append, client=docker_client) == sandbox_image
    assert time.monotonic() - began < 5
    assert lines == [f"{sandbox_image} is up to date."]


def test_image_has_no_setuid_files_and_runs_as_nobody(sandbox_image, docker_client):
    client: docker.DockerClient = docker_client
    setuid = client.containers.run(sandbox_image, ["find", "/", "-xdev", "-perm", "/6000",
                                                   "-type", "f"], user="0", remove=True,
                                   network_mode="none")
    assert setuid == b""
    attrs = client.images.get(sandbox_image).attrs["Config"]
    assert attrs["User"] == "65534:65534"
    assert attrs["Cmd"] == ["python3", "-m", "sandbox.entrypoint"]
    assert not any("TOKEN" in e or "PASSWORD" in e for e in attrs["Env"])
