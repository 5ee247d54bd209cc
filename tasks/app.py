"""The pipeline's Celery app, configured from ``celeryconfig`` and the environment."""

from __future__ import annotations

from celery import Celery

import recovery

app = Celery("tasks")
app.config_from_object("celeryconfig")
recovery.install(app, recovery.RecoveryConfig.from_env())
