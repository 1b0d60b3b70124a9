#!/usr/bin/env bash
# db-replica's entrypoint (docker/compose.yaml): on an empty volume, copy the primary with
# pg_basebackup -R (which writes primary_conninfo and standby.signal), then run the
# image's own entrypoint, which finds the data directory initialised and starts a hot
# standby streaming from the primary.
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [[ ! -s $PGDATA/PG_VERSION ]]; then
  echo "db-replica: pg_basebackup from ${PRIMARY_HOST:?}"
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  until pg_isready -h "$PRIMARY_HOST" -q; do sleep 1; done
  gosu postgres env PGPASSWORD="$TILEKEEPER_REPLICATION_PASSWORD" pg_basebackup \
    -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" -R -X stream -c fast
fi
exec docker-entrypoint.sh postgres -c hot_standby=on -c max_connections=200 -c jit=off
