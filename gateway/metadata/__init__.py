"""Metadata access for the gateway: one interface, remote (dmd RPC) or local (in-process engine)."""
from gateway.metadata.client import LocalMetadataClient, MetadataClient, RemoteMetadataClient

__all__ = ["MetadataClient", "RemoteMetadataClient", "LocalMetadataClient"]
