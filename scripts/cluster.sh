#!/usr/bin/env bash
# The production topology of tilekeeper, for real, on this machine (issue 25):
#
#   clients/workers --https--> nginx (TLS, /tk/ prefix, failover) --> API 1, API 2
#   API writes --TLS--> PostgreSQL 15 + PostGIS primary (its own initdb, scram, hostssl)
#   API reads  --TLS--> streaming replica (pg_basebackup -R, hot standby)
#   products   -------> S3-compatible server (moto_server), bucket tilekeeper-products
#   runner workers w1..w3: separate "machines" (own HOME, openEO config, API key) running
#   `tilekeeper campaign run` through the proxy against two local openEO back-ends.
#
# Usage: scripts/cluster.sh up | status | workers CAMPAIGN_ID [POLL_SLEEP] | start PART | down
#        | destroy
#   up       start (or complete) everything; idempotent; prints where everything is and
#            writes $DIR/env, to `source` before using the CLI against the cluster
#   workers  start the runner workers on a campaign (they exit when it is done)
#   start    start one part again after it stopped (s3: moto and its bucket; apis: the
#            API processes that are down), as bench/drills.py does after a fault
#   status   each part, up or not
#   down     stop everything (the data stays; `up` starts it again)
#   destroy  down, then delete $DIR
#
# State lives in DIR=${TILEKEEPER_CLUSTER_DIR:-$PWD/.cluster}. Ports are free loopback ports
# chosen at the first `up` and kept in $DIR/ports.env; set TILEKEEPER_CLUSTER_<NAME> (e.g.
# TILEKEEPER_CLUSTER_PROXY_PORT=8443) before the first `up` to choose one. Other knobs:
# TILEKEEPER_CLUSTER_WORKERS (3), TILEKEEPER_CLUSTER_API_WORKERS (1 process per API),
# TILEKEEPER_CLUSTER_PREFIX (/tk). `up` first runs scripts/bootstrap.sh (Debian packages:
# postgresql-15, postgis, nginx; the virtualenvs), unless TILEKEEPER_CLUSTER_BOOTSTRAP=0.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(realpath -m "${TILEKEEPER_CLUSTER_DIR:-$PWD/.cluster}")
PREFIX=${TILEKEEPER_CLUSTER_PREFIX:-/tk}
PREFIX=/${PREFIX#/}
PREFIX=${PREFIX%/}
N_WORKERS=${TILEKEEPER_CLUSTER_WORKERS:-3}
API_WORKERS=${TILEKEEPER_CLUSTER_API_WORKERS:-1}
PG_BIN=${TILEKEEPER_CLUSTER_PG_BIN:-/usr/lib/postgresql/15/bin}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
PY=$REPO/.venv/bin/python
TK=$REPO/.venv/bin/tilekeeper
OPENEO_PY=${TILEKEEPER_OPENEO_PYTHON:-$REPO/.venv-openeo/bin/python}
HELPER=$REPO/scripts/cluster/helper.py
TEMPLATE=$REPO/docker/nginx.conf.template
DBNAME=tilekeeper
ADMIN=tilekeeper_admin
BUCKET=tilekeeper-products
BACKENDS=(alpha beta)
PORT_NAMES=(PG_PORT REPLICA_PORT S3_PORT API1_PORT API2_PORT PROXY_PORT ALPHA_PORT BETA_PORT)

log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() {
  printf '[cluster] error: %s\n' "$*" >&2
  exit 1
}

# The cluster is configured by this script alone: nothing from the caller's shell (an
# embedded database's DSN, another API's key) leaks into its processes.
while IFS= read -r name; do
  case $name in
    TILEKEEPER_CLUSTER_* | TILEKEEPER_OPENEO_PYTHON) ;;
    TILEKEEPER_* | PG* | AWS_* | OPENEO_* | REQUESTS_CA_BUNDLE) unset "$name" ;;
  esac
done < <(compgen -e)

# PostgreSQL refuses to run as root: as root, its programs run as the postgres OS user (as
# catalog_service/database/cluster.py does for the embedded cluster).
if [[ $(id -u) -eq 0 ]]; then
  PG_USER=${TILEKEEPER_CLUSTER_PG_OS_USER:-postgres}
  id "$PG_USER" >/dev/null 2>&1 || die "OS user $PG_USER does not exist (useradd -r $PG_USER)"
  as_pg() { runuser -u "$PG_USER" -- "$@"; }
else
  PG_USER=$(id -un)
  as_pg() { "$@"; }
fi

# -- state: ports, secrets, TLS ---------------------------------------------------------

load_ports() {
  local file=$DIR/ports.env
  if [[ ! -f $file ]]; then
    local free i=0 name var
    read -r -a free <<<"$("$PY" "$HELPER" free-ports ${#PORT_NAMES[@]})"
    {
      for name in "${PORT_NAMES[@]}"; do
        var=TILEKEEPER_CLUSTER_$name
        echo "$name=${!var:-${free[$i]}}"
        i=$((i + 1))
      done
    } >"$file.tmp"
    mv "$file.tmp" "$file"
  fi
  # shellcheck disable=SC1090
  source "$file"
  PROXY_URL=https://127.0.0.1:$PROXY_PORT$PREFIX/
  S3_URL=http://127.0.0.1:$S3_PORT
}

secret() { # secret NAME: a random password kept in $DIR/secrets/NAME (mode 0600)
  local file=$DIR/secrets/$1
  if [[ ! -s $file ]]; then
    mkdir -p "$DIR/secrets"
    chmod 700 "$DIR/secrets"
    (umask 077 && openssl rand -hex 24 >"$file")
  fi
  cat "$file"
}

make_tls() {
  local tls=$DIR/tls
  [[ -s $tls/server.crt && -s $tls/ca.crt ]] && return
  log "TLS: a cluster CA and a server certificate for 127.0.0.1/localhost (openssl)"
  mkdir -p "$tls"
  (
    cd "$tls"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=tilekeeper cluster CA" \
      -keyout ca.key -out ca.crt -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key \
      -out server.csr 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
      >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -out server.crt -extfile server.ext 2>/dev/null
    chmod 644 ca.crt server.crt
  )
  chmod 755 "$tls"
}

# -- processes ----------------------------------------------------------------------------

pid_of() { cat "$DIR/run/$1.pid" 2>/dev/null || true; }

alive() { # alive NAME: its recorded process runs (not a zombie)
  local pid
  pid=$(pid_of "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null &&
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

start_bg() { # start_bg NAME COMMAND...: detached, in its own session, logged to logs/NAME.log
  local name=$1
  shift
  if alive "$name"; then
    log "$name: already up (pid $(pid_of "$name"))"
    return 1
  fi
  mkdir -p "$DIR/run" "$DIR/logs"
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/run/$name.pid"
  log "$name: started (pid $!, log $DIR/logs/$name.log)"
}

stop_bg() { # stop_bg NAME...: SIGTERM to their process groups, SIGKILL after 15 s
  local name pid i left pids=() names=()
  for name in "$@"; do
    pid=$(pid_of "$name")
    if [[ -n $pid ]] && alive "$name"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    fi
  done
  for ((i = 0; i < 150; i++)); do
    left=0
    for pid in "${pids[@]}"; do
      kill -0 -- "-$pid" 2>/dev/null && left=1
    done
    ((left)) || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 -- "-${pids[$i]}" 2>/dev/null; then
      log "${names[$i]}: still running after 15 s, killing it"
      kill -KILL -- "-${pids[$i]}" 2>/dev/null || true
    fi
    log "${names[$i]}: stopped (pid ${pids[$i]})"
  done
  for name in "$@"; do
    rm -f "$DIR/run/$name.pid"
  done
}

wait_http() { "$PY" "$HELPER" wait-http "$1" --timeout "${2:-90}"; }

# -- PostgreSQL: primary and replica ---------------------------------------------------

pg_running() { as_pg "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1; }

pg_start() { # pg_start NAME PGDATA
  if pg_running "$2"; then
    log "PostgreSQL $1: already up"
    return
  fi
  log "PostgreSQL $1: starting"
  as_pg "$PG_BIN/pg_ctl" -D "$2" -l "$DIR/logs/pg-$1.log" -w -t 60 start >/dev/null ||
    die "PostgreSQL $1 did not start: $(tail -n 20 "$DIR/logs/pg-$1.log")"
}

# psql as the superuser over TLS (verify-full against the cluster CA): psql_admin DB [ARGS]
psql_admin() {
  local db=$1
  shift
  PGPASSWORD=$(secret admin) PGSSLMODE=verify-full PGSSLROOTCERT=$DIR/tls/ca.crt \
    psql -h 127.0.0.1 -p "${PSQL_PORT:-$PG_PORT}" -U "$ADMIN" -d "$db" -X -q -A -t \
    -v ON_ERROR_STOP=1 "$@"
}

primary_up() {
  local pgdata=$DIR/pg/primary
  mkdir -p "$DIR/pg" "$DIR/logs"
  chmod 755 "$DIR" "$DIR/pg" "$DIR/logs"
  chown "$PG_USER" "$DIR/pg" "$DIR/logs"
  as_pg test -x "$DIR/pg" ||
    die "$PG_USER cannot reach $DIR (a parent folder is not searchable by others): choose another TILEKEEPER_CLUSTER_DIR"
  if [[ ! -f $pgdata/PG_VERSION ]]; then
    log "PostgreSQL primary: initdb in $pgdata (superuser $ADMIN, scram-sha-256)"
    rm -rf "$pgdata"
    local pwfile=$DIR/pg/initdb.pw
    (umask 077 && secret admin >"$pwfile")
    chown "$PG_USER" "$pwfile"
    as_pg "$PG_BIN/initdb" -D "$pgdata" -U "$ADMIN" --pwfile="$pwfile" \
      --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DIR/logs/initdb.log" 2>&1 ||
      die "initdb failed: $(tail -n 20 "$DIR/logs/initdb.log")"
    rm -f "$pwfile"
    install -m 600 -o "$PG_USER" "$DIR/tls/server.key" "$pgdata/server.key"
    install -m 644 -o "$PG_USER" "$DIR/tls/server.crt" "$pgdata/server.crt"
    install -m 644 -o "$PG_USER" "$DIR/tls/ca.crt" "$pgdata/ca.crt"
    # Settings of both servers (the replica is a copy, with its own port appended).
    cat >>"$pgdata/postgresql.conf" <<EOF

# -- scripts/cluster.sh --
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DIR/pg'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
max_connections = 200
shared_buffers = 128MB
jit = off
wal_level = replica
max_wal_senders = 5
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
# Commits wait for no standby unless a role asks (the writer login does: see replica_up).
synchronous_commit = local
shared_preload_libraries = 'pg_stat_statements'
log_min_messages = warning
EOF
    # Password logins over TLS only, for named roles only; no trust, no plain TCP.
    cat >"$pgdata/pg_hba.conf" <<EOF
# TYPE   DATABASE     USER                                       ADDRESS       METHOD
local    all          $ADMIN                                                   scram-sha-256
hostssl  all          $ADMIN,tilekeeper_writer,tilekeeper_reader 127.0.0.1/32  scram-sha-256
hostssl  replication  replicator                                 127.0.0.1/32  scram-sha-256
host     all          all                                        0.0.0.0/0     reject
EOF
  fi
  pg_start primary "$pgdata"
  # The database, and the role the replica streams with.
  psql_admin postgres <<SQL
SELECT 'CREATE DATABASE $DBNAME' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DBNAME')
\gexec
SELECT CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator')
  THEN format('ALTER ROLE replicator LOGIN REPLICATION PASSWORD %L', '$(secret replicator)')
  ELSE format('CREATE ROLE replicator LOGIN REPLICATION PASSWORD %L', '$(secret replicator)') END
\gexec
SQL
}

schema_up() {
  log "tilekeeper db up against the primary (pgstac, PostGIS, writer and reader logins)"
  env "${DB_ADMIN_ENV[@]}" TILEKEEPER_DB_WRITER_PASSWORD="$(secret writer)" \
    TILEKEEPER_DB_READER_PASSWORD="$(secret reader)" "$TK" db up >"$DIR/logs/db-up.log" 2>&1 ||
    die "tilekeeper db up failed: $(tail -n 30 "$DIR/logs/db-up.log")"
  # pgstac must not write on the replica (its search() caches searches in a table unless
  # pgstac.readonly is set); statement statistics show which server answered what.
  psql_admin "$DBNAME" <<SQL
SET client_min_messages = warning;
ALTER ROLE tilekeeper_reader SET pgstac.readonly = 'true';
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SQL
}

replica_up() {
  local pgdata=$DIR/pg/replica
  if [[ ! -f $pgdata/PG_VERSION ]]; then
    log "PostgreSQL replica: pg_basebackup -R from the primary into $pgdata"
    rm -rf "$pgdata"
    as_pg env PGPASSWORD="$(secret replicator)" PGSSLMODE=verify-full \
      PGSSLROOTCERT="$DIR/tls/ca.crt" PGAPPNAME=tilekeeper_replica \
      "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U replicator -D "$pgdata" \
      -R -X stream -c fast >"$DIR/logs/basebackup.log" 2>&1 ||
      die "pg_basebackup failed: $(cat "$DIR/logs/basebackup.log")"
    printf '\n# -- the replica --\nport = %s\nhot_standby = on\n' "$REPLICA_PORT" \
      >>"$pgdata/postgresql.conf"
  fi
  pg_start replica "$pgdata"
  # Asynchronous by default, as managed read replicas are: the API reads what decides a
  # write from the primary (catalog_service/api/read_routing.py). With
  # TILEKEEPER_CLUSTER_SYNC_COMMIT=remote_apply a writer's commit returns once the replica
  # shows it (a search right after a write sees it), and writes wait while it is down.
  psql_admin "$DBNAME" >/dev/null <<SQL
SET client_min_messages = warning;
ALTER SYSTEM SET synchronous_standby_names = '$([[ ${TILEKEEPER_CLUSTER_SYNC_COMMIT:-local} == local ]] || echo tilekeeper_replica)';
ALTER ROLE tilekeeper_writer SET synchronous_commit = '${TILEKEEPER_CLUSTER_SYNC_COMMIT:-local}';
SELECT pg_reload_conf();
SQL
}

# -- the services -------------------------------------------------------------------------

s3_env() {
  echo "TILEKEEPER_PRODUCTS_STORE=s3://$BUCKET/products" \
    "TILEKEEPER_PRODUCTS_S3_ENDPOINT=$S3_URL" "AWS_ACCESS_KEY_ID=tilekeeper" \
    "AWS_SECRET_ACCESS_KEY=$(secret s3)" "AWS_DEFAULT_REGION=us-east-1"
}

set_envs() {
  local ssl=(PGSSLMODE=verify-full "PGSSLROOTCERT=$DIR/tls/ca.crt")
  local db=postgresql://%s:%s@127.0.0.1:%s/$DBNAME
  local s3
  read -r -a s3 <<<"$(s3_env)"
  # shellcheck disable=SC2059
  DB_ADMIN_ENV=("${ssl[@]}" "TILEKEEPER_DB_DSN=$(printf "$db" "$ADMIN" "$(secret admin)" "$PG_PORT")")
  # shellcheck disable=SC2059
  API_ENV=("${ssl[@]}" "${s3[@]}"
    "TILEKEEPER_DB_DSN=$(printf "$db" tilekeeper_writer "$(secret writer)" "$PG_PORT")"
    "TILEKEEPER_DB_READ_DSN=$(printf "$db" tilekeeper_reader "$(secret reader)" "$REPLICA_PORT")"
    TILEKEEPER_API_HOST=127.0.0.1 "TILEKEEPER_API_WORKERS=$API_WORKERS"
    "TILEKEEPER_API_ROOT_PATH=$PREFIX" TILEKEEPER_API_FORWARDED_ALLOW_IPS=127.0.0.1
    TILEKEEPER_EGRESS_ALLOW_LOOPBACK=true)
  CLIENT_ENV=("${s3[@]}" "TILEKEEPER_API_URL=$PROXY_URL" "REQUESTS_CA_BUNDLE=$DIR/tls/ca.crt"
    TILEKEEPER_EGRESS_ALLOW_LOOPBACK=true)
}

s3_up() {
  local s3
  read -r -a s3 <<<"$(s3_env)"
  start_bg s3 "$REPO/.venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" || true
  wait_http "$S3_URL/" 30
  env "${s3[@]}" "$PY" "$HELPER" make-bucket "$S3_URL" "$BUCKET"
}

apis_up() {
  local n port
  for n in 1 2; do
    port=API${n}_PORT
    start_bg "api-$n" env "${API_ENV[@]}" "TILEKEEPER_API_PORT=${!port}" "$TK" serve || true
  done
  for n in 1 2; do
    port=API${n}_PORT
    wait_http "http://127.0.0.1:${!port}/_mgmt/ping" 120
  done
}

proxy_up() {
  local conf=$DIR/nginx
  mkdir -p "$conf/temp" "$DIR/logs"
  chmod 755 "$conf"
  TK_LISTEN=127.0.0.1:$PROXY_PORT TK_SERVER_NAME=localhost TK_PUBLIC_PORT=$PROXY_PORT \
    TK_PREFIX=$PREFIX TK_TLS_CERT=$DIR/tls/server.crt TK_TLS_KEY=$DIR/tls/server.key \
    TK_API_1=127.0.0.1:$API1_PORT TK_API_2=127.0.0.1:$API2_PORT envsubst \
    "\${TK_LISTEN} \${TK_SERVER_NAME} \${TK_PUBLIC_PORT} \${TK_PREFIX} \${TK_TLS_CERT} \${TK_TLS_KEY} \${TK_API_1} \${TK_API_2}" \
    <"$TEMPLATE" >"$conf/tilekeeper.conf"
  cat >"$conf/nginx.conf" <<EOF
# Made by scripts/cluster.sh; the proxy itself is docker/nginx.conf.template.
worker_processes 1;
pid $conf/nginx.pid;
error_log $DIR/logs/nginx-error.log warn;
events { worker_connections 512; }
http {
    access_log $DIR/logs/nginx-access.log;
    client_body_temp_path $conf/temp/body;
    proxy_temp_path $conf/temp/proxy;
    fastcgi_temp_path $conf/temp/fastcgi;
    uwsgi_temp_path $conf/temp/uwsgi;
    scgi_temp_path $conf/temp/scgi;
    include $conf/tilekeeper.conf;
}
EOF
  "$NGINX" -t -q -c "$conf/nginx.conf" -p "$conf" -e "$DIR/logs/nginx-error.log" ||
    die "nginx refused its configuration ($conf/nginx.conf)"
  start_bg nginx "$NGINX" -c "$conf/nginx.conf" -p "$conf" -e "$DIR/logs/nginx-error.log" \
    -g "daemon off;" || true
  REQUESTS_CA_BUNDLE=$DIR/tls/ca.crt wait_http "${PROXY_URL}_mgmt/ping" 30
}

admin_key() { # the cluster's admin API key, made once with the database's admin login
  local file=$DIR/secrets/admin-key
  if [[ ! -s $file ]]; then
    (umask 077 && env "${DB_ADMIN_ENV[@]}" "$TK" auth key create cluster-admin --scope admin \
      --json | "$PY" -c "import json,sys; print(json.load(sys.stdin)['token'])" >"$file.tmp")
    mv "$file.tmp" "$file"
    log "admin API key: $file"
  fi
}

backends_up() {
  local name port i=0 ports=("$ALPHA_PORT" "$BETA_PORT")
  for name in "${BACKENDS[@]}"; do
    port=${ports[$i]}
    i=$((i + 1))
    mkdir -p "$DIR/backends/$name"
    # The back-ends read the sample through the proxy (REQUESTS_CA_BUNDLE for its TLS).
    start_bg "backend-$name" env PYTHONPATH="$REPO" REQUESTS_CA_BUNDLE="$DIR/tls/ca.crt" \
      "$OPENEO_PY" -m local_openeo serve --name "$name" --jobs-dir "$DIR/backends/$name" \
      --stac-url "$PROXY_URL" --host 127.0.0.1 --port "$port" --users tilekeeper:tilekeeper \
      --max-running 2 --min-runtime 0 --fail-tiles "" \
      --fail-state-dir "$DIR/backends/$name" --collections "" || true
  done
  for port in "${ports[@]}"; do
    wait_http "http://127.0.0.1:$port/openeo/1.2/" 120
  done
}

backend_urls() { echo "http://127.0.0.1:$ALPHA_PORT/openeo/1.2/ http://127.0.0.1:$BETA_PORT/openeo/1.2/"; }

worker_env() { # worker_env N: the environment of runner "machine" wN
  local home=$DIR/workers/w$1
  echo "HOME=$home/home" "XDG_CONFIG_HOME=$home/home/.config" \
    "XDG_DATA_HOME=$home/home/.local/share" "XDG_STATE_HOME=$home/home/.local/state" \
    "OPENEO_CONFIG_HOME=$home/openeo" "TILEKEEPER_OUTBOX_DIR=$home/outbox" \
    "TILEKEEPER_API_KEY_FILE=$home/api-key"
}

workers_prepare() { # each worker "machine": its home, its API key, its openEO login
  local n home wenv urls
  read -r -a urls <<<"$(backend_urls)"
  for ((n = 1; n <= N_WORKERS; n++)); do
    home=$DIR/workers/w$n
    mkdir -p "$home/home" "$home/openeo"
    chmod 700 "$home"
    if [[ ! -s $home/api-key ]]; then
      # stac:write as well: the first harvest creates the campaign's product collection
      # with POST /collections, which asks for it (products:write alone gets 403).
      (umask 077 && env "${DB_ADMIN_ENV[@]}" "$TK" auth key create "worker-w$n" \
        --scope campaigns:write --scope products:write --scope stac:write --json |
        "$PY" -c "import json,sys; print(json.load(sys.stdin)['token'])" >"$home/api-key")
    fi
    read -r -a wenv <<<"$(worker_env "$n")"
    env "${CLIENT_ENV[@]}" "${wenv[@]}" "$PY" "$HELPER" store-login "${urls[@]}" >/dev/null
  done
  log "runner machines: $N_WORKERS under $DIR/workers (own HOME, openEO config, API key)"
}

write_env() {
  local file=$DIR/env s3 line
  read -r -a s3 <<<"$(s3_env)"
  mkdir -p "$DIR/openeo"
  (
    umask 077
    {
      echo "# source me: the tilekeeper CLI against the cluster in $DIR (scripts/cluster.sh)"
      for line in "TILEKEEPER_API_URL=$PROXY_URL" "TILEKEEPER_API_KEY_FILE=$DIR/secrets/admin-key" \
        "REQUESTS_CA_BUNDLE=$DIR/tls/ca.crt" "OPENEO_CONFIG_HOME=$DIR/openeo" \
        TILEKEEPER_EGRESS_ALLOW_LOOPBACK=true "${s3[@]}" "${DB_ADMIN_ENV[@]}"; do
        printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
      done
      echo "# the back-ends: $(backend_urls) (login tilekeeper / tilekeeper)"
      echo "TILEKEEPER_CLUSTER_BACKENDS='alpha=http://127.0.0.1:$ALPHA_PORT/openeo/1.2/ beta=http://127.0.0.1:$BETA_PORT/openeo/1.2/'"
      echo "TILEKEEPER_CLUSTER_REPLICA_PORT=$REPLICA_PORT"
      echo "# the runner workers' keys are named worker-w1..: make them owners of a campaign they run"
      echo "# (tilekeeper campaign create ... \$TILEKEEPER_CLUSTER_OWNERS), or they get 403"
      printf "TILEKEEPER_CLUSTER_OWNERS='%s'\n" "$(for ((n = 1; n <= N_WORKERS; n++)); do printf -- '--owner key:worker-w%s ' "$n"; done)"
    } >"$file"
  )
  local urls
  read -r -a urls <<<"$(backend_urls)"
  env "${CLIENT_ENV[@]}" OPENEO_CONFIG_HOME="$DIR/openeo" "$PY" "$HELPER" store-login \
    "${urls[@]}" >/dev/null
}

# -- commands -----------------------------------------------------------------------------

cmd_up() {
  local started=$SECONDS
  # What a fresh machine lacks (Debian packages, the virtualenvs), as scripts/demo.sh does;
  # TILEKEEPER_CLUSTER_BOOTSTRAP=0 skips it.
  if [[ ${TILEKEEPER_CLUSTER_BOOTSTRAP:-1} != 0 ]]; then
    bash "$REPO/scripts/bootstrap.sh"
  fi
  [[ -x $PY && -x $OPENEO_PY ]] || die "virtualenvs missing: run bash scripts/bootstrap.sh"
  mkdir -p "$DIR"
  [[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 missing: run bash scripts/bootstrap.sh"
  [[ -x $NGINX ]] || die "nginx missing: run bash scripts/bootstrap.sh"
  load_ports
  set_envs
  make_tls
  s3_up
  primary_up
  schema_up
  replica_up
  admin_key
  apis_up
  proxy_up
  local key
  key=$(cat "$DIR/secrets/admin-key")
  log "the input sample (synthetic Sentinel-2, generated once) into the catalogue"
  env "${CLIENT_ENV[@]}" TILEKEEPER_API_KEY="$key" "$PY" "$HELPER" load-sample "$DIR/sample"
  backends_up
  write_env
  local urls
  read -r -a urls <<<"$(backend_urls)"
  env "${CLIENT_ENV[@]}" OPENEO_CONFIG_HOME="$DIR/openeo" "$PY" "$HELPER" install-udp "${urls[@]}"
  workers_prepare
  log "up in $((SECONDS - started)) s"
  cat <<EOF

  API (through nginx, TLS):   $PROXY_URL   (CA: $DIR/tls/ca.crt)
  API processes:              http://127.0.0.1:$API1_PORT/  http://127.0.0.1:$API2_PORT/
  PostgreSQL primary:         127.0.0.1:$PG_PORT  (hostssl, scram; superuser $ADMIN)
  PostgreSQL replica (reads): 127.0.0.1:$REPLICA_PORT
  S3 (moto):                  $S3_URL  bucket $BUCKET
  openEO back-ends:           alpha http://127.0.0.1:$ALPHA_PORT/openeo/1.2/  beta http://127.0.0.1:$BETA_PORT/openeo/1.2/
  secrets:                    $DIR/secrets (mode 0600); logs: $DIR/logs
  use the CLI:                source $DIR/env && $TK campaign list
  run a campaign:             scripts/cluster.sh workers CAMPAIGN_ID   ($N_WORKERS workers)
EOF
}

cmd_workers() {
  local campaign=${1:?usage: cluster.sh workers CAMPAIGN_ID [POLL_SLEEP]} sleep=${2:-2} n wenv
  load_ports
  set_envs
  alive nginx || die "the cluster is not up: scripts/cluster.sh up"
  for ((n = 1; n <= N_WORKERS; n++)); do
    read -r -a wenv <<<"$(worker_env "$n")"
    # The last line of its log says how it ended (`exited 0` when the campaign is done).
    start_bg "worker-w$n" env "${CLIENT_ENV[@]}" "${wenv[@]}" bash -c '"$@"; echo "exited $?"' \
      worker "$TK" campaign run "$campaign" --worker "w$n" --poll-sleep "$sleep" \
      --log-file "$DIR/workers/w$n/run.log" || true
  done
  log "workers run until $campaign is done: scripts/cluster.sh status; logs $DIR/workers/w*/run.log"
}

cmd_start() {
  load_ports
  set_envs
  case ${1:-} in
    s3) s3_up ;;
    apis) apis_up ;;
    *) die "usage: cluster.sh start s3|apis" ;;
  esac
}

cmd_status() {
  local rc=0 name
  [[ -f $DIR/ports.env ]] || {
    echo "no cluster in $DIR"
    return 3
  }
  load_ports
  set_envs
  for name in primary replica; do
    if [[ -f $DIR/pg/$name/PG_VERSION ]] && pg_running "$DIR/pg/$name"; then
      local port=$PG_PORT
      [[ $name == replica ]] && port=$REPLICA_PORT
      printf '%-16s up    127.0.0.1:%s in_recovery=%s\n' "postgres-$name" "$port" \
        "$(PSQL_PORT=$port psql_admin "$DBNAME" -c 'SELECT pg_is_in_recovery()' 2>&1 | head -1)"
    else
      printf '%-16s down\n' "postgres-$name"
      rc=1
    fi
  done
  if pg_running "$DIR/pg/primary" 2>/dev/null; then
    printf '%-16s %s\n' replication "$(psql_admin postgres -c "SELECT coalesce(string_agg(application_name || ' ' || state || ' ' || sync_state || ' lag ' || coalesce(replay_lag::text, '0'), ', '), 'no standby') FROM pg_stat_replication")"
  fi
  for name in s3 api-1 api-2 nginx backend-alpha backend-beta; do
    if alive "$name"; then
      printf '%-16s up    pid %s\n' "$name" "$(pid_of "$name")"
    else
      printf '%-16s down\n' "$name"
      rc=1
    fi
  done
  for file in "$DIR"/run/worker-*.pid; do
    [[ -e $file ]] || continue
    name=$(basename "$file" .pid)
    if alive "$name"; then
      printf '%-16s running  pid %s\n' "$name" "$(pid_of "$name")"
    else
      printf '%-16s ended    (%s)\n' "$name" "$(tail -n 1 "$DIR/logs/$name.log" 2>/dev/null)"
    fi
  done
  echo "proxy: $PROXY_URL"
  return $rc
}

cmd_down() {
  local name file
  [[ -d $DIR/run || -d $DIR/pg ]] || {
    log "nothing to stop in $DIR"
    return
  }
  local workers=()
  for file in "$DIR"/run/worker-*.pid; do
    [[ -e $file ]] && workers+=("$(basename "$file" .pid)")
  done
  # Workers first (they end their leases through the proxy), then the rest at once.
  ((${#workers[@]})) && stop_bg "${workers[@]}"
  stop_bg nginx api-1 api-2 backend-alpha backend-beta s3
  for name in replica primary; do
    if [[ -f $DIR/pg/$name/PG_VERSION ]] && pg_running "$DIR/pg/$name"; then
      as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg/$name" -m fast -w -t 60 stop >/dev/null
      log "PostgreSQL $name: stopped"
    fi
  done
}

case ${1:-} in
  up) cmd_up ;;
  workers) cmd_workers "${@:2}" ;;
  start) cmd_start "${@:2}" ;;
  status) cmd_status ;;
  down) cmd_down ;;
  destroy)
    cmd_down
    rm -rf "$DIR"
    log "removed $DIR"
    ;;
  *)
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
