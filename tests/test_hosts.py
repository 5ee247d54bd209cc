"""Workers on several hosts, one cut off the network mid-batch and brought back.

Each "host" is a network namespace of its own (``ip netns``) joined to this machine by
a veth pair, on an address range of this test's own (``10.231.<n>.0/24``). Redis runs
here, bound to this side's end of every pair; each host's worker (``ip netns exec …
celery -A tasks worker --beat``, as ``DistributedProcessor`` starts it) reaches Redis
over its veth only, and spools to a directory of its own. Cutting a host off is its
link going down (``ip link set … down`` inside it): its open connections stall with no
reset to tell anyone, new ones fail.

The scenario: a batch runs on two hosts; host 1 is cut off while it runs a document and
stays off for longer than that run's time limit, so the run is presumed lost and
recovered on host 2, while host 1's own report of it can only go to its spool. Then it
comes back and takes more work. In the end every document is processed, exactly once
(as many successful runs in the tracker's per-worker counts as documents), nothing is
tracked as failed, and host 1's spool was replayed there: its late report of the
replaced run dropped as stale instead of re-opening a processed document.

Needs root and iproute2's ``ip``; skips, saying which, where namespaces cannot be made.
Every namespace and veth is removed in a finalizer, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import redis
from celery import Celery
from conftest import LoggedProcess
from faults.support import (
    FAST_ENV,
    TASK,
    Doc,
    describe,
    inflight_calls,
    make_batch,
    record,
    take_census,
    wait_for,
    wait_steady,
    write_slow_html,
)

from recovery.keys import Keys
from recovery.redis_server import RedisServer
from recovery.spool import Spool
from tasks.processor import QUEUES, worker_command

pytestmark = pytest.mark.slow

#: The test's own address space: host n is 10.231.<n>.2, its veth peer here 10.231.<n>.1.
NET = "10.231"
TIME_LIMIT = 4
#: The least host 1 stays cut off: past its run's time limit and in-flight lease
#: (TIME_LIMIT + 1 s of lease grace), so the run counts as lost and recovery takes it
#: elsewhere. It stays off until it has spooled its own report of that run.
CUT_SECONDS = 8
HOST_ENV = {
    **FAST_ENV,
    "CELERY_TASK_TIME_LIMIT": str(TIME_LIMIT),
    "DOCRECOVERY_RECOVERY_TIMEOUT": str(TIME_LIMIT),
    "DOCRECOVERY_NETWORK_RETRY_INTERVAL_HOURS": "0",
    # Celery's result backend off: the pipeline keeps its results in the tracker's store.
    # On, it would hold a cut-off run in Celery's own store of its outcome, which comes
    # before docrecovery's signal handlers, until the link is back or Celery gives up.
    "CELERY_RESULT_BACKEND": "disabled://",
    # each host embeds a beat (RedBeat): one of them schedules recovery every 1.2 s
    "DOCRECOVERY_ENABLE_PERIODIC_RECOVERY": "true",
    "DOCRECOVERY_RECOVERY_INTERVAL_MINUTES": "0.02",
    "CELERY_BEAT_MAX_INTERVAL": "1",
    "CELERY_BEAT_LOCK_TIMEOUT": "3",
}


def namespaces_unavailable() -> str | None:
    """Why this machine cannot run the test, or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (`ip netns add`)"
    probe = f"docrecovery-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def free_subnets(count: int) -> list[int]:
    """Third octets of ``NET`` that no interface here uses (a killed run's leftovers
    must not clash with this one's)."""
    shown = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    used = {int(n) for n in re.findall(rf"{re.escape(NET)}\.(\d+)\.", shown)}
    return [n for n in range(1, 255) if n not in used][:count]


@dataclass(frozen=True)
class Host:
    """A network namespace reaching this machine through one veth pair."""

    name: str
    netns: str
    veth: str
    subnet: int

    @property
    def address(self) -> str:
        return f"{NET}.{self.subnet}.2"

    @property
    def gateway(self) -> str:
        """This machine's end of the pair: where the host finds Redis."""
        return f"{NET}.{self.subnet}.1"

    def create(self) -> None:
        peer = self.veth + "p"
        ip("netns", "add", self.netns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", self.netns)
        ip("addr", "add", f"{self.gateway}/24", "dev", self.veth)
        ip("link", "set", self.veth, "up")
        inside = ("netns", "exec", self.netns, "ip")
        ip(*inside, "addr", "add", f"{self.address}/24", "dev", peer)
        ip(*inside, "link", "set", peer, "up")
        ip(*inside, "link", "set", "lo", "up")

    def cut(self) -> None:
        """The host's link goes down: its connections stall, new ones fail at once."""
        ip("netns", "exec", self.netns, "ip", "link", "set", self.veth + "p", "down")

    def reconnect(self) -> None:
        ip("netns", "exec", self.netns, "ip", "link", "set", self.veth + "p", "up")

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "delete", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)


class HostWorker(LoggedProcess):
    """``celery -A tasks worker --beat`` inside a host's namespace."""

    def __init__(self, host: Host, env: dict[str, str], log: Path) -> None:
        self.host = host
        self.spool = Spool(env["DOCRECOVERY_SPOOL_DIR"])
        queues = (*QUEUES, host.name)
        args = ("--without-gossip", "--without-mingle", "-P", "prefork", "-c", "1", "--beat")
        command = ["ip", "netns", "exec", host.netns, *worker_command(host.name, queues, *args)]
        # a session of its own: the worker, its pool and its beat are one process group
        super().__init__(command, env, log, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """The whole process group: ``ip netns exec`` stands between it and the worker."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(self.pid), sig)
        self.process.kill()
        self.process.wait(10)


@dataclass
class Cluster:
    """Redis here, and the hosts that reach it."""

    redis: RedisServer
    hosts: list[Host]
    workers: dict[str, HostWorker]

    def url_for(self, host: Host) -> str:
        return f"redis://{host.gateway}:{self.redis.port}/0"


@pytest.fixture
def cluster(tmp_path: Path, doc_root: Path) -> Iterator[Cluster]:
    """Two hosts, each running a worker that reaches Redis over its own veth."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    hosts = [
        Host(f"h{n}", f"docrecovery-{tag}-h{n}", f"dr{tag}h{n}", subnet)
        for n, subnet in enumerate(free_subnets(2), start=1)
    ]
    redis_server: RedisServer | None = None
    workers: dict[str, HostWorker] = {}
    try:
        for host in hosts:
            host.create()
        # one argument an address: Redis 6.2 reads "a b" as one host name, 7 as two
        binds = ("127.0.0.1", *(host.gateway for host in hosts))
        redis_server = RedisServer(
            tmp_path / "redis", extra_args=("--bind", *binds, "--protected-mode", "no")
        )
        redis_server.start()
        running = Cluster(redis_server, hosts, workers)
        for host in hosts:
            env = {
                **os.environ,
                **HOST_ENV,
                "REDIS_URL": running.url_for(host),
                "DOCRECOVERY_ROOTS": str(doc_root),
                "DOCRECOVERY_SPOOL_DIR": str(tmp_path / host.name / "spool"),
            }
            workers[host.name] = HostWorker(host, env, tmp_path / f"{host.name}.log")
        yield running
    finally:
        for worker in workers.values():
            worker.stop()
        if redis_server is not None:
            redis_server.stop()
        for host in hosts:
            host.destroy()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(
        cluster.redis.url, decode_responses=True, encoding_errors="surrogateescape"
    )
    yield connection
    connection.close()


@pytest.fixture
def sender(cluster: Cluster) -> Iterator[Celery]:
    """An app that sends to the test's Redis (the session's app stays on its own)."""
    app = Celery("hosts-test", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=cluster.redis.url, result_backend=cluster.redis.url)
    yield app
    app.close()


def logs(cluster: Cluster) -> Callable[[], str]:
    return lambda: "\n".join(
        f"--- {name} ---\n{worker.log()[-4000:]}" for name, worker in cluster.workers.items()
    )


def ready(worker: HostWorker) -> bool:
    return " ready." in worker.log()


def test_a_host_cut_off_mid_batch_loses_nothing_and_does_nothing_twice(
    cluster: Cluster, client: redis.Redis, sender: Celery, doc_root: Path
) -> None:
    # Given two hosts with a worker each, and a batch of 16 documents; host 1 also gets
    # a larger one of its own, which it is running when it is cut off
    explain = logs(cluster)
    h1 = cluster.hosts[0]
    for worker in cluster.workers.values():
        wait_for(partial(ready, worker), 60, f"{worker.host.name} ready", explain)
    large = Doc(str(write_slow_html(doc_root / "large.html", 2.0)), "retry")
    docs = make_batch(doc_root, 16)
    sender.send_task(TASK, args=large.args, queue=h1.name)
    for doc in docs:
        sender.send_task(TASK, args=doc.args)

    def h1_runs_large() -> bool:
        return any(
            call["path"] == large.path and str(call.get("worker", "")).startswith("h1@")
            for call in inflight_calls(client).values()
        )

    wait_for(h1_runs_large, 30, "host 1 to run the large document", explain)

    # When host 1 is cut off for longer than its run's time limit (its report of the
    # run cannot reach Redis and goes to its spool), then comes back
    h1.cut()
    back = time.monotonic() + CUT_SECONDS
    h1_spool = cluster.workers[h1.name].spool
    wait_for(h1_spool.count, 60, "host 1 to spool what it cannot report", explain)
    time.sleep(max(0.0, back - time.monotonic()))
    h1.reconnect()
    # and gets more work of its own: the events it delivers replay its spool first
    (doc_root / "more").mkdir()
    more = make_batch(doc_root / "more", 3)
    for doc in more:
        sender.send_task(TASK, args=doc.args, queue=h1.name)
    everything = [large, *docs, *more]

    # Then every document is processed, and each success reported (a processed document
    # may be tracked for a moment: its result is stored before its success is applied)
    def successful_runs() -> int:
        return sum(int(n) for n in client.hgetall(Keys().worker_successes).values())

    def settled() -> bool:
        return (
            all(client.exists(Keys().app("result", d.doc_id)) for d in everything)
            and successful_runs() >= len(everything)
            and not any(record(client, d.doc_id) for d in everything)
            and not h1_spool.count()
        )

    wait_steady(
        settled,
        60,
        "every document processed, reported, none tracked and host 1's spool replayed",
        lambda: describe(client, everything) + "\n" + explain(),
    )
    census = take_census(client, "host cut off", everything)
    assert not census.lost, census.line()
    # And none was processed twice: as many successful runs as documents
    assert successful_runs() == len(everything)
    # And host 1's spool was replayed there, into the tracker, none of it set aside: its
    # report of the run recovery had replaced was dropped as stale, not re-opened
    assert not (h1_spool.directory / "rejected.jsonl").exists()
    assert int(client.hget(Keys().stats, "dropped_stale") or 0) >= 1
