"""Data backends behind one interface (`DataBackend`), chosen per location.

`make_data_backend(config, location)` is the only place that maps a location's
type to a backend: "file" -> the dmd's /DataFile service (details.host/port: a dmd of its
own), "mem" -> process memory, "aws_s3" -> a remote S3 bucket, "azure" -> an Azure Blob container.
S3DATA=multiple (the default) follows the types; S3DATA=mem puts every location in memory and
S3DATA=file every location on the dmd. Which location an object goes to: gateway/placement.py.

`location_serving(config, name)` finds the location that serves a stored `dataStoreName`:
usually the location of that name; for the original's S3BACKEND=file (or =mem) records,
whose `dataStoreName` is the backend type itself, a location of that type.
"""
from __future__ import annotations

from shared import dmd_tls
from shared.config import Config, Location

from gateway.data.base import (DataBackend, DataError, DataIntegrityError, DataNotFound,
                               DataRangeNotSatisfiable, DataUnavailable, is_valid_key)
from gateway.data.dmd import DmdDataBackend
from gateway.data.memory import MemoryDataBackend

__all__ = ["DataBackend", "DataError", "DataIntegrityError", "DataNotFound", "DataRangeNotSatisfiable",
           "DataUnavailable", "DmdDataBackend", "MemoryDataBackend", "is_valid_key", "location_serving",
           "make_data_backend", "shared_memory_backend"]

#: `dataStoreName` values that name a data backend type, not a location. The original's gateway run
#: with S3BACKEND=file writes "file" in every `location[]` and `partLocations[]` entry (S3BACKEND=mem:
#: "mem"), and only its file (mem) data backend reads them back (fixtures README, incompatibility 4).
BACKEND_TYPE_NAMES = ("file", "mem")
#: preferred among several locations of the type asked for
DEFAULT_LOCATION_NAME = "us-east-1"

_memory_backend: MemoryDataBackend | None = None


def shared_memory_backend() -> MemoryDataBackend:
    """The process-wide memory store: every "mem" location shares it, as blobs outlive requests."""
    global _memory_backend
    if _memory_backend is None:
        _memory_backend = MemoryDataBackend()
    return _memory_backend


def location_serving(config: Config, name: str) -> Location | None:
    """The configured location that serves data recorded under `dataStoreName` `name`: the location
    of that name; else, for a backend type name ("file", "mem"), a location of that type (us-east-1
    when it is one, else the first in configuration order); else None (nothing here serves it).

    Every location of type "file" is the same dmd /DataFile service and keys are unique in it, so
    any of them reads (and deletes) the original's "file" blobs."""
    location = config.locations.get(name)
    if location is not None or name not in BACKEND_TYPE_NAMES:
        return location
    default = config.locations.get(DEFAULT_LOCATION_NAME)
    if default is not None and default.type == name:
        return default
    return next((loc for loc in config.locations.values() if loc.type == name), None)


def make_data_backend(config: Config, location: Location) -> DataBackend:
    """The backend holding the data of `location` (a Location of config.locations)."""
    if config.data_backend == "mem" or location.type == "mem":
        return shared_memory_backend()
    if location.type == "file" or config.data_backend == "file":
        # S3DATA=file: every location's data on the dmd, as the reference's S3DATA=file. A "file"
        # location may name its own dmd: details.host / details.port (else config.json's dataClient).
        details = location.details if location.type == "file" else {}
        host = details.get("host") or config.data_client.host
        port = details.get("port") or config.data_client.port
        # DATA_SOCKET: the default dmd through its Unix-domain socket (not a location's own dmd).
        own_dmd = "host" in details or "port" in details
        return DmdDataBackend(host, port, location.name, secret=config.dmd_secret,
                              retry_window_ms=config.retry_window_ms,
                              ssl_context=dmd_tls.client_context(config),   # TLS to the dmd
                              socket_path="" if own_dmd else config.data_client.socket_path)
    if location.type == "aws_s3":
        from gateway.data.aws_s3 import AwsS3DataBackend  # needed only where such a location is configured
        return AwsS3DataBackend(location)
    if location.type == "azure":
        from gateway.data.azure import AzureDataBackend  # azure-storage-blob: loaded only where configured
        return AzureDataBackend(location)
    raise NotImplementedError(
        f"location {location.name!r}: data backend type {location.type!r} is not supported yet "
        f"(supported: 'file', 'mem', 'aws_s3', 'azure')")
