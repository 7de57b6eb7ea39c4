"""The sandbox image: named by its content, cheap to rebuild, no setuid bits, no package index."""

from __future__ import annotations

import shutil
import time

import docker
import pytest

from sandbox.image import (
    PULUMI_LABEL,
    ROOT,
    _context,
    build_image,
    image_files,
    image_tag,
    pulumi_cli,
)

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


def test_the_hosts_pulumi_cli_goes_into_the_context_and_the_tag(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pulumi", "pulumi-language-python", "pulumi.md"):
        (bin_dir / name).write_text("#!/bin/sh\necho fake pulumi\n")
        (bin_dir / name).chmod(0o755 if name != "pulumi.md" else 0o644)
    cli = pulumi_cli(str(bin_dir / "pulumi"))
    assert [p.name for p in cli] == ["pulumi", "pulumi-language-python"]
    root = copy_sources(tmp_path / "src")
    assert image_tag(root, cli=cli) != image_tag(root, cli=[])
    (tmp_path / "wheels").mkdir()
    context = _context(root, tmp_path / "wheels", cli, context=tmp_path / "context")
    assert sorted(p.name for p in (context / "pulumi-bin").iterdir()) == [
        "pulumi", "pulumi-language-python"]
    empty = _context(root, tmp_path / "wheels", [], context=tmp_path / "context-2")
    assert list((empty / "pulumi-bin").iterdir()) == []  # the Dockerfile's COPY still works


def test_the_image_holds_the_pulumi_sdk_and_says_whether_it_holds_the_cli(sandbox_image,
                                                                         docker_client):
    version = docker_client.containers.run(
        sandbox_image, ["python3", "-c", "import importlib.metadata, pulumi.automation; "
                        "print(importlib.metadata.version('pulumi'))"], remove=True,
        network_mode="none")
    assert version.strip() == b"3.272.0"
    label = docker_client.images.get(sandbox_image).labels[PULUMI_LABEL]
    assert label == ("present" if pulumi_cli() else "absent")


async def test_a_pulumi_action_in_the_image_without_a_cli_answers_one_sentence(sandbox_runner,
                                                                               tmp_path):
    from sandbox.protocol import SandboxRequest
    from tools.base import Status
    from tools.pulumi import PulumiConfig
    from tools.pulumi_ops import NO_CLI

    if pulumi_cli():
        pytest.skip("a Pulumi CLI is on this host's PATH, so the image holds it")
    (tmp_path / "Pulumi.yaml").write_text("name: infra\nruntime: python\n")
    config = PulumiConfig(work_dir=str(tmp_path), backend_url="file:///tmp/s", stacks=("dev",))
    outcome = await sandbox_runner.run(SandboxRequest(
        run_id="run-p", call_id="p", toolset="pulumi", action="stacks",
        config=config.model_dump(mode="json"), timeout=60))
    assert outcome.result.status is Status.ERROR and outcome.result.error == NO_CLI
