#!/bin/sh
# The images' entrypoint. The configuration comes from the environment (ENDPOINT, LOG_LEVEL, SSL,
# LISTEN_ADDR, DATA_HOST, METADATA_HOST, S3BACKEND, ...: shared/config.py reads them directly, so
# unlike the reference's entrypoint nothing rewrites config.json, which may be mounted read-only).
#
# The gateway image run alone, as the reference's `docker run -p 8000:8000 scality/s3server`:
# with the file backend and no METADATA_HOST / DATA_HOST, a dmd starts in the same container
# (on localhost, data and metadata in the image's volumes), as `make start` does.
set -e

if [ "$1" = "python" ] && [ "$2" = "-m" ] && [ "$3" = "gateway" ] && [ $# -eq 3 ] \
   && [ -z "$METADATA_HOST" ] && [ -z "$DATA_HOST" ] \
   && [ "${S3METADATA:-${S3BACKEND:-file}}" = "file" ]; then
    # Both on loopback whatever LISTEN_ADDR says: the gateway is the dmd's only caller here.
    LISTEN_ADDR= python -m dmd --bind 127.0.0.1 &
    dmd=$!
    python -m gateway &
    gateway=$!
    stopping=
    stop() { stopping=1; kill -TERM "$gateway" 2>/dev/null || true; }
    trap stop TERM INT
    # wait returns early (128+signal) when a trapped signal arrives: wait until the gateway is
    # gone, then once more for its own exit status.
    while kill -0 "$gateway" 2>/dev/null; do wait "$gateway" || true; done
    status=0
    wait "$gateway" || status=$?
    # uvicorn re-raises the SIGTERM it handled (exit 143): a requested stop is a clean exit.
    if [ -n "$stopping" ] && [ "$status" -eq 143 ]; then status=0; fi
    kill -TERM "$dmd" 2>/dev/null || true
    wait "$dmd" || true
    exit "$status"
fi
exec "$@"
