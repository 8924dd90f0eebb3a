"""Issue 19: the PostgreSQL metadata client against a real PostgreSQL (no mocks).

Each test gets a database of its own in the session's cluster (tests/pg_fixtures.py). Two clients
(two pools) stand for two gateways. What is checked: versioned migrations, the versioning options
(the same answers as the dmd's engine), conditional writes atomic across clients, version ids
unique across gateways, listings as keyset-paginated range scans in byte order, and a database
that goes away answered with 503, never 500.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from botocore.exceptions import ClientError

from shared.listing import DelimiterMaster, ListingStats, list_entries
from gateway.metadata.pgschema import LATEST_VERSION
from gateway.metadata.postgres import PostgresMetadataClient
from shared import versionid
from shared.metastore import MemoryKV, MetaStore
from shared.metastore.errors import MetadataError
from shared.pgcluster import PgCluster
from tests.integration.conftest import make_client
from tests.pg_fixtures import start_pg_gateway, temp_cluster_or_skip

SEP = versionid.SEPARATOR


@pytest.fixture
def db_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database(f"t{uuid.uuid4().hex[:12]}")


async def _client(url: str, **kw) -> PostgresMetadataClient:
    c = PostgresMetadataClient(url, retry_window_ms=kw.pop("retry_window_ms", 3000), **kw)
    await c.connect()
    return c


async def _items(stream) -> list:
    return [x async for x in stream]


async def test_migrations_are_versioned_applied_once_and_a_newer_schema_is_refused(db_url):
    clients = await asyncio.gather(*(_client(db_url) for _ in range(3)))   # three gateways start at once
    try:
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch("SELECT version FROM s3_schema_migrations ORDER BY version")
            assert [r["version"] for r in rows] == list(range(1, LATEST_VERSION + 1))
            assert len({await c.get_uuid() for c in clients}) == 1     # one instance id for the database
            await conn.execute("INSERT INTO s3_schema_migrations (version, description) VALUES (999, 'future')")
        finally:
            await conn.close()
        late = PostgresMetadataClient(db_url, retry_window_ms=500)
        with pytest.raises(RuntimeError, match="newer than this gateway"):
            await late.connect()
        await late.close()
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_versioning_options_answer_as_the_dmd_engine(db_url):
    """The same call sequence on PostgreSQL and on the engine: same masters, same version keys."""
    pg = await _client(db_url)
    engine = MetaStore(MemoryKV())
    try:
        async def run(put, get, delete, stream) -> list:
            out = []
            vids = []
            for i in range(3):
                vids.append(json.loads(await put(["b"], "k", json.dumps({"n": i}), {"versioning": True}))["versionId"])
            out.append(json.loads(await get(["b"], "k", {}))["n"])
            await delete(["b"], "k", {"versionId": vids[2]})              # the master's version: master repaired
            out.append(json.loads(await get(["b"], "k", {}))["n"])
            await delete(["b"], "k", {"versionId": vids[0]})              # an older one: master untouched
            out.append(json.loads(await get(["b"], "k", {}))["n"])
            out.append(json.loads(await get(["b"], "k", {"versionId": vids[1]}))["n"])
            await put(["b"], "k", json.dumps({"n": 9}), {"versionId": vids[1]})   # over the master's version
            out.append(json.loads(await get(["b"], "k", {}))["n"])
            reply = json.loads(await put(["b"], "k", json.dumps({"n": 10}), {"versionId": ""}))   # suspended
            out.append(json.loads(await get(["b"], "k", {}))["versionId"] == reply["versionId"])
            await delete(["b"], "k", {"versionId": vids[1]})              # the last version: master removed?
            keys = [e["key"].replace(SEP, "|")[:2] for e in await _items(stream(["b"], {}))]
            out.append(keys)
            with pytest.raises(MetadataError) as err:
                await get(["b"], "nope", {})
            out.append(err.value.type)
            with pytest.raises(MetadataError) as err:
                await put(["b"], "k", "{}", {"versioning": True, "ifAbsent": True})
            out.append(err.value.type)
            return out
        mine = await run(pg.put, pg.get, pg.delete, pg.read_stream)
        theirs = await run(engine.put, engine.get, engine.delete, engine.read_stream)
        assert mine == theirs
        assert mine[:5] == [2, 1, 1, 1, 9]
    finally:
        await pg.close()
        await engine.close()


async def test_conditional_writes_have_one_winner_across_gateways(db_url):
    a, b = await _client(db_url), await _client(db_url)
    try:
        for r in range(40):
            key = f"c{r}"
            results = await asyncio.gather(
                *(c.put(["__metastore"], key, f'{{"who":{i}}}', {"ifAbsent": True})
                  for i, c in enumerate([a, b, a, b])), return_exceptions=True)
            assert sum(1 for x in results if x is None) == 1, results
            assert all(isinstance(x, MetadataError) and x.code == 412 for x in results if x is not None)
            current = await a.get(["__metastore"], key)
            claims = await asyncio.gather(*(c.put(["__metastore"], key, f"claimed by {i}", {"ifMatch": current})
                                            for i, c in enumerate([a, b, b, a])), return_exceptions=True)
            assert sum(1 for x in claims if x is None) == 1, claims
        # returnPrevious: a chain of plain overwrites hands every replaced value out exactly once.
        await a.put(["obj"], "x", "v-init", {})
        writes = [f"v{i}" for i in range(60)]
        replies = await asyncio.gather(*((a if i % 2 else b).put(["obj"], "x", v, {"returnPrevious": True})
                                         for i, v in enumerate(writes)))
        previous = [r["previous"] for r in replies]
        final = await a.get(["obj"], "x")
        assert sorted(previous + [final]) == sorted(writes + ["v-init"])
    finally:
        await a.close()
        await b.close()


async def test_concurrent_versioned_puts_from_two_gateways_keep_every_version_and_the_newest_master(db_url):
    a, b = await _client(db_url), await _client(db_url)
    try:
        replies = await asyncio.gather(*((a if i % 2 else b).put(["v"], "k", json.dumps({"i": i}), {"versioning": True})
                                         for i in range(60)))
        vids = [json.loads(r)["versionId"] for r in replies]
        assert len(set(vids)) == 60
        entries = await _items(a.read_stream(["v"], {}))
        assert entries[0]["key"] == "k" and len(entries) == 61
        assert entries[0]["value"] == entries[1]["value"]    # the master is the newest version
        # Deletes of versions racing from both gateways: the master always ends as the newest left.
        oldest = max(vids)   # ids sort newest-first
        await asyncio.gather(*((a if i % 2 else b).delete(["v"], "k", {"versionId": vid})
                               for i, vid in enumerate(v for v in vids if v != oldest)))
        entries = await _items(a.read_stream(["v"], {}))
        assert [e["key"] for e in entries] == ["k", "k" + SEP + oldest]
        assert entries[0]["value"] == entries[1]["value"]
    finally:
        await a.close()
        await b.close()


async def test_read_streams_are_keyset_pages_in_byte_order(db_url):
    c = await _client(db_url)
    try:
        keys = [f"p/{i:05d}" for i in range(2300)] + ["é", "z", "a" + SEP + "v1", "a", "\u4e2d", "ZZ"]
        conn = await asyncpg.connect(db_url)
        try:
            await conn.copy_records_to_table("s3_kv", records=[("bkt", k.encode(), b"{}") for k in keys],
                                             columns=["sublevel", "key", "value"])
        finally:
            await conn.close()
        ordered = sorted(keys, key=lambda k: k.encode())
        assert [e["key"] for e in await _items(c.read_stream(["bkt"], {}))] == ordered
        assert await _items(c.read_stream(["bkt"], {"keys": True, "values": False, "gt": "p/00100", "lte": "p/00105"})) \
            == [f"p/{i:05d}" for i in range(101, 106)]
        assert await _items(c.read_stream(["bkt"], {"values": False, "reverse": True, "limit": 1200})) \
            == list(reversed(ordered))[:1200]
        assert await _items(c.read_stream(["bkt"], {"values": False, "gte": "p/", "lt": "p0", "limit": 3})) \
            == ["p/00000", "p/00001", "p/00002"]
        assert await _items(c.read_stream(["other"], {})) == []
        # A listing reads only what its page needs, through the S3 listing algorithms.
        stats = ListingStats()
        result = await list_entries(lambda o: c.read_stream(["bkt"], o), DelimiterMaster(delimiter="/"), stats)
        assert result["CommonPrefixes"] == ["p/"]
        assert [e["key"] for e in result["Contents"]] == ["ZZ", "a", "z", "é", "\u4e2d"]
        # Past p/ with a new range query: a few dozen rows read of 2306, not all of them.
        assert stats.entries_read < 60 and 2 <= stats.streams_opened <= 3, stats
    finally:
        await c.close()


async def test_a_database_gone_is_a_503_never_a_500_and_both_recover_when_it_is_back(servers_dir, dmd):
    """The client's calls and a gateway's S3 requests while the database is down, then back."""
    cluster = temp_cluster_or_skip("pys3-pg-down-")
    gw = None
    try:
        url = cluster.create_database()
        gw = start_pg_gateway(servers_dir / "gw-pg-down", dmd, url, env={"S3_RETRY_WINDOW_MS": "1000"})
        s3 = make_client(gw.url)
        s3.create_bucket(Bucket="down-bucket")
        s3.put_object(Bucket="down-bucket", Key="k", Body=b"hello")
        c = await _client(url, retry_window_ms=1000)
        try:
            await c.put(["b"], "k", "v", {})
            cluster.stop("immediate")
            for call in (lambda: c.get(["b"], "k"), lambda: c.put(["b"], "k", "w", {}),
                         lambda: _items(c.read_stream(["b"], {}))):
                with pytest.raises(MetadataError) as err:
                    await call()
                assert err.value.code == 503, err.value
            assert not await c.healthy()
            for s3_call in (lambda: s3.get_object(Bucket="down-bucket", Key="k"),
                            lambda: s3.put_object(Bucket="down-bucket", Key="k2", Body=b"x"),
                            lambda: s3.list_objects_v2(Bucket="down-bucket")):
                with pytest.raises(ClientError) as s3_err:
                    await asyncio.to_thread(s3_call)
                assert s3_err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
                assert s3_err.value.response["Error"]["Code"] == "ServiceUnavailable"
            cluster.start()
            assert await c.get(["b"], "k") == "v"
            await c.put(["b"], "k", "w", {})
            assert await c.get(["b"], "k") == "w"
            body = await asyncio.to_thread(lambda: s3.get_object(Bucket="down-bucket", Key="k")["Body"].read())
            assert body == b"hello"
        finally:
            await c.close()
    finally:
        if gw is not None:
            gw.stop()
        cluster.remove()
