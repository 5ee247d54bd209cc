"""The local spool: failure events wait there while Redis is away and are replayed once."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from conftest import WorkerProcess
from faults.support import Interrupted, interrupted_at, wait_for

from recovery.config import RecoveryConfig
from recovery.events import FailureEvent, Reporter, SuccessEvent
from recovery.records import FailedDocumentRecord, document_id
from recovery.spool import Spool
from recovery.store import Tracker

SPAWN = multiprocessing.get_context("spawn")


def events(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"kind": "failure", "n": n, "path": f"/docs/{n}.pdf"} for n in range(start, count)]


def spool_of(directory: Path, count: int) -> Spool:
    """A spool holding ``count`` events."""
    spool = Spool(directory)
    for event in events(count):
        spool.append(event)
    return spool


def poisoned_at_the_third(seen: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    """A handler that keeps what it applies in ``seen`` and can never apply the third."""

    def handle(event: dict[str, Any]) -> None:
        if event["n"] == 2:
            raise ValueError("a record that cannot be decoded")
        seen.append(event)

    return handle


def waiting_for(lock: Path) -> bool:
    """Whether a lock request on ``lock`` waits (a blocked entry in /proc/locks)."""
    inode = f":{os.stat(lock).st_ino} "
    return any("->" in line and inode in line for line in Path("/proc/locks").open())


def replay_all(spool: Spool) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    spool.replay(seen.append)
    return seen


def run_at_once(target: Callable[..., None], arguments: list[tuple[Any, ...]]) -> None:
    """Run ``target`` in one spawned process per argument tuple, released together by
    an event passed last, and check that each exits cleanly."""
    start = SPAWN.Event()
    procs = [SPAWN.Process(target=target, args=(*args, start)) for args in arguments]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0


def write_file(directory: Path, name: str, lines: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii")
    return path


def test_an_appended_event_is_one_json_line_in_this_processes_own_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")

    first = spool.append({"kind": "failure", "n": 1})
    second = spool.append({"kind": "success", "n": 2})

    assert first == second
    assert first.parent == tmp_path / "spool"
    assert first.name.startswith(f"events-{socket.gethostname()}-{os.getpid()}-")
    assert first.name == f"events-{spool.owner}.jsonl"
    lines = [json.loads(line) for line in first.read_text(encoding="ascii").splitlines()]
    assert [{k: v for k, v in line.items() if k != "spool_seq"} for line in lines] == [
        {"kind": "failure", "n": 1},
        {"kind": "success", "n": 2},
    ]
    assert lines[0]["spool_seq"] < lines[1]["spool_seq"]
    assert spool.count() == 2
    assert spool.pending()


def test_replay_feeds_every_event_in_order_and_empties_the_spool(tmp_path: Path) -> None:
    spool = spool_of(tmp_path, 5)

    seen: list[dict[str, Any]] = []
    replayed = spool.replay(seen.append)

    assert replayed == 5
    assert seen == events(5)
    assert spool.count() == 0
    assert not spool.pending()
    assert list(tmp_path.iterdir()) == []
    assert spool.replay(seen.append) == 0


def test_non_ascii_and_undecodable_path_values_survive_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    event = {"path": os.fsdecode(b"/docs/caf\xe9.txt"), "query": "Umsatz – 报告", "n": 1}

    spool.append(event)

    assert replay_all(spool) == [event]


def test_an_event_the_handler_fails_on_is_kept_with_the_rest(tmp_path: Path) -> None:
    # Given five spooled events
    spool = spool_of(tmp_path, 5)
    seen: list[dict[str, Any]] = []

    def redis_goes_away_at_the_third(event: dict[str, Any]) -> None:
        if event["n"] == 2:
            raise ConnectionError("Redis went away again")
        seen.append(event)

    # When replay fails on the third
    with pytest.raises(ConnectionError):
        spool.replay(redis_goes_away_at_the_third)

    # Then the first two were replayed, the third and the rest wait, in order
    assert seen == events(2)
    assert spool.count() == 3
    assert replay_all(spool) == events(5, start=2)
    assert spool.count() == 0


def test_an_event_that_fails_for_another_reason_is_rejected_and_the_rest_replayed(
    tmp_path: Path,
) -> None:
    # Given five spooled events, the third of which can never be applied
    spool = spool_of(tmp_path, 5)
    seen: list[dict[str, Any]] = []

    # When replay runs, only a ConnectionError meaning "Redis is away"
    replayed = spool.replay(poisoned_at_the_third(seen), ConnectionError)

    # Then the poison event is kept aside and does not block the ones behind it
    assert replayed == 4
    assert [e["n"] for e in seen] == [0, 1, 3, 4]
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [e["n"] for e in rejected] == [2]
    assert spool.count() == 0


def test_a_line_that_is_not_json_is_moved_to_rejected_and_the_rest_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a spool file whose second line was torn by a crash mid-write
    good = [json.dumps(event) for event in events(3)]
    write_file(tmp_path, "events-host-1.jsonl", [good[0], '{"kind": "fail', good[1], good[2]])
    spool = Spool(tmp_path)

    # When it is replayed
    with caplog.at_level(logging.ERROR, logger="recovery.spool"):
        seen = replay_all(spool)

    # Then the good events are replayed, the torn line is kept aside and reported
    assert seen == events(3)
    assert (tmp_path / "rejected.jsonl").read_text() == '{"kind": "fail\n'
    assert "rejected.jsonl" in caplog.text
    assert spool.count() == 0


def test_a_line_whose_sequence_number_is_not_whole_is_rejected_and_the_rest_replayed(
    tmp_path: Path,
) -> None:
    # Given a spool holding a line written by hand (or torn) whose sequence is text
    spool = spool_of(tmp_path, 2)
    with (tmp_path / "events-by-hand.jsonl").open("w") as fh:
        fh.write('{"kind": "success", "spool_seq": "x"}\n')

    # When it is replayed, the events are, and the line is moved aside (before: the
    # sort raised on it, every replay failed and the spool blocked for good)
    assert replay_all(spool) == events(2)
    rejected = (tmp_path / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["spool_seq"] for line in rejected] == ["x"]
    assert spool.count() == 0


def test_a_line_that_is_not_ascii_is_rejected_and_the_other_events_are_not_stranded(
    tmp_path: Path,
) -> None:
    # Given a spool file with one line of bytes that are not ASCII (disk corruption)
    good = [json.dumps(event).encode() for event in events(2)]
    (tmp_path / "events-host-1.jsonl").write_bytes(good[0] + b"\n\xff\xfe garbage\n" + good[1])
    spool = Spool(tmp_path)

    # When it is replayed, the good events are, and the bad line is moved aside
    # (bug: read_text(encoding="ascii") raises UnicodeDecodeError for the whole file,
    # which stays renamed to *.replaying-<pid> and is never seen again)
    assert replay_all(spool) == events(2)
    assert (tmp_path / "rejected.jsonl").exists()
    assert not list(tmp_path.glob("*.replaying-*"))


def test_a_replay_cut_off_midway_keeps_exactly_the_events_it_did_not_apply(
    tmp_path: Path,
) -> None:
    # Given events spooled by two writers, interleaved: 0 and 1 by the first, 2 and 3
    # by the second, 4 and 5 by the first again
    first, second = Spool(tmp_path), Spool(tmp_path)
    for writer, event in zip([first, first, second, second, first, first], events(6), strict=True):
        writer.append(event)
    seen: list[dict[str, Any]] = []

    def cut_off_at_the_fourth(event: dict[str, Any]) -> None:
        if event["n"] == 3:
            raise Interrupted  # a soft time limit, ^C: not "Redis is away"
        seen.append(event)

    # When a replay is cut off at the fourth event
    with pytest.raises(Interrupted):
        first.replay(cut_off_at_the_fourth, ConnectionError)

    # Then the three it applied are gone and the other three wait, in order (bug: the
    # taken files were deleted whatever ended the replay: 3, 4 and 5 were lost)
    assert seen == events(3)
    assert first.count() == 3
    assert replay_all(first) == events(6, start=3)
    assert list(tmp_path.iterdir()) == []


def test_a_replay_cut_off_while_it_reads_what_it_took_keeps_every_event(
    tmp_path: Path,
) -> None:
    # Given five spooled events
    spool = spool_of(tmp_path, 5)

    # When a soft time limit fires while the replay reads the files it took
    with pytest.raises(Interrupted), interrupted_at("loads"):
        spool.replay(lambda _event: None)

    # Then all five wait for the next replay (bug: all were deleted, none applied)
    assert spool.count() == 5
    assert replay_all(spool) == events(5)


def test_a_replay_cut_off_while_it_rejects_an_event_keeps_that_event_and_the_rest(
    tmp_path: Path,
) -> None:
    # Given five spooled events, the third of which can never be applied
    spool = spool_of(tmp_path, 5)
    seen: list[dict[str, Any]] = []

    # When the replay is cut off as it writes that event to rejected.jsonl
    with pytest.raises(Interrupted), interrupted_at("reject"):
        spool.replay(poisoned_at_the_third(seen), ConnectionError)

    # Then the third and the two behind it wait (bug: deleted with the taken files),
    # and the next replay rejects the third and applies the rest
    assert seen == events(2)
    assert spool.count() == 3
    assert spool.replay(poisoned_at_the_third(seen), ConnectionError) == 2
    assert seen == events(2) + events(5, start=3)
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [e["n"] for e in rejected] == [2]


def replay_on_a_full_disk(directory: str, report: str) -> None:
    """Child process: replay with Redis answering ten events and then away, while no
    file may grow past 20 kB (a full disk, as EFBIG); report what the replay raised."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(
        resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
    )
    applied: list[int] = []

    def away_after_ten(event: dict[str, Any]) -> None:
        if len(applied) == 10:
            raise Away
        applied.append(int(event["n"]))

    try:
        Spool(directory).replay(away_after_ten, Away)
    except BaseException as exc:
        Path(report).write_text(json.dumps({"raised": type(exc).__name__, "applied": applied}))


def test_events_a_replay_cannot_write_back_on_a_full_disk_are_kept_as_taken(
    tmp_path: Path,
) -> None:
    # Given fifty spooled events of 2 kB each, 100 kB in all
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    for n in range(50):
        spool.append({"n": n, "pad": "x" * 2000})

    # When a replay applies ten of them, Redis goes away again, and the forty left
    # cannot be written back: the disk is full
    report = tmp_path / "report.json"
    child = SPAWN.Process(target=replay_on_a_full_disk, args=(str(spool_dir), str(report)))
    child.start()
    child.join(60)
    assert child.exitcode == 0

    # Then the replay says Redis is away, and every event is still spooled, the ten
    # applied ones too (a failure's event id makes a second application a no-op; bug:
    # the taken file was deleted, keeping only the nine events the write got in)
    assert json.loads(report.read_text()) == {"raised": "Away", "applied": list(range(10))}
    assert spool.count() == 50
    assert sorted(int(event["n"]) for event in replay_all(spool)) == list(range(50))
    assert list(spool_dir.iterdir()) == []


def replay_into(directory: str, output: str, start: Any) -> None:
    """Child process: wait for the start signal, replay, write what was replayed."""
    seen: list[int] = []
    start.wait(30)
    Spool(directory).replay(lambda event: seen.append(int(event["n"])))
    Path(output).write_text(json.dumps(seen))


def test_two_processes_replaying_one_spool_never_replay_an_event_twice(tmp_path: Path) -> None:
    # Given a spool of 40 worker processes' files, 25 events each
    spool_dir = tmp_path / "spool"
    for worker in range(40):
        numbers = range(worker * 25, worker * 25 + 25)
        lines = [json.dumps({"n": n}) for n in numbers]
        write_file(spool_dir, f"events-host-{worker}.jsonl", lines)

    # When two processes replay it at the same moment
    outputs = [tmp_path / f"replayed-{i}.json" for i in range(2)]
    run_at_once(replay_into, [(str(spool_dir), str(out)) for out in outputs])

    # Then every event was replayed exactly once between them
    replayed = [n for out in outputs for n in json.loads(out.read_text())]
    assert sorted(replayed) == list(range(1000))
    assert Spool(spool_dir).count() == 0
    assert not list(spool_dir.glob("*.replaying-*"))


class Away(Exception):
    """Redis is away: the event stays spooled."""


def report_while_redis_flaps(directory: str, output: str, worker: int, start: Any) -> None:
    """Child process: deliver 300 events as a worker's Reporter does (replay the spool
    first, then apply, spooling what Redis refuses), with Redis away 70% of the time.
    Every event applied is logged to ``output``."""
    rng = random.Random(worker)
    spool = Spool(directory)
    start.wait(30)
    with open(output, "a") as applied:

        def handle(event: dict[str, Any]) -> None:
            if rng.random() < 0.7:
                raise Away
            applied.write(f"{event['n']}\n")
            applied.flush()

        for n in range(worker * 300, worker * 300 + 300):
            try:
                if spool.pending():
                    spool.replay(handle, Away)
                handle({"n": n})
            except Away:
                spool.append({"n": n})


def test_workers_appending_and_replaying_one_spool_apply_every_event_exactly_once(
    tmp_path: Path,
) -> None:
    # Given four worker processes on one host sharing a spool while Redis flaps (each
    # replays the others' events before its own, and fails midway most times)
    spool_dir = tmp_path / "spool"
    outputs = [tmp_path / f"applied-{w}.txt" for w in range(4)]
    run_at_once(
        report_while_redis_flaps, [(str(spool_dir), str(out), w) for w, out in enumerate(outputs)]
    )

    # When Redis is back and the spool is replayed
    replayed = [int(event["n"]) for event in replay_all(Spool(spool_dir))]

    # Then every event was applied exactly once (bugs: a replayer that listed another's
    # file took it again under a reused name, applying it twice; one that waited for a
    # file's lock renamed the new file at its name, losing what was being appended)
    applied = [int(n) for out in outputs if out.exists() for n in out.read_text().split()]
    assert sorted(applied + replayed) == list(range(1200))
    assert not (spool_dir / "rejected.jsonl").exists()


def replay_and_hang(directory: str, handling: Any) -> None:
    """Child process: start replaying, then hang in the handler until killed."""

    def hang(_event: dict[str, Any]) -> None:
        handling.set()
        time.sleep(60)

    Spool(directory).replay(hang)


def test_events_taken_by_a_replayer_that_was_killed_are_replayed(tmp_path: Path) -> None:
    # Given events spooled by a process that has exited (a live process's own file is
    # never taken from under it), and a replaying process killed while handling the
    # first event: SIGKILL or the OOM killer, the very failures docrecovery exists for
    spool = Spool(tmp_path)
    writer = SPAWN.Process(target=append_all_in_child, args=(str(tmp_path), events(3)))
    writer.start()
    writer.join(60)
    assert writer.exitcode == 0
    handling = SPAWN.Event()
    child = SPAWN.Process(target=replay_and_hang, args=(str(tmp_path), handling))
    child.start()
    assert handling.wait(30)
    child.kill()
    child.join(30)

    # Then the events it had taken still count as waiting and the next replay feeds
    # them (bug: the file stays renamed to *.replaying-<pid>, which neither replay nor
    # count nor pending ever look at again: the events are lost)
    assert spool.count() == 3
    assert spool.pending()
    assert replay_all(spool) == events(3)


def append_in_child(directory: str, event: dict[str, Any]) -> None:
    Spool(directory).append(event)


def append_all_in_child(directory: str, spooled: list[dict[str, Any]]) -> None:
    for event in spooled:
        Spool(directory).append(event)


def test_events_spooled_by_several_processes_replay_in_the_order_they_happened(
    tmp_path: Path,
) -> None:
    # Given this process spools a failure of document b, another process then the
    # failure of document a, and this process then the success of a's retry
    spool = Spool(tmp_path)
    spool.append({"kind": "failure", "doc": "b", "seq": 1})
    child = SPAWN.Process(
        target=append_in_child, args=(str(tmp_path), {"kind": "failure", "doc": "a", "seq": 2})
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    spool.append({"kind": "success", "doc": "a", "seq": 3})

    # When the spool is replayed, the events come in the order they were spooled:
    # the success of a replayed before its failure would leave a processed document
    # tracked as failed, to be resubmitted (bug: replay goes file by file, in
    # file-name order, so one process's events all come before another's)
    assert [event["seq"] for event in replay_all(spool)] == [1, 2, 3]


def test_a_spool_that_was_never_written_replays_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "never-created")

    assert spool.replay(lambda _event: None) == 0
    assert spool.count() == 0
    assert not spool.pending()


# --- replicas sharing one spool volume --------------------------------------------------
# Two Spool objects in one process stand for two containers: the same hostname, the same
# pid (each container's worker is pid 7), one directory, and locks on the same inodes.


def test_two_replicas_with_one_hostname_and_pid_each_write_their_own_file(
    tmp_path: Path,
) -> None:
    first, second = Spool(tmp_path), Spool(tmp_path)

    mine = first.append({"n": 1})
    theirs = second.append({"n": 2})

    # Then neither writes into the other's file (bug: both were events-<host>-<pid>)
    assert mine != theirs
    assert [json.loads(line)["n"] for line in mine.read_text().splitlines()] == [1]
    assert [json.loads(line)["n"] for line in theirs.read_text().splitlines()] == [2]


def test_a_replay_in_progress_in_another_replica_is_never_taken_over(tmp_path: Path) -> None:
    # Given a replica (same hostname and pid) that took the spool's events and is
    # replaying them
    first, second = Spool(tmp_path), Spool(tmp_path)
    for event in events(3):
        first.append(event)
    seen_by_second: list[dict[str, Any]] = []
    counted_by_second: list[int] = []

    def second_spools_and_replays_meanwhile(event: dict[str, Any]) -> None:
        if event["n"] == 0:
            second.append({"n": 99})
            counted_by_second.append(second.count())
            seen_by_second.extend(replay_all(second))

    # When the other replica spools an event and replays while that replay runs
    replayed_by_first = first.replay(second_spools_and_replays_meanwhile)

    # Then it sees and replays only its own event; the taken files stay the first's
    assert counted_by_second == [1]
    assert seen_by_second == [{"n": 99}]
    assert replayed_by_first == 3
    assert list(tmp_path.iterdir()) == []


def test_a_replay_that_waited_for_its_own_processes_lock_holds_one_others_can_see(
    tmp_path: Path,
) -> None:
    # Given a spool one thread replays, and a second thread of the process waiting to
    # replay after it, with an event spooled meanwhile
    spool, other = Spool(tmp_path), Spool(tmp_path)
    spool.append({"n": 0})
    first_in, first_go, second_in, second_go = (threading.Event() for _ in range(4))
    seen_by_second: list[dict[str, Any]] = []

    def first(_: dict[str, Any]) -> None:
        first_in.set()
        first_go.wait(30)

    def second(event: dict[str, Any]) -> None:
        seen_by_second.append(event)
        second_in.set()
        second_go.wait(30)

    threads = [threading.Thread(target=spool.replay, args=(handle,)) for handle in (first, second)]
    threads[0].start()
    assert first_in.wait(30)
    spool.append({"n": 1})
    threads[1].start()
    lock = tmp_path / f"replaying-{spool.owner}.lock"
    wait_for(lambda: waiting_for(lock), 30, "the second thread to wait for the first's lock")
    first_go.set()
    threads[0].join(30)
    assert second_in.wait(30)

    # When another replica replays while the second thread replays what it took
    seen_by_other = replay_all(other)
    second_go.set()
    threads[1].join(30)

    # Then the other replica took none of it: the second thread's lock was one it saw
    assert seen_by_other == []
    assert seen_by_second == [{"n": 1}]
    assert list(tmp_path.iterdir()) == []


def test_a_replayer_in_another_process_keeps_its_files_until_it_is_killed(
    tmp_path: Path,
) -> None:
    # Given another process that took the spool's events and is still replaying them
    spool = spool_of(tmp_path, 3)
    handling = SPAWN.Event()
    child = SPAWN.Process(target=replay_and_hang, args=(str(tmp_path), handling))
    child.start()
    assert handling.wait(30)

    # Then while it lives, nothing of its files is counted, taken or replayed here
    assert (spool.count(), spool.pending()) == (0, False)
    assert replay_all(spool) == []

    # And once it is killed, its lock is free: the events are taken over, its lock removed
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert replay_all(spool) == events(3)
    assert list(tmp_path.iterdir()) == []


def test_a_forked_child_writes_its_own_file_through_the_spool_it_inherited(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    parents = spool.append({"n": 1})
    report = tmp_path / "child.txt"

    # When a forked child appends through the spool object it inherited
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            report.write_text(str(spool.append({"n": 2})))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)

    # Then it wrote a file of its own, under a token of its own, not its parent's
    childs = Path(report.read_text())
    assert childs.name.startswith(f"events-{socket.gethostname()}-{pid}-")
    assert parents.name.rpartition("-")[2] != childs.name.rpartition("-")[2]
    assert [e["n"] for e in replay_all(spool)] == [1, 2]


@pytest.mark.slow
def test_an_idle_worker_replays_its_hosts_spool_on_its_own(
    worker_process: Callable[..., WorkerProcess], redis_url: str, tmp_path: Path
) -> None:
    # Given a worker that gets no work, and a failure its host spooled while Redis was
    # away (before: it stayed there until the worker's next event or a recovery run
    # on this host)
    worker = worker_process("idle", env={"DOCRECOVERY_SPOOL_REPLAY_SECONDS": "0.5"})
    record = FailedDocumentRecord(
        document_path=str(tmp_path / "late.pdf"),
        task_id="t-late",
        error_message="lost while cut off",
        failure_timestamp=time.time() - 60,
        error_category="network",
    )
    spool = Spool(tmp_path / "spool")
    spool.append(FailureEvent(record, counted=False, recovery_attempt=False, live=False).to_json())

    # Then it reaches the tracker and the spool empties, with no event to carry it
    tracker = Tracker(redis_url, RecoveryConfig.from_env())
    try:
        wait_for(
            lambda: tracker.reports.get_record(record.doc_id) is not None,
            30,
            "the idle worker to replay its spool",
            worker.log,
        )
    finally:
        tracker.close()
    assert spool.count() == 0


def test_an_event_is_spooled_not_rejected_when_the_replay_before_it_fails_otherwise(
    redis_url: str, tmp_path: Path
) -> None:
    # Given a spool holding a line no replay can apply, whose rejected.jsonl cannot be
    # written (a directory stands in for a full or read-only disk)
    spool = Spool(tmp_path / "spool")
    spool.append({"kind": "nonsense"})
    (tmp_path / "spool" / "rejected.jsonl").mkdir()
    tracker = Tracker(redis_url, RecoveryConfig())
    record = FailedDocumentRecord(str(tmp_path / "a.pdf"), "t1", "E: boom")
    try:
        # When a failure is delivered, the replay before it failing
        Reporter(spool).deliver(tracker, FailureEvent(record, True, False))

        # Then it is kept in the spool behind the line it follows, not lost
        assert spool.count() == 2
        # And once rejected.jsonl can be written, the replay applies it
        (tmp_path / "spool" / "rejected.jsonl").rmdir()
        assert Reporter(spool).replay(tracker) == 1
        assert tracker.reports.get_record(record.doc_id) is not None
    finally:
        tracker.close()


def test_a_failure_that_meets_a_stats_counter_not_a_number_is_spooled_whole_and_replayed(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a counter every failure adds to, set by hand to a word
    tracker = Tracker(redis_url, RecoveryConfig())
    redis_client.hset(tracker.keys.stats, "failures_recorded", "abc")
    spool = Spool(tmp_path / "spool")
    record = FailedDocumentRecord(str(tmp_path / "a.pdf"), "t1", "E: boom")
    try:
        # When a worker delivers a failure (before: the script wrote the record and its
        # indexes, failed at the counter, and the event was rejected with a traceback)
        with caplog.at_level(logging.ERROR, logger="recovery.events"):
            Reporter(spool).deliver(tracker, FailureEvent(record, True, False))

        # Then nothing of it is written, it waits in the spool, and one line says why
        assert redis_client.keys("{docrecovery}:*") == ["{docrecovery}:stats"]
        assert spool.count() == 1
        assert not (tmp_path / "spool" / "rejected.jsonl").exists()
        [logged] = caplog.records
        assert "failure event spooled" in logged.getMessage()
        assert "stats field 'failures_recorded' of '{docrecovery}:stats' holds 'abc'" in (
            logged.getMessage()
        )
        assert "HDEL {docrecovery}:stats failures_recorded" in logged.getMessage()
        assert logged.exc_info is None

        # And once repaired as it says, the replay records it, counted from 0
        redis_client.hdel(tracker.keys.stats, "failures_recorded")
        assert Reporter(spool).replay(tracker) == 1
        assert tracker.reports.get_record(record.doc_id) is not None
        assert redis_client.hget(tracker.keys.stats, "failures_recorded") == "1"
    finally:
        tracker.close()


def test_a_replayed_failure_redis_already_has_counts_once(redis_url: str, tmp_path: Path) -> None:
    # Given a failure Redis applied, and the same report spooled as well: a failover
    # lost the primary's answer after a replica had the change (wait_replicas = 1)
    tracker = Tracker(redis_url, RecoveryConfig.from_mapping({"min_retry_interval_hours": 0}))
    spool = Spool(tmp_path / "spool")
    path = str(tmp_path / "twice.pdf")
    first = FailureEvent(FailedDocumentRecord(path, "t1", "E: first"), True, False)
    again = FailureEvent(FailedDocumentRecord(path, "t2", "E: again"), True, False)
    try:
        first.apply(tracker)
        again.apply(tracker)
        spool.append(again.to_json())

        # When the spool is replayed
        Reporter(spool).replay(tracker)

        # Then the second failure counts once: one retry, two failures in its history
        record = tracker.reports.get_record(first.record.doc_id)
        assert record is not None
        assert (record.retry_count, record.failure_count) == (1, 2)
        assert [a.task_id for a in record.attempts] == ["t1", "t2"]
        assert spool.count() == 0
        # while a new report of the same failure text is a failure of its own
        FailureEvent(FailedDocumentRecord(path, "t2", "E: again"), True, False).apply(tracker)
        record = tracker.reports.get_record(first.record.doc_id)
        assert record is not None
        assert record.retry_count == 2
    finally:
        tracker.close()


@dataclass(frozen=True)
class Spooled:
    """A tracker, and three failures spooled while its Redis was away."""

    tracker: Tracker
    spool: Spool
    failures: list[FailureEvent]

    def assert_the_next_replay_records_each_once(self) -> None:
        assert Reporter(self.spool).replay(self.tracker) == 3
        for event in self.failures:
            record = self.tracker.reports.get_record(event.record.doc_id)
            assert record is not None
            assert (record.retry_count, record.failure_count) == (0, 1)
        assert self.spool.count() == 0


@pytest.fixture
def spooled(redis_url: str, tmp_path: Path) -> Iterator[Spooled]:
    """Three failures spooled while Redis was away (the tracker's scripts loaded)."""
    tracker = Tracker(redis_url, RecoveryConfig.from_mapping({"min_retry_interval_hours": 0}))
    spool = Spool(tmp_path / "spool")
    failures = [
        FailureEvent(FailedDocumentRecord(str(tmp_path / f"{n}.pdf"), f"t{n}", "E: x"), True, False)
        for n in range(3)
    ]
    for event in failures:
        spool.append(event.to_json())
    tracker.store.record_failure(FailedDocumentRecord("/docs/warmup.txt", "t-warm", "E: x"))
    yield Spooled(tracker, spool, failures)
    tracker.close()


def replay_cut_off_at(function: str, spool: Spool, tracker: Tracker) -> None:
    """A replay whose soft time limit fires as ``function`` starts: the limit is raised
    on, to the task it belongs to."""
    with (
        pytest.raises(SoftTimeLimitExceeded),
        interrupted_at(function, SoftTimeLimitExceeded),
    ):
        Reporter(spool).replay(tracker)


def test_a_soft_time_limit_while_a_replay_reads_the_spool_keeps_every_failure(
    spooled: Spooled, caplog: pytest.LogCaptureFixture
) -> None:
    # Given three failures spooled while Redis was away; when the soft time limit fires
    # as the replay reads the files it took
    with caplog.at_level(logging.WARNING, logger="recovery.events"):
        replay_cut_off_at("loads", spooled.spool, spooled.tracker)

    # Then the replay raises it on, says the events were kept, and they were (bug:
    # all three were deleted as the log said "events kept")
    assert spooled.spool.count() == 3
    assert "events not applied kept" in caplog.text
    # And the next replay records each failure once
    spooled.assert_the_next_replay_records_each_once()


def test_a_failure_redis_applied_as_a_soft_time_limit_cut_its_replay_off_counts_once(
    spooled: Spooled,
) -> None:
    # Given three failures spooled while Redis was away; when the soft time limit fires
    # as the replay reads Redis's answer to the first: Redis has applied it, the replay
    # cannot know
    replay_cut_off_at("parse_response", spooled.spool, spooled.tracker)

    # Then all three stay spooled, and the next replay records each once: the first is
    # found by its event id
    assert spooled.spool.count() == 3
    first = spooled.failures[0].record.doc_id
    assert spooled.tracker.reports.get_record(first) is not None
    spooled.assert_the_next_replay_records_each_once()


def test_a_success_redis_applied_as_a_soft_time_limit_cut_its_replay_off_counts_once(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a tracked document whose success was spooled while Redis was away, and a
    # live success of another document (the tracker's scripts loaded)
    tracker = Tracker(redis_url, RecoveryConfig())
    spool = Spool(tmp_path / "spool")
    record = FailedDocumentRecord(str(tmp_path / "a.pdf"), "t1", "E: x", query="q")
    tracker.store.record_failure(record)
    success = SuccessEvent(record.doc_id, "w1", "q", False, "t2", time.time())
    spool.append(success.to_json())
    SuccessEvent(document_id("/docs/live.pdf"), "w0", None, False, "t0", time.time()).apply(tracker)

    # When the soft time limit fires as the replay reads Redis's answer to it: Redis
    # has applied it, the replay cannot know, and keeps it
    replay_cut_off_at("parse_response", spool, tracker)
    try:
        assert spool.count() == 1
        assert tracker.reports.get_record(record.doc_id) is None

        # Then the next replay finds it by its event id: its run counts once (bug:
        # its worker's and query's successes were counted again)
        assert Reporter(spool).replay(tracker) == 1
        assert spool.count() == 0
        k = tracker.keys
        assert redis_client.hgetall(k.worker_successes) == {"w0": "1", "w1": "1"}
        assert redis_client.hget(k.query_successes, "q") == "1"
        assert redis_client.hget(k.stats, "resolved") == "1"
        # And only the replayed success's id is kept, the live one's never sent
        assert redis_client.zrange(k.replayed_successes, 0, -1) == [success.event_id]
    finally:
        tracker.close()
