"""Issue 19: S3METADATA=postgres in the configuration."""
from __future__ import annotations

import pytest

from gateway.metadata.postgres import PostgresMetadataClient, describe
from gateway.store import Store
from shared.config import ConfigError, load_config


def test_postgres_needs_a_connection_string():
    with pytest.raises(ConfigError, match="S3METADATA_URL"):
        load_config({"S3METADATA": "postgres"})
    with pytest.raises(ConfigError, match="postgresql://"):
        load_config({"S3METADATA": "postgres", "S3METADATA_URL": "db1:5432"})


def test_postgres_url_selects_the_sql_metadata_client():
    url = "postgresql://s3:secret@db1,db2/s3?target_session_attrs=read-write"
    config = load_config({"S3METADATA": "postgres", "S3METADATA_URL": url})
    assert config.metadata_backend == "postgres" and config.metadata_url == url
    assert "secret" not in repr(config)
    store = Store.from_config(config)
    assert isinstance(store.client, PostgresMetadataClient) and store.client.dsn == url
    assert "secret" not in describe(url) and "db1,db2" in describe(url)


def test_other_backends_are_still_refused():
    with pytest.raises(ConfigError):
        load_config({"S3METADATA": "mongodb"})
