"""Building the sandbox image, offline, and naming it by its content.

The tag is a content hash (``opsbot-sandbox:<12 hex>``) of exactly what goes into the image: the
``tools`` package, the in-container part of ``sandbox`` (entrypoint and protocol), the
Dockerfile and the pinned requirement set. A code change therefore yields a new tag, and the
runner refuses to start actions from an image that does not match the code (it never falls back
to a stale one silently).

The build never touches a package index from inside a container:

1. base image: ``python:3.11-slim`` plus ``git`` from apt when present locally; else
   ``debian:bookworm-slim`` plus ``python3`` and ``git`` from apt; else (fully offline)
   ``debootstrap --variant=minbase`` with ``python3`` and ``git`` into a directory on the host,
   tarred and ``docker import``-ed. The tarball and the imported image are cached, so this
   ~60 s step happens once per machine. (``git`` is there for MCP git servers, which run
   inside the sandbox and drive the ``git`` binary.)
2. wheels: ``pip download --only-binary=:all:`` for CPython 3.11 manylinux on the host, cached
   per requirement set, then installed by the Dockerfile's first stage with networking disabled.
3. code: ``tools/`` and the sandbox entrypoint, compiled to bytecode (the root fs is read-only).
4. the Pulumi CLI, copied from the host when ``pulumi`` is on PATH at build time (its
   installers download from the internet, so the image never fetches one); the image's
   ``opsbot.pulumi-cli`` label says whether it is in, and ``/ops help`` says so too.

Usage::

    tag = build_image()          # prints progress, returns "opsbot-sandbox:1a2b3c4d5e6f"
    image_tag()                  # the tag the current code needs, without building
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from sandbox.config import LOCAL_ENGINE

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "sandbox" / ".build"
REPOSITORY = "opsbot-sandbox"
BASE_REPOSITORY = "opsbot-sandbox-base"
LOCAL_BASES = ("python:3.11-slim", "debian:bookworm-slim")
SANDBOX_FILES = ("__init__.py", "protocol.py", "entrypoint.py", "Dockerfile", "requirements.txt")
BASE_PACKAGES = ("python3", "git")
DEBOOTSTRAP = ("--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm")
SLIM_PATHS = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
              "var/cache/apt/archives", "var/lib/apt/lists")
WHEEL_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
                   "manylinux_2_34_x86_64")

PULUMI_LABEL = "opsbot.pulumi-cli"  # "present" or "absent": what /ops help tells people
Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The image could not be built; ``str(e)`` says what failed and what to do."""


def image_files(root: Path = ROOT) -> list[Path]:
    """Every file whose content ends up in the image (and therefore in its tag)."""
    found = [*(root / "tools").rglob("*.py"), *(root / "tools").rglob("*.json")]  # + API docs
    tools = sorted(p for p in found if "__pycache__" not in p.parts)
    return tools + [root / "sandbox" / name for name in SANDBOX_FILES]


def image_tag(root: Path = ROOT, cli: list[Path] | None = None) -> str:
    """``opsbot-sandbox:<12 hex>``: a hash of paths and contents of :func:`image_files`, and
    of which Pulumi CLI goes in (names, sizes, mtimes of :func:`pulumi_cli`)."""
    digest = hashlib.sha256(" ".join(BASE_PACKAGES).encode() + b"\0")  # the base's recipe too
    for path in image_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for path in pulumi_cli() if cli is None else cli:
        stat = path.stat()
        digest.update(f"cli {path.name} {stat.st_size} {stat.st_mtime_ns}\0".encode())
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def pulumi_cli(found: str | None = None) -> list[Path]:
    """The host's Pulumi CLI, if any: every ``pulumi*`` executable beside the ``pulumi`` on
    PATH (the CLI runs its language host, ``pulumi-language-python``, from there)."""
    found = found or shutil.which("pulumi")
    if found is None:
        return []
    directory = Path(found).resolve().parent
    return sorted(p for p in directory.glob("pulumi*") if p.is_file() and os.access(p, os.X_OK))


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def build_image(
    log: Log = print,
    client: docker.DockerClient | None = None,
    root: Path = ROOT,
    docker_host: str | None = None,
) -> str:
    """Build the image for the current code unless it exists; return its tag.

    Blocking and long on a fresh machine (~1 min); seconds after a code change. Safe to call
    from several processes at once: builds are serialised with a file lock. ``docker_host``
    is DOCKER_HOST (default: the local engine). Failures raise :class:`ImageBuildError`.
    """
    client = client or docker.DockerClient(base_url=docker_host or LOCAL_ENGINE)
    tag = image_tag(root)
    with build_lock():
        if image_exists(client, tag):
            log(f"{tag} is up to date.")
            return tag
        base = base_image(client, log)
        wheels = wheelhouse(root / "sandbox" / "requirements.txt", log)
        cli = pulumi_cli()
        context = _context(root, wheels, cli)
        _docker_build(client, context, tag, base, log, cli)
    log(f"Built {tag} (base {base}).")
    return tag


@contextmanager
def build_lock() -> Iterator[None]:
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / "build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def base_image(client: docker.DockerClient, log: Log) -> str:
    if image_exists(client, LOCAL_BASES[0]):
        return _apt_base(client, log, LOCAL_BASES[0], ("git",))
    if image_exists(client, LOCAL_BASES[1]):
        return _apt_base(client, log, LOCAL_BASES[1], BASE_PACKAGES)
    return _debootstrap_base(client, log)


def _recipe_tag(*parts: str) -> str:
    return f"{BASE_REPOSITORY}:{hashlib.sha256(' '.join(parts).encode()).hexdigest()[:12]}"


def _apt_base(client: docker.DockerClient, log: Log, base: str, packages: tuple[str, ...]) -> str:
    """``base`` + ``packages`` from apt (the one build step that needs the mirror)."""
    tag = _recipe_tag(base, "apt", *packages)
    if image_exists(client, tag):
        return tag
    log(f"Installing {', '.join(packages)} from apt on {base} ...")
    context = BUILD_DIR / "apt-base"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(
        f"FROM {base}\nRUN apt-get update && apt-get install -y "
        f"--no-install-recommends {' '.join(packages)} && rm -rf /var/lib/apt/lists/*\n"
    )
    stream_build(client, log, path=str(context), tag=tag, rm=True, forcerm=True)
    return tag


def _debootstrap_base(client: docker.DockerClient, log: Log) -> str:
    """A minimal bookworm + python3 root fs made on the host, imported as an image (cached)."""
    tag = _recipe_tag("debootstrap", *DEBOOTSTRAP, *SLIM_PATHS)
    if image_exists(client, tag):
        return tag
    tarball = BUILD_DIR / f"{tag.partition(':')[2]}-rootfs.tar"
    if not tarball.exists():
        _debootstrap_tarball(tarball, log)
    log(f"Importing {tarball.name} as {tag} ...")
    repository, _, version = tag.partition(":")
    try:
        client.api.import_image_from_file(str(tarball), repository=repository, tag=version)
    except APIError as e:
        raise ImageBuildError(f"docker import of {tarball} failed: {e.explanation}") from None
    return tag


def _debootstrap_tarball(tarball: Path, log: Log) -> None:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise ImageBuildError(
            "No python:3.11-slim or debian:bookworm-slim image is present and the offline "
            "base build needs debootstrap run as root: install debootstrap (apt) and run "
            "`opsbot sandbox build` as root, or load python:3.11-slim into Docker."
        )
    rootfs = BUILD_DIR / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    log("Running debootstrap (minbase bookworm + python3 + git; about a minute, once) ...")
    run_command(["debootstrap", *DEBOOTSTRAP, str(rootfs)], "debootstrap")
    for relative in SLIM_PATHS:
        target = rootfs / relative
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    partial = tarball.with_suffix(".partial")
    run_command(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], "tar")
    partial.rename(tarball)
    shutil.rmtree(rootfs)


def wheelhouse(requirements: Path, log: Log, no_deps: tuple[str, ...] = (),
               name: str = "wheels") -> Path:
    """Host-side ``pip download`` of the pinned set for CPython 3.11 manylinux (cached);
    ``no_deps`` are downloaded without their declared dependencies."""
    key = hashlib.sha256(requirements.read_bytes() + " ".join(no_deps).encode()).hexdigest()[:12]
    wheels = BUILD_DIR / f"{name}-{key}"
    if (wheels / "requirements.txt").exists():
        return wheels
    log(f"Downloading wheels for {requirements.name} (host side) ...")
    partial = wheels.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    common = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311", *platforms, "--dest", str(partial)]
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
    run_command([*pip, *common, "-r", str(requirements)], "pip download")
    run_command([*pip, *common, "--no-deps", "pip", *no_deps], "pip download (pip itself)")
    shutil.copy(requirements, partial / "requirements.txt")
    partial.rename(wheels)
    return wheels


def _context(root: Path, wheels: Path, cli: list[Path] | None = None,
             context: Path = BUILD_DIR / "context") -> Path:
    """The build context: Dockerfile, wheels/, pip.whl, opsbot/{tools,sandbox} and pulumi-bin/
    (the host's Pulumi CLI, or nothing)."""
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheels").mkdir(parents=True)
    (context / "pulumi-bin").mkdir()
    for binary in cli or []:
        shutil.copy(binary, context / "pulumi-bin" / binary.name)
    for wheel in wheels.iterdir():
        name = "pip.whl" if wheel.name.startswith("pip-") else f"wheels/{wheel.name}"
        shutil.copy(wheel, context / name)
    shutil.copy(root / "sandbox" / "Dockerfile", context / "Dockerfile")
    for path in image_files(root):
        if path.suffix in (".py", ".json"):
            target = context / "opsbot" / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return context


def _docker_build(
    client: docker.DockerClient, context: Path, tag: str, base: str, log: Log, cli: list[Path]
) -> None:
    log(f"Building {tag} from {base} (networking disabled) ...")
    labels = {"opsbot.sandbox": "1", PULUMI_LABEL: "present" if cli else "absent"}
    stream_build(
        client, log, path=str(context), tag=tag, buildargs={"BASE": base}, network_mode="none",
        rm=True, forcerm=True, labels=labels,
    )


def stream_build(client: docker.DockerClient, log: Log, **kwargs: object) -> None:
    recent: list[str] = []
    try:
        for chunk in client.api.build(decode=True, **kwargs):
            if "error" in chunk:
                detail = " | ".join(recent[-5:])
                raise ImageBuildError(f"docker build failed: {chunk['error'].strip()} ({detail})")
            text = chunk.get("stream", "").strip()
            recent += [text] if text else []
            if text.startswith("Step "):
                log(f"  {text}")
    except (APIError, BuildError) as e:
        raise ImageBuildError(f"docker build failed: {e}") from None


def run_command(command: list[str], what: str) -> None:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ImageBuildError(f"{what} failed (exit {done.returncode}): " + " | ".join(tail))


def main() -> int:
    """``python -m sandbox.image``: build the image, print its tag as JSON on the last line."""
    try:
        tag = build_image()
    except ImageBuildError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps({"image": tag}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
