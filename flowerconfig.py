"""Flower's configuration file: docrecovery's metrics on Flower's own ``/metrics``.

``celery -A tasks flower`` runs ``./flowerconfig.py`` (or the file ``--conf`` names)
inside Flower's process, as ``celery`` reads ``celeryconfig.py``. This one adds the
tracker's collector to prometheus_client's default registry, the one Flower serves:
a scrape of Flower then gives its ``flower_*`` task metrics and the tracker's
``docrecovery_*`` ones (read from ``REDIS_URL`` at scrape time, under the
``DOCRECOVERY_*`` settings; see recovery/exporter.py). ``/metrics`` stays open, like
``/healthcheck``; ``--basic-auth`` guards the rest of Flower.

Flower takes every top-level name here that matches one of its options as a
setting (``port = 5555``), so this file defines no other name but the import.
"""

from recovery.exporter import register

register()
