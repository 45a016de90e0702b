"""The HEALTHCHECK round inside a real container.

One container of the end-to-end image (Dockerfile.example, built as
tests/e2e/images.py builds it) runs ``python -m http.server`` on its loopback;
then, interleaved, ``docker exec`` runs in it: torchprobe's http check, curl
doing the same GET, ``python -c pass`` and ``python -c "import click"``. Each
round pays the same ``docker exec`` (client, daemon, runc); what differs is
the program run, so the ratios say what a probe written in Python costs next
to the usual ``curl -f`` HEALTHCHECK, and next to the least a click program
costs (the interpreter and click).

The image has no curl (a debootstrap minbase has none, and no network reaches
a build here), so Debian's curl of the host is copied in with every library it
links and the host's dynamic loader, and run through that loader: it loads
nothing from the image, and the image's own libraries stay as they were.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .cli_targets import parse_importtime
from .harness import (
    REPORT,
    Command,
    Settings,
    Target,
    alternate,
    clean_env,
    median,
    not_measured,
    ratio_target,
    unexpected,
    walls,
)

PORT = 8000
URL = f"http://127.0.0.1:{PORT}/"
CURL_DIR = "/opt/host-curl"  # where the copied curl lies inside the container
#: The targets of the specification: torchprobe's round within 1.35 times
#: curl's; where the ``import click`` floor alone exceeds that, within 1.1
#: times the floor.
CURL_LIMIT = 1.35
FLOOR_LIMIT = 1.1

ROWS = (
    ("docker-curl", "docker round vs curl"),
    ("docker-click", "docker round vs import click"),
    ("docker-floor", "docker import click vs curl"),
    ("docker-python", "docker python -c pass vs curl"),
)


def engine_missing() -> str:
    """Why no container can be run here, or "" when an engine answers."""
    if shutil.which("docker") is None:
        return "no docker client on PATH (bash .ci/docker-setup.sh installs the engine)"
    try:
        done = subprocess.run(
            ["docker", "version", "-f", "{{.Server.Version}}"],
            capture_output=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        return "no Docker engine answers `docker version` (bash .ci/docker-setup.sh starts one)"
    return ""


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: exit {done.returncode}: {done.stderr}")
    return done


def _image() -> str:
    # tests/ is a directory of the repository, importable from it (the suite
    # runs with the repository as its working directory).
    from tests.e2e import images

    if not images.base_image_present():
        images.make_base_image()
    with tempfile.TemporaryDirectory(prefix="torchprobe-bench-") as context:
        return images.build_image(images.make_context(Path(context)))


def curl_bundle(folder: Path) -> list[str] | None:
    """The host's curl, every library ``ldd`` lists for it and the loader, in
    ``folder``; the argv that runs it from CURL_DIR, or None without a curl."""
    curl = shutil.which("curl")
    if curl is None:
        return None
    listing = subprocess.run(["ldd", curl], capture_output=True, text=True, timeout=30)
    libs, loader = folder / "lib", None
    libs.mkdir()
    for line in listing.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1:
            found = parts[parts.index("=>") + 1]
            if found.startswith("/"):
                shutil.copy(found, libs / parts[0])  # under its soname, not the file's name
        elif parts and parts[0].startswith("/"):
            loader = parts[0]  # /lib64/ld-linux-x86-64.so.2
    if listing.returncode != 0 or loader is None:
        return None
    shutil.copy(loader, folder / "ld.so")
    shutil.copy(curl, folder / "curl")
    for path in [folder, libs, *folder.rglob("*")]:
        path.chmod(0o755)  # the image's user (uid 10001) reads and runs them
    return [f"{CURL_DIR}/ld.so", "--library-path", f"{CURL_DIR}/lib", f"{CURL_DIR}/curl"]


def docker_round(s: Settings) -> list[Target]:
    why = engine_missing()
    if why:
        return [not_measured(id, title, f"not measured: {why}") for id, title in ROWS]
    image = _image()
    name = f"torchprobe-bench-{uuid.uuid4().hex[:8]}"
    try:
        # No network but the loopback, and the image's own HEALTHCHECK off: it
        # would run torchprobe beside the rounds timed.
        _docker("run", "-d", "--init", "--network", "none", "--no-healthcheck", "--name", name,
                image, "python", "-m", "http.server", str(PORT), "--bind", "127.0.0.1")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="torchprobe-curl-") as folder:
            curl = curl_bundle(Path(folder))
            if curl is not None:
                _docker("cp", folder, f"{name}:{CURL_DIR}")
        if curl is None:
            why = "no curl on this host to copy into the container"
            return [not_measured(id, title, f"not measured: {why}") for id, title in ROWS]
        return _measure(s, name, curl)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def _wait_for_server(exec_: list[str], curl: list[str]) -> None:
    for _ in range(100):
        done = subprocess.run([*exec_, *curl, "-f", "-s", "-o", "/dev/null", URL],
                              capture_output=True, timeout=30)  # fmt: skip
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the container's http.server does not answer {URL}: {done.stderr!r}")


def _measure(s: Settings, name: str, curl: list[str]) -> list[Target]:
    exec_ = ["docker", "exec", name]
    _wait_for_server(exec_, curl)
    env = clean_env()
    commands = {
        "torchprobe": Command([*exec_, "torchprobe", f"http:url={URL}"], env),
        "curl": Command([*exec_, *curl, "-f", "-s", "-o", "/dev/null", URL], env),
        "python": Command([*exec_, "python", "-c", "pass"], env),
        "click": Command([*exec_, "python", "-c", "import click"], env),
    }
    runs = alternate(commands, s.docker_reps, s.warmup)
    broken = unexpected(runs, commands)
    tp, base = walls(runs["torchprobe"]), walls(runs["curl"])
    click, python = walls(runs["click"]), walls(runs["python"])
    # The floor makes the curl target impossible when importing click alone
    # takes longer than the round torchprobe is allowed.
    floor_bound = median(click) > CURL_LIMIT * median(base)
    floor_text = f"importing click alone takes {median(click) / median(base):.2f}x curl's round"
    vs_curl = ratio_target(
        "docker-curl",
        ROWS[0][1],
        None if floor_bound else CURL_LIMIT,
        tp,
        base,
        broken,
        note="baseline: docker exec C curl -f -s -o /dev/null (the host's curl, copied in)"
        + (f"; not judged: {floor_text}, so the next row is" if floor_bound else ""),
    )
    vs_click = ratio_target(
        "docker-click",
        ROWS[1][1],
        FLOOR_LIMIT if floor_bound else None,
        tp,
        click,
        broken,
        note="baseline: docker exec C python -c 'import click'"
        + (
            f"; judged: {floor_text}"
            if floor_bound
            else f"; judged only where importing click alone takes over {CURL_LIMIT}x curl's round"
        ),
    )
    floor = ratio_target(
        "docker-floor",
        ROWS[2][1],
        None,
        click,
        base,
        broken,
        note="no target: what a click program costs at least, next to curl",
    )
    bare = ratio_target(
        "docker-python",
        ROWS[3][1],
        None,
        python,
        base,
        broken,
        note="no target: what starting the interpreter costs, next to curl",
    )
    vs_curl.extra["import_profile"] = _import_profile(exec_)
    vs_curl.extra["curl"] = subprocess.run(
        [*exec_, *curl, "--version"], capture_output=True, text=True, timeout=30
    ).stdout.split("\n")[0]
    assert vs_curl.kind == REPORT or vs_click.kind == REPORT  # exactly one of the two is judged
    return [vs_curl, vs_click, floor, bare]


def _import_profile(exec_: list[str]) -> dict[str, Any]:
    """``python -X importtime -m torchprobe http:...`` inside the container."""
    done = subprocess.run(
        [*exec_, "python", "-X", "importtime", "-m", "torchprobe", f"http:url={URL}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return parse_importtime(done.stderr)
