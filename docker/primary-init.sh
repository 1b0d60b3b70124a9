#!/usr/bin/env bash
# Run once by the PostgreSQL image's entrypoint when it initialises the primary's volume
# (docker/compose.yaml mounts it into /docker-entrypoint-initdb.d/): the `replicator`
# login db-replica streams with, and the pg_hba line that lets it in. A volume initialised
# before this file existed needs the same by hand (psql as the superuser, then reload).
set -euo pipefail
psql -v ON_ERROR_STOP=1 -v pw="$TILEKEEPER_REPLICATION_PASSWORD" \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
SELECT format('CREATE ROLE replicator LOGIN REPLICATION PASSWORD %L', :'pw')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator')
\gexec
SQL
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
