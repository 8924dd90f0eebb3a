"""The metadata layer shared by the dmd and the in-memory backend: one engine over two stores."""
from shared.metastore.engine import MetaStore
from shared.metastore.errors import MetadataError
from shared.metastore.kv import KVClosedError, KVOpenError, MemoryKV, OrderedKV, OriginalStoreError, RocksKV

__all__ = ["KVClosedError", "KVOpenError", "MemoryKV", "MetaStore", "MetadataError", "OrderedKV", "OriginalStoreError",
           "RocksKV"]
