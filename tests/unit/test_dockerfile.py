"""The production image's inputs: the Dockerfile, the wheel it installs, the locks.

hadolint (make lint) checks the Dockerfile's form; these check what the house asks of it:
a non-root user, dependencies only from the hash-checked production lock, nothing copied
in that the wheel does not need, a stop signal and a health check, no floating ``latest``
image, the Python of CI, OCI labels, the health check on the port setting. The image's
entry point is run outside a container (there is no engine here). The wheel built from
the repository must hold no stand-in, benchmark or test code, and it may need fpdf2 only
through the ``demo`` extra.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from delivery_server.settings import Settings
from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_LOCK = "requirements.lock"
DEV_LOCK = "requirements-dev.lock"
# What the wheel is built from, and the lock its dependencies are installed from.
ALLOWED_COPIES = {"pyproject.toml", "README.md", "delivery_server", PRODUCTION_LOCK}
LEFT_OUT = ("stand_in/", "bench/", "tests/")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, arguments = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def test_the_parser_joins_continued_lines() -> None:
    text = "FROM a:1 AS b\n# note\nRUN x \\\n    # inside\n    && y\nUSER 1\n"
    assert parse_dockerfile(text) == [
        Instruction("FROM", "a:1 AS b", 1),
        Instruction("RUN", "x && y", 3),
        Instruction("USER", "1", 6),
    ]


def test_the_image_runs_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    users = [ins for ins in final_stage(dockerfile) if ins.keyword == "USER"]
    assert users, "the final stage sets no USER: the server would run as root"
    user = users[-1].arguments.split(":")[0]
    assert user not in {"root", "0"}, f"Dockerfile line {users[-1].line}: USER is root"
    entry = next(i for i, ins in enumerate(dockerfile) if ins.keyword == "ENTRYPOINT")
    assert dockerfile.index(users[-1]) < entry, "USER comes after ENTRYPOINT"


def test_dependencies_come_only_from_the_production_lock(dockerfile: list[Instruction]) -> None:
    installs = [
        ins
        for ins in final_stage(dockerfile)
        if ins.keyword == "RUN" and re.search(r"\bpip install\b", ins.arguments)
    ]
    assert installs, "the final stage installs nothing"
    from_lock = False
    for ins in installs:
        for command in ins.arguments.split("&&"):
            words = shlex.split(command)
            if "install" not in words:
                continue
            if "--require-hashes" in words:
                lock = words[words.index("-r") + 1]
                assert Path(lock).name == PRODUCTION_LOCK, f"line {ins.line}: installs {lock}"
                from_lock = True
            else:  # the wheel itself: its dependencies are the lock's
                assert "--no-deps" in words, f"line {ins.line}: resolves outside the lock"
    assert from_lock, f"no RUN installs {PRODUCTION_LOCK} with --require-hashes"


def test_only_what_the_wheel_needs_is_copied_in(dockerfile: list[Instruction]) -> None:
    copied = set()
    for ins in dockerfile:
        if ins.keyword in {"COPY", "ADD"}:
            words = shlex.split(ins.arguments)
            assert ins.keyword == "COPY", f"line {ins.line}: ADD (COPY says what it does)"
            if any(w.startswith("--from=") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            copied.update(Path(s).as_posix().rstrip("/") for s in sources)
    assert copied <= ALLOWED_COPIES, f"copied into the image: {sorted(copied - ALLOWED_COPIES)}"
    assert {"pyproject.toml", "delivery_server", PRODUCTION_LOCK} <= copied


def test_the_image_stops_on_sigterm_and_checks_its_health(
    dockerfile: list[Instruction],
) -> None:
    keywords = {ins.keyword: ins.arguments for ins in final_stage(dockerfile)}
    assert keywords.get("STOPSIGNAL") == "SIGTERM"
    assert "/healthz" in keywords.get("HEALTHCHECK", ""), "no HEALTHCHECK on /healthz"


def _image_tags() -> list[tuple[str, str]]:
    found = [
        ("Dockerfile", ins.arguments.split()[0])
        for ins in parse_dockerfile((ROOT / "Dockerfile").read_text())
        if ins.keyword == "FROM"
    ]
    compose = (ROOT / "docker" / "compose.yml").read_text()
    found += [("docker/compose.yml", m) for m in re.findall(r"^\s*image:\s*(\S+)", compose, re.M)]
    return found


@pytest.mark.parametrize(("where", "image"), _image_tags())
def test_no_image_floats_on_latest(where: str, image: str) -> None:
    _, _, tag = image.rpartition("/")[2].partition(":")
    assert tag, f"{where}: {image} has no tag (it means latest)"
    assert tag != "latest", f"{where}: {image} floats on latest"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # The locked hatchling of the dev environment builds it: no download, as make does.
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*build, "--wheel-dir", str(out), str(ROOT)],
        check=True,
        timeout=90,
    )
    (built,) = out.glob("delivery_server-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_no_stand_in_bench_or_tests(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "delivery_server/app/__init__.py" in names
    strays = [n for n in names if n.startswith(LEFT_OUT) or "/stand_in/" in n]
    assert not strays, f"in the production wheel: {strays[:5]}"


def test_the_wheel_needs_fpdf2_only_for_the_demo(wheel: zipfile.ZipFile) -> None:
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = Parser().parsestr(wheel.read(metadata).decode()).get_all("Requires-Dist") or []
    fpdf = [Requirement(r) for r in requires if canonicalize_name(Requirement(r).name) == "fpdf2"]
    assert fpdf, "no fpdf2 at all: the demo extra lost it"
    for requirement in fpdf:
        marker = str(requirement.marker or "")
        assert marker == 'extra == "demo"', f"fpdf2 required outside the demo extra: {marker!r}"


def parse_lock(name: str) -> dict[str, str]:
    """Pinned versions by package name; every pin must carry a hash."""
    pins: dict[str, str] = {}
    lines = (ROOT / name).read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if not match:
            continue
        following = lines[number + 1] if number + 1 < len(lines) else ""
        assert "--hash=sha256:" in following, f"{name}: {match[1]} has no hash"
        pins[canonicalize_name(match[1])] = match[2]
    assert pins, f"{name}: no pins"
    return pins


def _declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    wanted, seen = list(extras), set()
    while wanted:
        extra = wanted.pop()
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                wanted += [e for e in requirement.extras if e not in seen]
            else:
                requirements.append(requirement)
    return requirements


@pytest.mark.parametrize(
    ("lock", "extras"), [(PRODUCTION_LOCK, ()), (DEV_LOCK, ("dev", "demo", "bench"))]
)
def test_the_locks_satisfy_pyproject(lock: str, extras: tuple[str, ...]) -> None:
    pins = parse_lock(lock)
    for requirement in _declared(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}: {requirement.name} is not locked: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock}: {requirement.name}=={pins[name]} does not satisfy {requirement}:"
            " run make lock"
        )


def test_production_lock_is_the_dev_lock_s_subset_without_the_demo() -> None:
    production, dev = parse_lock(PRODUCTION_LOCK), parse_lock(DEV_LOCK)
    assert "fpdf2" not in production
    differing = {n: (v, dev.get(n)) for n, v in production.items() if dev.get(n) != v}
    assert not differing, f"pinned differently in the two locks: {differing}"


def _argument_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.arguments:
            name, _, value = ins.arguments.partition("=")
            defaults[name] = value
    return defaults


def test_the_image_runs_the_python_of_ci(dockerfile: list[Instruction]) -> None:
    # CI runs this suite on its Python: the image must run the same release line.
    version = _argument_defaults(dockerfile)["PYTHON_VERSION"]
    assert version == f"{sys.version_info.major}.{sys.version_info.minor}"
    bases = [ins.arguments.split()[0] for ins in dockerfile if ins.keyword == "FROM"]
    assert bases == ["python:${PYTHON_VERSION}-slim"] * 2, bases


def test_the_image_carries_oci_labels(dockerfile: list[Instruction]) -> None:
    labels = dict(
        word.split("=", 1)
        for ins in final_stage(dockerfile)
        if ins.keyword == "LABEL"
        for word in shlex.split(ins.arguments)
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "org.opencontainers.image."
    assert labels[prefix + "title"] == project["name"]
    assert labels[prefix + "licenses"] == project["license"]
    assert labels[prefix + "version"] == "${VERSION}"
    assert _argument_defaults(final_stage(dockerfile))["VERSION"] == project["version"]
    assert labels[prefix + "revision"] == "${REVISION}"


def _healthcheck_command(dockerfile: list[Instruction]) -> list[str]:
    (healthcheck,) = [ins for ins in final_stage(dockerfile) if ins.keyword == "HEALTHCHECK"]
    command: list[str] = json.loads(healthcheck.arguments.partition("CMD ")[2])
    return command


def test_the_health_check_port_is_the_server_s_setting(dockerfile: list[Instruction]) -> None:
    default_port = str(Settings.model_fields["http_port"].default)
    assert f"os.environ.get('DELIVERY_HTTP_PORT', '{default_port}')" in " ".join(
        _healthcheck_command(dockerfile)
    )
    exposed = [ins.arguments for ins in final_stage(dockerfile) if ins.keyword == "EXPOSE"]
    assert exposed == [default_port]


def _image_environment(dockerfile: list[Instruction]) -> dict[str, str]:
    return dict(
        word.split("=", 1)
        for ins in final_stage(dockerfile)
        if ins.keyword == "ENV"
        for word in shlex.split(ins.arguments)
    )


@pytest.mark.timeout(120)
def test_the_entry_point_serves_checks_healthy_and_stops_on_the_stop_signal(
    dockerfile: list[Instruction], tmp_path: Path
) -> None:
    """What the image runs, run outside a container (there is no engine here): the
    ENTRYPOINT with the db-upgrade task's and the service's CMD, the image's environment,
    the HEALTHCHECK's command, and the STOPSIGNAL ending it within the stop timeout."""
    (entrypoint,) = [json.loads(i.arguments) for i in dockerfile if i.keyword == "ENTRYPOINT"]
    (cmd,) = [json.loads(i.arguments) for i in final_stage(dockerfile) if i.keyword == "CMD"]
    (stop_signal,) = [i.arguments for i in final_stage(dockerfile) if i.keyword == "STOPSIGNAL"]
    scripts = Path(sys.executable).parent
    program = [str(scripts / entrypoint[0]), *entrypoint[1:]]
    port = free_port()
    env = {
        **os.environ,
        **_image_environment(dockerfile),
        # The image listens on every interface; here the loopback one is enough.
        "DELIVERY_HTTP_HOST": "127.0.0.1",
        "DELIVERY_HTTP_PORT": str(port),
        "DELIVERY_DATABASE_URL": f"sqlite:///{tmp_path / 'delivery.db'}",
        "DELIVERY_OUTBOX_DIR": str(tmp_path / "outbox"),
    }
    subprocess.run([*program, "db", "upgrade"], env=env, cwd=tmp_path, check=True, timeout=60)
    health = [
        sys.executable if word == "python" else word for word in _healthcheck_command(dockerfile)
    ]

    def healthy() -> bool:
        return subprocess.run(health, env=env, capture_output=True, timeout=10).returncode == 0

    assert not healthy(), "the health check passes with no server"
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([*program, *cmd], env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_for(lambda: server.poll() is not None or healthy(), timeout=60, what="healthy")
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        server.send_signal(getattr(signal, stop_signal))
        stop_timeout = Settings.model_fields["stop_timeout"].default
        assert server.wait(timeout=stop_timeout) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        log.close()
    assert not healthy()
