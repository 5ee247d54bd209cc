"""The deployment files, checked against the code without a Docker engine.

Each test ties something ``docker-compose.yml``, the ``Dockerfile`` or ``.dockerignore``
says to what the code does, so the two cannot drift apart: the queues workers consume
against ``celeryconfig``, the apps and tasks celery commands name against the app
``-A`` loads, the variables services set against those the code reads, Redis's
settings against the start-up check, the image's extras against ``pyproject.toml``.
The rest are security properties: secrets come from the environment, the image runs
as a non-root user and bakes nothing secret in.

Compose is read with PyYAML (anchors and ``<<`` merges resolve as they do for
Compose), celery commands with celery's own command line, ``.dockerignore`` with the
Docker SDK's pattern matcher; the Dockerfile is only split into its instructions.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import tomllib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from celery import Celery
from celery.app.utils import find_app

# The Docker SDK comes with pytest-celery (the test extra).
from docker.utils.build import PatternMatcher  # type: ignore[import-untyped]

import celeryconfig
from recovery.config import ENV_PREFIX, RecoveryConfig
from recovery.store.checks import SAFE_POLICIES
from tasks.documents import RESULT_TTL_ENV
from tasks.extract import EXTRACTORS
from tasks.paths import MAX_BYTES_ENV, ROOTS_ENV

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: The variables docker-compose.yml's header tells the user to set: the secrets.
SECRET_VARIABLES = (
    "REDIS_PASSWORD",
    "FLOWER_USER",
    "FLOWER_PASSWORD",
    "METRICS_USER",
    "METRICS_PASSWORD",
)
#: A Compose interpolation: ${NAME}, ${NAME:-default}, ${NAME:?message}, ...
ENV_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<modifier>[^}]*)\}")
#: Names of keys and variables that hold credentials.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|AUTH|CREDENTIAL", re.IGNORECASE)
#: A command-line option followed by its credential (``--opt value`` or ``--opt=value``).
SECRET_OPTION = re.compile(
    r"(?<!\S)(?:-a|--requirepass|--masterauth|--basic-auth|--password)[= ](\S+)"
)
#: A password in a URL: ``scheme://user:password@``.
URL_PASSWORD = re.compile(r"://[^\s/@:]*:([^\s/@]+)@")


# -- reading the files ---------------------------------------------------------------


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = COMPOSE["services"]
    return found


def command(svc: dict[str, Any]) -> list[str]:
    """The service's command as an argument list (Compose splits a string like a shell)."""
    raw = svc.get("command") or []
    return shlex.split(raw) if isinstance(raw, str) else [str(arg) for arg in raw]


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    """The service's environment; ``None`` for a variable passed through from the host."""
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


@dataclass(frozen=True)
class CeleryCommand:
    """A ``celery`` command line as celery's own (click) command line reads it."""

    app: str | None
    subcommand: str
    params: dict[str, Any]


def celery_command(args: list[str]) -> CeleryCommand:
    from celery.bin.celery import celery

    top = celery.make_context("celery", args[1:], resilient_parsing=True)
    name, *rest = args[len(args) - len(top.args) - 1 :]
    sub = celery.get_command(top, name)
    assert sub is not None, f"celery has no command {name!r}: {args}"
    params = sub.make_context(name, rest, parent=top, resilient_parsing=True).params
    return CeleryCommand(top.params["app"], name, params)


def app_services() -> dict[str, CeleryCommand]:
    """The services that run celery, by name, with their commands."""
    return {
        name: celery_command(command(svc))
        for name, svc in services().items()
        if command(svc)[:1] == ["celery"]
    }


def running(subcommand: str) -> list[str]:
    return [name for name, cmd in app_services().items() if cmd.subcommand == subcommand]


def worker_queues(name: str) -> set[str]:
    """The queues a worker consumes: its ``-Q``, else every queue celeryconfig declares."""
    queues = app_services()[name].params["queues"]
    return set(queues) if queues else {queue.name for queue in celeryconfig.task_queues}


def consumed_queues() -> set[str]:
    return {queue for name in running("worker") for queue in worker_queues(name)}


def celery_command_lines() -> dict[str, list[str]]:
    """Every celery command line compose and the Dockerfile run, by where it is."""
    lines = {f"{name}.command": command(svc) for name, svc in services().items()}
    for name, svc in services().items():
        test = (svc.get("healthcheck") or {}).get("test") or []
        if isinstance(test, str) or test[:1] == ["CMD-SHELL"]:
            words = shlex.split(test if isinstance(test, str) else test[1])
            ends = [i for i, w in enumerate(words) if w[:1] in ("|", "&", ";", ">")] + [len(words)]
            lines[f"{name}.healthcheck"] = words[: ends[0]]
        else:
            lines[f"{name}.healthcheck"] = [str(word) for word in test[1:]]
    cmd = [args for keyword, args in dockerfile_stages()[-1] if keyword == "CMD"]
    lines["Dockerfile CMD"] = json.loads(cmd[-1]) if cmd else []
    return {where: args for where, args in lines.items() if args[:1] == ["celery"]}


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments)."""
    text = DOCKERFILE.read_text().splitlines()
    lines = [line for line in text if not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        keyword, _, arguments = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if keyword and stages:
            stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword in ("ENV", "ARG"):
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def container_environ(name: str) -> dict[str, str]:
    """What a service's process sees: the image's ENV, then compose's set values."""
    compose_values = environment(services()[name])
    return dockerfile_env(dockerfile_stages()[-1]) | {
        key: value for key, value in compose_values.items() if value is not None
    }


def app_of(cmd: CeleryCommand) -> Celery:
    """The app ``celery -A`` loads, found the way celery finds it."""
    assert cmd.app, "the command names no app (-A)"
    app = find_app(cmd.app)
    assert isinstance(app, Celery)
    return app


class RecordingEnviron(MutableMapping[str, str]):
    """An environment that remembers every name the code looks up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._values[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@pytest.fixture(scope="module")
def variables_the_code_reads() -> set[str]:
    """What celeryconfig reads as it loads, RecoveryConfig's keys, the tasks' settings."""
    recorder = RecordingEnviron(dict(os.environ))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", recorder)
        runpy.run_path(str(celeryconfig.__file__))
    config_keys = {ENV_PREFIX + field.name.upper() for field in fields(RecoveryConfig)}
    return recorder.read | config_keys | {ROOTS_ENV, MAX_BYTES_ENV, RESULT_TTL_ENV}


# -- queues, routes and tasks --------------------------------------------------------


def test_every_queue_a_worker_consumes_is_declared_in_celeryconfig() -> None:
    declared = {queue.name for queue in celeryconfig.task_queues}

    for name in running("worker"):
        queues = worker_queues(name)
        assert queues <= declared, f"{name} consumes undeclared queues {queues - declared}"


def test_every_declared_queue_has_a_worker_consuming_it() -> None:
    # A declared queue that no worker consumes holds its tasks forever.
    assert {queue.name for queue in celeryconfig.task_queues} <= consumed_queues()


def test_every_route_and_the_default_queue_have_a_worker_consuming_them() -> None:
    routed = {route["queue"] for route in celeryconfig.task_routes.values()}

    assert routed | {celeryconfig.task_default_queue} <= consumed_queues()


def test_recovery_resubmits_only_to_queues_a_worker_consumes() -> None:
    for name in running("worker"):
        config = RecoveryConfig.from_env(environ=container_environ(name))

        assert {config.resubmit_queue, config.highmem_queue} <= consumed_queues()


@pytest.mark.parametrize("where", celery_command_lines())
def test_every_celery_command_loads_its_app_and_calls_only_registered_tasks(where: str) -> None:
    cmd = celery_command(celery_command_lines()[where])
    app = app_of(cmd)

    if cmd.subcommand == "call":
        assert cmd.params["name"] in app.tasks, f"{where} calls an unregistered task"
        assert cmd.params["queue"] in (None, *consumed_queues())


def test_every_tracked_task_is_registered_and_routed_to_a_consumed_queue() -> None:
    for name in running("worker"):
        app = app_of(app_services()[name])
        config = RecoveryConfig.from_env(environ=container_environ(name))

        for task in config.tracked_tasks:
            assert task in app.tasks, f"{name} tracks {task!r}, which is not registered"
            assert app.amqp.router.route({}, task)["queue"].name in consumed_queues()


def test_compose_runs_two_beat_replicas_behind_redbeats_lock() -> None:
    # One beat is a single point of failure; two without a shared lock send everything
    # twice. RedBeat's lock in Redis lets one of the replicas schedule.
    (name,) = running("beat")
    app = app_of(app_services()[name])

    assert services()[name]["deploy"]["replicas"] == 2
    assert app.conf.beat_scheduler == "redbeat.RedBeatScheduler"
    assert app.conf.beat_schedule


def test_every_task_beat_schedules_is_registered_and_routed_to_a_consumed_queue() -> None:
    app = app_of(app_services()[running("beat")[0]])

    for entry in app.conf.beat_schedule.values():
        route = app.amqp.router.route(dict(entry.get("options", {})), entry["task"])
        assert entry["task"] in app.tasks
        assert route["queue"].name in consumed_queues()


# -- settings and state --------------------------------------------------------------


@pytest.mark.parametrize("name", app_services())
def test_every_variable_compose_gives_an_app_service_is_one_the_code_reads(
    name: str, variables_the_code_reads: set[str]
) -> None:
    from flower.command import is_flower_envvar

    flower = app_services()[name].subcommand == "flower"
    unread = {
        variable
        for variable in environment(services()[name])
        if variable not in variables_the_code_reads and not (flower and is_flower_envvar(variable))
    }

    assert unread == set(), f"{name} sets variables nothing reads"


def test_every_docrecovery_or_celery_variable_the_image_sets_is_one_the_code_reads(
    variables_the_code_reads: set[str],
) -> None:
    ours = {
        name
        for stage in dockerfile_stages()
        for name in dockerfile_env(stage)
        if name.startswith((ENV_PREFIX, "CELERY_", "REDIS_"))
    }

    assert ours, "the image sets none of the app's variables"
    assert ours - variables_the_code_reads == set()


@pytest.mark.parametrize("name", running("worker"))
def test_workers_mount_a_volume_at_every_document_root(name: str) -> None:
    roots = container_environ(name).get(ROOTS_ENV, "")

    assert roots, f"{ROOTS_ENV} is not set: documents would be read from the working dir"
    for root in roots.split(os.pathsep):
        assert root in volume_targets(services()[name]), root


def test_each_worker_spools_to_a_volume_of_its_own() -> None:
    # Spool files are named by host and process id, and both repeat across containers.
    spools = [
        volume_targets(services()[name]).get(
            RecoveryConfig.from_env(environ=container_environ(name)).spool_dir
        )
        for name in running("worker")
    ]

    assert None not in spools, "a worker's spool_dir is not a volume"
    assert len(set(spools)) == len(spools)


def test_beat_keeps_its_schedule_and_lock_in_the_trackers_redis() -> None:
    # Not in a file of one container: every replica must see the same schedule and lock.
    (name,) = running("beat")
    environ = container_environ(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", environ)
        conf = runpy.run_path(str(celeryconfig.__file__))

    assert app_services()[name].params["scheduler"] is None
    assert conf["beat_scheduler"] == "redbeat.RedBeatScheduler"
    assert conf["redbeat_redis_url"] == environ["REDIS_URL"]
    assert conf["redbeat_key_prefix"] == "{docrecovery}:beat"


# -- redis ---------------------------------------------------------------------------


def redis_service() -> dict[str, Any]:
    (found,) = [svc for svc in services().values() if command(svc)[:1] == ["redis-server"]]
    return found


def redis_option(name: str) -> str | None:
    args = command(redis_service())
    return args[args.index(name) + 1] if name in args[:-1] else None


def test_redis_persists_to_an_append_only_file_in_a_named_volume() -> None:
    assert redis_option("--appendonly") == "yes"
    assert volume_targets(redis_service()).get("/data") in COMPOSE.get("volumes", {})


def test_redis_uses_a_maxmemory_policy_the_startup_check_accepts() -> None:
    # An evicted failure record is a document nobody will ever retry.
    assert redis_option("--maxmemory-policy") in SAFE_POLICIES


@pytest.mark.parametrize("name", app_services())
def test_app_services_reach_the_compose_redis_with_the_password_from_the_environment(
    name: str,
) -> None:
    redis_url = environment(services()[name]).get("REDIS_URL") or ""
    parts = urlsplit(ENV_REFERENCE.sub("${}", redis_url))
    redis_host = next(host for host, svc in services().items() if svc is redis_service())

    assert (parts.hostname, parts.port or 6379) == (redis_host, int(redis_option("--port") or 6379))
    assert parts.password == "${}", "the password is not one interpolation"
    assert [m["name"] for m in ENV_REFERENCE.finditer(redis_url)] == ["REDIS_PASSWORD"]


# -- secrets -------------------------------------------------------------------------


def is_reference_to(value: str | None, variable: str) -> bool:
    """Whether ``value`` is exactly one interpolation of ``variable`` and nothing else."""
    match = ENV_REFERENCE.fullmatch(value or "")
    return match is not None and match["name"] == variable


def literal_secrets(node: Any, path: str = "") -> Iterator[str]:
    """Where a compose document writes a credential out instead of interpolating it.

    A finding names the place, never the value.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            literal = isinstance(value, str | int) and ENV_REFERENCE.sub("", str(value))
            if SECRET_NAME.search(str(key)) and literal and literal.strip(":"):
                yield where
            yield from literal_secrets(value, where)
    elif isinstance(node, list):
        if all(isinstance(item, str) for item in node):
            yield from literal_secrets(" ".join(node), path)
        for index, item in enumerate(node):
            yield from literal_secrets(item, f"{path}[{index}]")
    elif isinstance(node, str):
        masked = ENV_REFERENCE.sub("", node)
        found = [*SECRET_OPTION.finditer(masked), *URL_PASSWORD.finditer(masked)]
        if any(match[1].strip(":") for match in found):
            yield path


def test_redis_requires_the_password_from_the_environment() -> None:
    assert is_reference_to(redis_option("--requirepass"), "REDIS_PASSWORD")


def test_redis_healthcheck_authenticates_with_the_password_from_the_environment() -> None:
    test = redis_service()["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)

    assert is_reference_to(environment(redis_service()).get("REDISCLI_AUTH"), "REDIS_PASSWORD")
    assert "PONG" in text, "redis-cli exits 0 on NOAUTH and LOADING: only PONG is healthy"


def test_flower_requires_basic_auth_taken_from_the_environment() -> None:
    (name,) = running("flower")
    argv = app_services()[name].params["tornado_argv"]
    passed = [arg.partition("=")[2] for arg in argv if arg.startswith("--basic-auth=")]
    credentials = (passed or [environment(services()[name]).get("FLOWER_BASIC_AUTH") or ""])[0]

    assert ENV_REFERENCE.sub("", credentials) == ":", "not exactly ${USER}:${PASSWORD}"
    names = [m["name"] for m in ENV_REFERENCE.finditer(credentials)]
    assert names == ["FLOWER_USER", "FLOWER_PASSWORD"]
    # Flower 2 would otherwise answer its API to anyone.
    assert "FLOWER_UNAUTHENTICATED_API" not in environment(services()[name])


def test_the_metrics_exporter_binds_beyond_loopback_only_with_credentials_from_the_env() -> None:
    from recovery.access import is_loopback
    from recovery.exporter import DEFAULT_PORT, VARIABLES

    (svc,) = [svc for svc in services().values() if command(svc)[:2] == ["docrecovery", "metrics"]]
    args = command(svc)
    host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
    port = args[args.index("--port") + 1] if "--port" in args else str(DEFAULT_PORT)
    env = environment(svc)

    # bound beyond loopback, the exporter refuses to start without both
    assert not is_loopback(host)
    assert is_reference_to(env.get(VARIABLES.user), "METRICS_USER")
    assert is_reference_to(env.get(VARIABLES.password), "METRICS_PASSWORD")
    assert any(str(p).endswith(f":{port}") for p in svc.get("ports", []))


@pytest.mark.parametrize("allowed", ["", "dash.example.com *.corp.example"])
def test_the_dashboard_answers_localhost_and_the_names_given_in_dashboard_allowed_hosts(
    allowed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.cli.servers import dashboard
    from recovery.dashboard.auth import trusted_hosts

    # Given the dashboard's service, with DASHBOARD_ALLOWED_HOSTS unset (so empty) or set
    (svc,) = [
        svc for svc in services().values() if command(svc)[:2] == ["docrecovery", "dashboard"]
    ]
    value = environment(svc).get("DOCRECOVERY_DASHBOARD_ALLOWED_HOSTS")
    reference = ENV_REFERENCE.fullmatch(value or "")
    assert reference is not None
    assert reference["name"] == "DASHBOARD_ALLOWED_HOSTS"
    assert reference["modifier"] == ":-", "optional: localhost needs no name"
    monkeypatch.setenv("DOCRECOVERY_DASHBOARD_ALLOWED_HOSTS", allowed)

    # When its command reads its options as the container runs it
    params = dashboard.make_context("dashboard", command(svc)[2:], resilient_parsing=True).params
    names = trusted_hosts(params["host"], params["allowed_hosts"])

    # Then it answers the name the top of the file tells users to open, and each given
    header = (ROOT / "docker-compose.yml").read_text().partition("\nx-")[0]
    opened = re.findall(rf"open (http://[^\s]+:{params['port']})", header)
    assert opened, "the top of the file says where to open the dashboard"
    assert {urlsplit(url).hostname for url in opened} <= set(names)
    assert set(allowed.split()) <= set(names)
    assert "DASHBOARD_ALLOWED_HOSTS" in header


def test_flower_reads_the_flowerconfig_the_image_copies_in() -> None:
    (name,) = running("flower")
    argv = app_services()[name].params["tornado_argv"]
    [conf] = [arg.partition("=")[2] for arg in argv if arg.startswith("--conf=")]
    copies = [args.split() for keyword, args in dockerfile_stages()[-1] if keyword == "COPY"]
    workdir = [args for keyword, args in dockerfile_stages()[-1] if keyword == "WORKDIR"][-1]

    assert (ROOT / Path(conf).name).is_file()
    assert [Path(conf).name, "./"] in copies
    assert str(Path(conf).parent) == workdir


def test_no_secret_is_written_into_the_compose_file() -> None:
    assert list(literal_secrets(COMPOSE)) == []


def test_the_secret_check_finds_literal_passwords() -> None:
    # Given a compose document with each kind of credential written out, beside
    # the same credentials taken from the environment
    document = {
        "services": {
            "worker": {"environment": {"REDIS_URL": "redis://:hunter2@redis:6379/0"}},
            "redis": {"command": "redis-server --requirepass hunter2"},
            "replica": {"command": ["redis-server", "--masterauth", "hunter2"]},
            "flower": {
                "command": "celery -A tasks flower --basic-auth=admin:hunter2",
                "environment": {"FLOWER_BASIC_AUTH": "admin:${FLOWER_PASSWORD}"},
            },
            "beat": {"environment": {"REDIS_URL": "redis://:${REDIS_PASSWORD}@redis/0"}},
            "cache": {"command": ["redis-server", "--requirepass", "${REDIS_PASSWORD:?}"]},
        }
    }

    # When it is checked
    found = set(literal_secrets(document))

    # Then the check reports every one of them, and nothing else
    assert found == {
        ".services.worker.environment.REDIS_URL",
        ".services.redis.command",
        ".services.replica.command",
        ".services.flower.command",
        ".services.flower.environment.FLOWER_BASIC_AUTH",
    }


def test_secrets_are_required_so_a_missing_one_stops_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    references = [m for m in ENV_REFERENCE.finditer(text) if m["name"] in SECRET_VARIABLES]

    assert {m["name"] for m in references} == set(SECRET_VARIABLES)
    for reference in references:
        assert reference["modifier"].startswith(":?"), reference.group()


# -- image ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", app_services())
def test_app_services_build_the_repository_dockerfile(name: str) -> None:
    # Otherwise the image checks below would be about a file nothing builds.
    build = services()[name].get("build")
    build = {"context": build} if isinstance(build, str) else build
    assert isinstance(build, dict), f"{name} is not built"
    context = ROOT / build.get("context", ".")

    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def test_the_image_installs_the_extras_compose_and_the_extractors_need_and_no_redis() -> None:
    def extras(stage: list[tuple[str, str]]) -> set[str]:
        runs = [args for keyword, args in stage if keyword == "RUN" and "pip " in args]
        return {e for run in runs for m in re.findall(r"\[([\w,-]+)\]", run) for e in m.split(",")}

    *builds, final = dockerfile_stages()
    installed, built = extras(final), set().union(*map(extras, builds))
    declared = set(PYPROJECT["project"]["optional-dependencies"])
    document_types = {doc_type for doc_type, _ in EXTRACTORS.values()}

    assert installed <= declared
    assert installed <= built, "installed offline from wheels the build stage did not make"
    assert running("flower") == [] or "flower" in installed
    assert document_types & declared <= installed, "an extractor's extra is missing"
    # The containers reach the compose Redis: no bundled redis-server.
    assert "embedded" not in installed


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in dockerfile_stages()[-1] if keyword == "USER"]

    assert users, "the final stage sets no USER"
    assert users[-1].partition(":")[0] not in ("root", "0")


def test_the_image_bakes_in_no_secret() -> None:
    text = DOCKERFILE.read_text()
    names = [name for stage in dockerfile_stages() for name in dockerfile_env(stage)]

    assert [name for name in names if SECRET_NAME.search(name) or name == "REDIS_URL"] == []
    assert URL_PASSWORD.search(text) is None
    assert not re.search(r"requirepass|basic.auth", text, re.IGNORECASE)


def dockerignore() -> Any:
    """``.dockerignore`` as Docker reads it (the Docker SDK's port of moby's matcher)."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    return PatternMatcher([line for line in lines if line and not line.startswith("#")])


@pytest.mark.parametrize("path", [".env", ".git/config", ".venv/bin/python", "tests/conftest.py"])
def test_the_build_context_leaves_out_local_secrets_and_state(path: str) -> None:
    assert dockerignore().matches(path)


def test_the_build_context_holds_every_file_the_package_build_reads() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    needed = [
        ROOT / "pyproject.toml",
        ROOT / PYPROJECT["project"]["readme"],
        *(ROOT / f"{module}.py" for module in setuptools["py-modules"]),
        *(
            path
            for pattern in setuptools["packages"]["find"]["include"]
            for path in ROOT.glob(f"{pattern}/**/*.py")
        ),
        *(
            path
            for package, globs in setuptools["package-data"].items()
            for glob in globs
            for path in ROOT.joinpath(*package.split(".")).glob(glob)
        ),
    ]
    files = [str(path.relative_to(ROOT)) for path in needed if "__pycache__" not in path.parts]

    assert len(files) > len(setuptools["py-modules"]) + 2
    assert [path for path in files if dockerignore().matches(path)] == []
