"""What the seed (``../shared/seeds/000_057f54dca4a8051e.txt``) publishes, verbatim:
its configuration dicts and metric names, pinned once for every test that checks them."""

from __future__ import annotations

from typing import Any

#: "Recovery Configuration Parameters".
PARAMETERS: dict[str, Any] = {
    "max_retry_count": 3,
    "min_retry_interval_hours": 1.0,
    "recovery_batch_size": 10,
    "enable_periodic_recovery": True,
    "recovery_interval_minutes": 30,
    "recovery_timeout": 300,
    "failed_docs_retention_days": 7,
}
#: "Standalone Recovery Function".
STANDALONE_CONFIG: dict[str, Any] = {
    "max_retry_count": 3,
    "min_retry_interval_hours": 1.0,
    "recovery_batch_size": 10,
    "enable_periodic_recovery": False,
}
#: "Distributed Processor Integration".
PROCESSOR_CONFIG: dict[str, Any] = {
    "max_retry_count": 3,
    "min_retry_interval_hours": 0.5,
    "recovery_batch_size": 5,
    "enable_periodic_recovery": True,
    "recovery_interval_minutes": 15,
}
#: "Metrics Available".
METRICS = {
    "total_failed_documents",
    "documents_eligible_for_retry",
    "recovery_attempts",
    "successful_recoveries",
    "failed_recoveries",
    "recovery_success_rate",
    "average_recovery_time",
    "last_recovery_run",
}
