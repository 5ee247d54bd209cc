"""The deployment files, checked without a Docker engine.

``docker-compose.yml`` is parsed with PyYAML (anchors and ``<<`` merges resolve as
they do for Compose), each celery command in it is read the way the celery CLI reads
it, and what it names is checked against the code: the app ``-A tasks`` loads, the
queues ``celeryconfig`` declares. The Dockerfile and ``.dockerignore`` are read as
text, instruction by instruction.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
DOCKERIGNORE = ROOT / ".dockerignore"

#: Services run from the project's image, and the celery subcommand each one runs.
APP_SERVICES = {"worker": "worker", "worker-highmem": "worker", "beat": "beat", "flower": "flower"}
WORKERS = ("worker", "worker-highmem")
#: Variables that hold secrets: they must come from the user's environment.
SECRET_VARIABLES = ("REDIS_PASSWORD", "FLOWER_USER", "FLOWER_PASSWORD")

#: A Compose interpolation: ${NAME}, ${NAME:-default}, ${NAME:?message}, ...
ENV_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<modifier>[^}]*)\}")
#: What an interpolation is replaced by before a value is searched for literals.
MASK = "${}"
#: Environment variable names that hold credentials.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|AUTH|CREDENTIAL", re.IGNORECASE)
#: Command-line options whose value is a credential (``--opt value`` or ``--opt=value``).
SECRET_OPTIONS = ("--requirepass", "--masterauth", "--basic-auth", "--password", "-a")
#: ``scheme://user:password@``, found anywhere in a (masked) string.
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://(?P<userinfo>[^\s/@]*)@", re.IGNORECASE)


# -- reading the files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, f"docker-compose.yml has no service {name!r}"
    found = services[name]
    assert isinstance(found, dict)
    return found


def command(svc: dict[str, Any]) -> list[str]:
    """The service's command as an argument list (Compose splits a string like a shell)."""
    raw = svc.get("command")
    if isinstance(raw, str):
        return shlex.split(raw)
    assert isinstance(raw, list), f"no command: {svc!r}"
    return [str(arg) for arg in raw]


def option(args: list[str], *names: str) -> str | None:
    """The value of the first of ``names`` in ``args`` (``-Q x``, ``-Qx``, ``--queues=x``)."""
    for index, arg in enumerate(args):
        for name in names:
            if arg == name:
                return args[index + 1] if index + 1 < len(args) else ""
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1 :]
            if not name.startswith("--") and arg.startswith(name) and not arg.startswith("--"):
                return arg[len(name) :]
    return None


def celery_subcommand(args: list[str]) -> str | None:
    """``worker`` in ``celery -A tasks worker ...``: the first word after the app option."""
    rest = iter(args[1:])
    for arg in rest:
        if arg in ("-A", "--app"):
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def queues(svc: dict[str, Any]) -> set[str]:
    value = option(command(svc), "-Q", "--queues")
    assert value, f"worker command names no queue (-Q): {command(svc)}"
    return {name.strip() for name in value.split(",") if name.strip()}


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    """The service's environment as a mapping (Compose also takes a KEY=VALUE list)."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        pairs = (str(item).partition("=") for item in raw)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {str(key): None if value is None else str(value) for key, value in raw.items()}


def volume_targets(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, for short (``src:/path[:mode]``) and long volume syntax."""
    targets: dict[str, str] = {}
    for volume in svc.get("volumes") or []:
        if isinstance(volume, dict):
            targets[str(volume["target"])] = str(volume.get("source", ""))
        else:
            source, _, rest = str(volume).partition(":")
            targets[rest.split(":")[0]] = source
    return targets


def is_reference_to(value: str | None, variable: str) -> bool:
    """Whether ``value`` is exactly one interpolation of ``variable`` and nothing else."""
    match = ENV_REFERENCE.fullmatch(value or "")
    return match is not None and match["name"] == variable


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every entry of every mapping and list in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield f"{path}[{index}]", None, value
            yield from walk(value, f"{path}[{index}]")


def literal_secrets_in(text: str) -> str:
    """What is left of a credential once its ``${...}`` references are masked out."""
    return ENV_REFERENCE.sub("", text).replace(":", "")


def hard_coded_secrets(document: dict[str, Any]) -> list[str]:
    """Every place of a compose document where a credential is written out literally.

    Each finding names the place and the kind, never the value.
    """
    found: list[str] = []
    for path, key, value in walk(document):
        secret_entry = isinstance(key, str) and SECRET_NAME.search(key)
        if secret_entry and isinstance(value, str | int) and literal_secrets_in(str(value)):
            found.append(f"{path}: a literal value")
        if isinstance(value, list) and all(isinstance(arg, str) for arg in value):
            args = value
        elif isinstance(value, str) and path.endswith(".command"):
            args = shlex.split(value)
        else:
            args = []
        for name in SECRET_OPTIONS:
            secret = option(args, name) if name.startswith("--") else _exact_option(args, name)
            if secret and literal_secrets_in(secret):
                found.append(f"{path}: a literal {name}")
        if isinstance(value, str):
            for url in URL_CREDENTIALS.finditer(ENV_REFERENCE.sub(MASK, value)):
                password = url["userinfo"].partition(":")[2]
                if password.replace(MASK, ""):
                    found.append(f"{path}: a password in a URL")
    return found


def _exact_option(args: list[str], name: str) -> str | None:
    """A short option's value only as a separate word (``-a`` must not match ``-any``)."""
    for index, arg in enumerate(args[:-1]):
        if arg == name:
            return args[index + 1]
    return None


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments).

    Continuation lines are joined, comments dropped, and ``${ARG}`` in ``FROM`` lines
    replaced by the defaults of the ``ARG`` lines above the first stage.
    """
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions:
        if keyword == "FROM":
            for name, default in global_args.items():
                arguments = arguments.replace(f"${{{name}}}", default).replace(f"${name}", default)
            stages.append([(keyword, arguments)])
        elif stages:
            stages[-1].append((keyword, arguments))
        elif keyword == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name] = default
    return stages


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword in ("ENV", "ARG"):
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context, per ``.dockerignore``.

    Follows moby's patternmatcher: ``*`` and ``?`` stop at ``/``, ``**`` crosses it, a
    pattern that matches a parent directory matches everything below it, ``!``
    re-includes, and the last matching pattern wins.
    """
    excluded = False
    parents = path.split("/")
    candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern)
        regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negated
    return excluded


# -- services and their celery commands ----------------------------------------------


def test_compose_defines_redis_both_workers_beat_and_flower(compose: dict[str, Any]) -> None:
    assert {"redis", *APP_SERVICES} <= set(compose["services"])


@pytest.mark.parametrize(("name", "subcommand"), APP_SERVICES.items())
def test_each_app_service_runs_celery_on_the_tasks_app(
    compose: dict[str, Any], name: str, subcommand: str
) -> None:
    args = command(service(compose, name))

    assert args[0] == "celery"
    assert option(args, "-A", "--app") == "tasks"
    assert celery_subcommand(args) == subcommand


def test_workers_consume_only_queues_that_celeryconfig_declares(compose: dict[str, Any]) -> None:
    import celeryconfig

    declared = {queue.name for queue in celeryconfig.task_queues}
    consumed = {name: queues(service(compose, name)) for name in WORKERS}

    for name, names in consumed.items():
        assert names <= declared, f"{name} consumes undeclared queues {names - declared}"
    # A declared queue that no worker consumes would hold its tasks forever.
    assert set().union(*consumed.values()) == declared


def test_every_routed_task_lands_on_a_queue_a_worker_consumes(compose: dict[str, Any]) -> None:
    import celeryconfig

    consumed = set().union(*(queues(service(compose, name)) for name in WORKERS))
    routed = {route["queue"] for route in celeryconfig.task_routes.values()}

    assert routed | {celeryconfig.task_default_queue} <= consumed


def test_the_main_worker_consumes_documents_and_recovery(compose: dict[str, Any]) -> None:
    args = command(service(compose, "worker"))

    assert queues(service(compose, "worker")) == {"documents", "recovery"}
    assert (option(args, "-n", "--hostname") or "").startswith("worker@")


def test_the_highmem_worker_consumes_only_highmem_one_task_at_a_time(
    compose: dict[str, Any],
) -> None:
    args = command(service(compose, "worker-highmem"))

    assert queues(service(compose, "worker-highmem")) == {"highmem"}
    assert option(args, "-c", "--concurrency") == "1"
    # Its own node name, so that the two workers do not collide on one host.
    assert (option(args, "-n", "--hostname") or "").startswith("highmem@")


def test_beat_keeps_its_schedule_file_in_a_volume(compose: dict[str, Any]) -> None:
    beat = service(compose, "beat")
    schedule = option(command(beat), "-s", "--schedule")

    assert schedule, "beat names no schedule file (--schedule)"
    assert str(Path(schedule).parent) in volume_targets(beat)


@pytest.mark.parametrize("name", WORKERS)
def test_workers_mount_the_documents_volume_at_the_allowed_root(
    compose: dict[str, Any], name: str
) -> None:
    worker = service(compose, name)
    roots = environment(worker).get("DOCRECOVERY_ROOTS")

    assert roots, "DOCRECOVERY_ROOTS is not set"
    assert roots in volume_targets(worker)
    assert volume_targets(worker)[roots] in compose.get("volumes", {})


def test_the_workers_have_separate_spools(compose: dict[str, Any]) -> None:
    # Spool files are named by process id, and ids repeat across containers.
    spools = [volume_targets(service(compose, name)).get("/data/spool") for name in WORKERS]

    assert None not in spools
    assert len(set(spools)) == len(spools)


# -- redis ---------------------------------------------------------------------------


def test_redis_runs_the_official_redis_7_image(compose: dict[str, Any]) -> None:
    assert str(service(compose, "redis").get("image", "")).startswith("redis:7")


def test_redis_persists_to_an_append_only_file_in_a_named_volume(
    compose: dict[str, Any],
) -> None:
    redis = service(compose, "redis")

    assert option(command(redis), "--appendonly") == "yes"
    assert volume_targets(redis).get("/data") in compose.get("volumes", {})


def test_redis_never_evicts_a_key(compose: dict[str, Any]) -> None:
    # An evicted failure record is a document nobody will ever retry.
    assert option(command(service(compose, "redis")), "--maxmemory-policy") == "noeviction"


def test_redis_requires_the_password_from_the_environment(compose: dict[str, Any]) -> None:
    password = option(command(service(compose, "redis")), "--requirepass")

    assert is_reference_to(password, "REDIS_PASSWORD"), password


def test_redis_healthcheck_pings_with_the_password_from_the_environment(
    compose: dict[str, Any],
) -> None:
    redis = service(compose, "redis")
    test = redis["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)

    assert "redis-cli" in text
    assert "PONG" in text, "a NOAUTH or LOADING reply must not count as healthy"
    assert is_reference_to(environment(redis).get("REDISCLI_AUTH"), "REDIS_PASSWORD")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_reach_redis_with_the_password_from_the_environment(
    compose: dict[str, Any], name: str
) -> None:
    redis_url = environment(service(compose, name)).get("REDIS_URL") or ""
    parts = urlsplit(ENV_REFERENCE.sub(MASK, redis_url))

    assert (parts.scheme, parts.hostname, parts.port) == ("redis", "redis", 6379)
    # The password is one interpolation of REDIS_PASSWORD, and nothing else is.
    assert parts.password == MASK, redis_url
    assert [m["name"] for m in ENV_REFERENCE.finditer(redis_url)] == ["REDIS_PASSWORD"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_start_once_redis_is_healthy(compose: dict[str, Any], name: str) -> None:
    depends_on = service(compose, name).get("depends_on") or {}

    assert isinstance(depends_on, dict), "a list form cannot wait for health"
    assert depends_on.get("redis", {}).get("condition") == "service_healthy"


@pytest.mark.parametrize("name", ["redis", *APP_SERVICES])
def test_every_service_restarts_after_a_crash(compose: dict[str, Any], name: str) -> None:
    assert service(compose, name).get("restart") in ("always", "unless-stopped", "on-failure")


# -- flower --------------------------------------------------------------------------


def flower_basic_auth(flower: dict[str, Any]) -> str | None:
    """Flower's credentials: ``--basic-auth=...`` or ``FLOWER_BASIC_AUTH``."""
    return option(command(flower), "--basic-auth") or environment(flower).get("FLOWER_BASIC_AUTH")


def test_flower_requires_basic_auth_taken_from_the_environment(compose: dict[str, Any]) -> None:
    flower = service(compose, "flower")
    credentials = flower_basic_auth(flower) or ""

    assert ENV_REFERENCE.sub("", credentials) == ":", credentials
    names = [m["name"] for m in ENV_REFERENCE.finditer(credentials)]
    assert names == ["FLOWER_USER", "FLOWER_PASSWORD"]
    # Flower 2 would otherwise answer its API to anyone.
    assert "FLOWER_UNAUTHENTICATED_API" not in environment(flower)


def published_port(port: Any) -> tuple[str, str]:
    """(host port, container port) of a ``ports`` entry, short or long syntax."""
    if isinstance(port, dict):
        return str(port.get("published", "")), str(port["target"])
    parts = str(port).partition("/")[0].split(":")
    return (parts[-2] if len(parts) > 1 else ""), parts[-1]


def test_flower_serves_on_port_5555(compose: dict[str, Any]) -> None:
    flower = service(compose, "flower")

    assert option(command(flower), "--port") == "5555"
    assert ("5555", "5555") in {published_port(port) for port in flower.get("ports", [])}


# -- secrets -------------------------------------------------------------------------


def test_no_secret_is_written_into_the_compose_file(compose: dict[str, Any]) -> None:
    assert hard_coded_secrets(compose) == []


def test_the_secret_check_finds_literal_passwords() -> None:
    # Given a compose document with each kind of credential written out, beside
    # the same credentials taken from the environment
    document = {
        "services": {
            "worker": {"environment": {"REDIS_URL": "redis://:hunter2@redis:6379/0"}},
            "redis": {"command": "redis-server --requirepass hunter2"},
            "flower": {
                "command": "celery -A tasks flower --basic-auth=admin:hunter2",
                "environment": {"FLOWER_BASIC_AUTH": "admin:${FLOWER_PASSWORD}"},
            },
            "beat": {"environment": {"REDIS_URL": "redis://:${REDIS_PASSWORD}@redis/0"}},
            "redis-replica": {"command": ["redis-server", "--requirepass", "${REDIS_PASSWORD:?}"]},
        }
    }

    # When it is checked
    found = {finding.partition(": ")[0] for finding in hard_coded_secrets(document)}

    # Then the check reports every one of them, and nothing else
    assert found == {
        ".services.worker.environment.REDIS_URL",
        ".services.redis.command",
        ".services.flower.command",
        ".services.flower.environment.FLOWER_BASIC_AUTH",
    }


def test_secrets_are_required_so_a_missing_one_stops_compose() -> None:
    text = COMPOSE_FILE.read_text()
    references = [m for m in ENV_REFERENCE.finditer(text) if m["name"] in SECRET_VARIABLES]

    assert {m["name"] for m in references} == set(SECRET_VARIABLES)
    for reference in references:
        assert reference["modifier"].startswith(":?"), reference.group()


# -- image ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_build_from_the_repository_dockerfile(
    compose: dict[str, Any], name: str
) -> None:
    build = service(compose, name).get("build")
    if isinstance(build, str):
        build = {"context": build}
    assert isinstance(build, dict), f"{name} is not built"
    context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")

    assert (ROOT / context).resolve() == ROOT
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
    assert DOCKERFILE.is_file()


def test_app_services_share_one_image(compose: dict[str, Any]) -> None:
    images = {service(compose, name).get("image") for name in APP_SERVICES}

    assert len(images) == 1
    assert None not in images


def test_the_image_is_based_on_python_3_11_slim() -> None:
    final = dockerfile_stages()[-1]

    assert final[0][1].split()[0] == "python:3.11-slim"


def test_the_image_installs_the_extras_its_services_run_and_no_embedded_redis(
    compose: dict[str, Any],
) -> None:
    # The flower service runs `celery flower`; documents need the pdf and docx
    # extractors; the containers reach their own Redis, so no bundled redis-server.
    runs = [arguments for keyword, arguments in dockerfile_stages()[-1] if keyword == "RUN"]
    installed = {
        extra
        for run in runs
        for match in re.finditer(r"pip install\b.*docrecovery\[([\w,]+)\]", run)
        for extra in match.group(1).split(",")
    }
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]

    assert "flower" in command(service(compose, "flower"))
    assert {"flower", "pdf", "docx"} <= installed <= set(declared), runs
    assert "embedded" not in installed


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in dockerfile_stages()[-1] if keyword == "USER"]

    assert users, "the final stage sets no USER"
    assert users[-1].partition(":")[0] not in ("root", "0")


def test_the_image_bakes_in_no_secret() -> None:
    text = DOCKERFILE.read_text()
    names = [name for stage in dockerfile_stages() for name in dockerfile_env(stage)]

    assert [name for name in names if SECRET_NAME.search(name) or name == "REDIS_URL"] == []
    assert URL_CREDENTIALS.search(text) is None
    assert not re.search(r"requirepass|basic.auth", text, re.IGNORECASE)


def test_the_image_allows_documents_from_the_volume_compose_mounts(
    compose: dict[str, Any],
) -> None:
    roots = dockerfile_env(dockerfile_stages()[-1]).get("DOCRECOVERY_ROOTS")

    assert roots
    assert roots == environment(service(compose, "worker")).get("DOCRECOVERY_ROOTS")
    assert roots in volume_targets(service(compose, "worker"))


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        (".env", True),
        (".git/config", True),
        (".venv/bin/python", True),
        ("tests/conftest.py", True),
        ("recovery/__pycache__/keys.cpython-311.pyc", True),
        ("pyproject.toml", False),
        ("celeryconfig.py", False),
        ("tasks/app.py", False),
        ("recovery/lua/claim.lua", False),
    ],
)
def test_the_build_context_holds_the_package_and_no_local_secrets(
    path: str, excluded: bool
) -> None:
    assert dockerignore_excludes(path) is excluded


# -- the app the commands name -------------------------------------------------------


def test_celery_finds_the_tasks_app_with_process_document_registered() -> None:
    from celery import Celery
    from celery.app.utils import find_app

    # What `celery -A tasks` does to find its app.
    app = find_app("tasks")

    assert isinstance(app, Celery)
    assert "tasks.process_document" in app.tasks


def test_every_task_beat_schedules_is_registered_and_routed_to_a_consumed_queue(
    compose: dict[str, Any],
) -> None:
    from celery.app.utils import find_app

    app = find_app("tasks")
    consumed = set().union(*(queues(service(compose, name)) for name in WORKERS))
    schedule = app.conf.beat_schedule

    assert schedule, "beat has nothing to schedule"
    for entry in schedule.values():
        route = app.amqp.router.route(dict(entry.get("options", {})), entry["task"])
        assert entry["task"] in app.tasks
        assert route["queue"].name in consumed
