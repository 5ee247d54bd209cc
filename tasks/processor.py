"""``DistributedProcessor``: the seed's facade for a process that submits and works.

::

    processor = DistributedProcessor(worker_id="worker-1", redis_url="redis://localhost:6379")
    processor.config.update({"max_retry_count": 3, "recovery_batch_size": 5})
    ids = processor.submit(["/data/docs/a.pdf"], query="retention")
    await processor.start_worker()   # one recovery run, then a Celery worker until stopped

``config`` is a plain dict of recovery settings (the seed's keys and docrecovery's
additions); it is validated whenever it is used, so a bad value fails with a
ConfigError naming the key. Changes take effect at the next ``start_worker()``: the
worker runs as ``celery -A tasks worker`` in a child process and receives the settings
of that moment through ``DOCRECOVERY_*`` variables. With ``enable_periodic_recovery``
it embeds Celery's beat (``--beat``), which sends ``recovery.run`` to the ``recovery``
queue every ``recovery_interval_minutes`` while the worker runs. The beat is RedBeat
(``celeryconfig``): its schedule lives in Redis, and of several processors' beats only
the one holding RedBeat's lock schedules; the others stand by and take over when it
dies. The run lock and atomic claims still keep a manual run beside it from
resubmitting a document twice.

``redis_url`` is the tracker's Redis. Tasks go to ``CELERY_BROKER_URL`` when it is set
(RabbitMQ, say), else to that Redis; the worker inherits both
(:mod:`recovery.broker`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from recovery import DocumentRecoveryManager, RecoveryConfig, installed
from recovery.broker import celery_urls
from recovery.config import ENV_PREFIX
from recovery.store import default_redis_url
from tasks.app import app

QUEUES = ("documents", "recovery", "highmem")
#: Where beat sends ``recovery.run`` (``recovery.install``'s schedule entry).
RECOVERY_QUEUE = "recovery"


def worker_command(name: str, queues: Iterable[str] = QUEUES, *extra: str) -> list[str]:
    """``celery -A tasks worker`` for this interpreter, node ``name@<host>``."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks",
        "worker",
        "-n",
        f"{name}@%h",
        "-Q",
        ",".join(queues),
        "--loglevel=INFO",
        *extra,
    ]


def config_environment(config: RecoveryConfig) -> dict[str, str]:
    """``DOCRECOVERY_*`` variables that make ``RecoveryConfig.from_env()`` equal ``config``."""
    env = {}
    for key, value in config.as_dict().items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, Mapping):
            text = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            text = str(value)
        env[ENV_PREFIX + key.upper()] = text
    return env


class DistributedProcessor:
    """Submit documents to the pipeline and run a worker with recovery built in."""

    def __init__(
        self,
        worker_id: str = "worker-1",
        redis_url: str | None = None,
        *,
        queues: Iterable[str] = QUEUES,
        concurrency: int | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.redis_url = default_redis_url(redis_url)
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.config: dict[str, Any] = RecoveryConfig.from_env().as_dict()
        self._process: asyncio.subprocess.Process | None = None
        self._manager: DocumentRecoveryManager | None = None
        app.conf.update(**celery_urls(self.redis_url))

    @property
    def recovery_config(self) -> RecoveryConfig:
        return RecoveryConfig.from_mapping(self.config)

    @property
    def recovery_manager(self) -> DocumentRecoveryManager:
        """The manager for the current ``config`` (validated now); rebuilt, and the
        app's recovery reconfigured, only when ``config`` has changed."""
        config = self.recovery_config
        if self._manager is None or self._manager.config != config:
            if self._manager is not None:
                self._manager.close()
            installed(app).configure(config, redis_url=self.redis_url)
            self._manager = DocumentRecoveryManager(self.redis_url, config, app=app)
        return self._manager

    def submit(
        self,
        paths: Iterable[str],
        query: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[str]:
        """Send one ``tasks.process_document`` per path; returns the task ids."""
        return [
            app.send_task("tasks.process_document", args=[str(path), query, metadata or {}]).id
            for path in paths
        ]

    def worker_command(self) -> list[str]:
        """The worker for the current ``config``: with periodic recovery, an embedded
        beat, and the queue its runs are sent to even when ``queues`` leaves it out."""
        extra = ["--concurrency", str(self.concurrency)] if self.concurrency else []
        queues = self.queues
        if self.recovery_config.enable_periodic_recovery:
            extra.append("--beat")
            if RECOVERY_QUEUE not in queues:
                queues = (*queues, RECOVERY_QUEUE)
        return worker_command(self.worker_id, queues, *extra)

    async def start_worker(self) -> int:
        """Run one recovery attempt, then a Celery worker (with periodic recovery
        unless disabled) until it exits or ``stop()``; returns the worker's exit code."""
        await self.recovery_manager.run_recovery()
        env = {
            **os.environ,
            **config_environment(self.recovery_config),
            "REDIS_URL": self.redis_url,
        }
        command = self.worker_command()
        self._process = await asyncio.create_subprocess_exec(*command, env=env)
        return await self._process.wait()

    def stop(self) -> None:
        """Ask the worker for a warm shutdown (it finishes its current tasks) and close
        the recovery manager's connections."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        if self._manager is not None:
            self._manager.close()
            self._manager = None
