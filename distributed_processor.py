"""The seed's import line: ``from distributed_processor import DistributedProcessor``."""

from tasks.processor import DistributedProcessor

__all__ = ["DistributedProcessor"]
