"""Data backends behind one interface (`DataBackend`), chosen per location.

`make_data_backend(config, location)` is the only place that maps a location's
type to a backend: "file" -> the dmd's /DataFile service, "mem" -> process
memory; S3DATA=mem (config.data_backend == "mem") puts every location in memory.
"""
from __future__ import annotations

from shared.config import Config, Location

from gateway.data.base import (DataBackend, DataError, DataIntegrityError, DataNotFound,
                               DataRangeNotSatisfiable, DataUnavailable, is_valid_key)
from gateway.data.dmd import DmdDataBackend
from gateway.data.memory import MemoryDataBackend

__all__ = ["DataBackend", "DataError", "DataIntegrityError", "DataNotFound", "DataRangeNotSatisfiable",
           "DataUnavailable", "DmdDataBackend", "MemoryDataBackend", "is_valid_key", "make_data_backend",
           "shared_memory_backend"]

_memory_backend: MemoryDataBackend | None = None


def shared_memory_backend() -> MemoryDataBackend:
    """The process-wide memory store: every "mem" location shares it, as blobs outlive requests."""
    global _memory_backend
    if _memory_backend is None:
        _memory_backend = MemoryDataBackend()
    return _memory_backend


def make_data_backend(config: Config, location: Location) -> DataBackend:
    """The backend holding the data of `location` (a Location of config.locations)."""
    if config.data_backend == "mem" or location.type == "mem":
        return shared_memory_backend()
    if location.type == "file":
        return DmdDataBackend(config.data_client.host, config.data_client.port, location.name, secret=config.dmd_secret,
                              retry_window_ms=config.retry_window_ms)
    if location.type == "aws_s3":
        from gateway.data.aws_s3 import AwsS3DataBackend  # needed only where such a location is configured
        return AwsS3DataBackend(location)
    raise NotImplementedError(
        f"location {location.name!r}: data backend type {location.type!r} is not supported yet "
        f"(supported: 'file', 'mem', 'aws_s3')")
