#!/usr/bin/env bash
# PostgreSQL from Debian's packages, on 127.0.0.1 only, for the production topology run natively
# (the integration test, or a one-machine trial of infra/):
#
#   postgres.sh start DATA_DIR PORT   initialise DATA_DIR if new, start the server on
#                                     127.0.0.1:PORT, create the role and the databases
#   postgres.sh stop DATA_DIR         stop it (fast shutdown)
#
# The role and its password come from the environment only: CARTINTEL_PG_USER (default
# cartintel) and CARTINTEL_PG_PASSWORD (required). Databases: dagster (runs, event logs,
# schedules) and mlflow (tracking and registry), both owned by that role.
set -euo pipefail

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] || [ ! -x "$d/pg_ctl" ]; then
    echo "error: PostgreSQL is not installed (make system-packages installs Debian's)" >&2
    exit 1
  fi
  echo "$d"
}

# the server refuses to run as root: as root, run it as Debian's postgres account
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd=${1:-}
data=${2:-}
if [ -z "$cmd" ] || [ -z "$data" ]; then
  echo "usage: $0 start DATA_DIR PORT | stop DATA_DIR" >&2
  exit 2
fi
bin=$(bindir)

case "$cmd" in
start)
  port=${3:?usage: $0 start DATA_DIR PORT}
  user=${CARTINTEL_PG_USER:-cartintel}
  password=${CARTINTEL_PG_PASSWORD:?set CARTINTEL_PG_PASSWORD}
  mkdir -p "$data"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$data"
    if ! runuser -u postgres -- test -w "$data"; then
      echo "error: the postgres account cannot reach $data (a parent directory is closed to it)" >&2
      exit 1
    fi
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    echo "==> initialising a PostgreSQL cluster in $data"
    as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  # trust only for the superuser on the unix socket inside DATA_DIR; over TCP, a password
  printf 'local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$data/pg_hba.conf"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$data/pg_hba.conf"
  fi
  if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    echo "==> PostgreSQL already runs in $data"
  else
    echo "==> starting PostgreSQL on 127.0.0.1:$port"
    as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c password_encryption=scram-sha-256"
  fi
  # role and password reach psql through its environment (\getenv), never a command line
  export CARTINTEL_PG_USER="$user" CARTINTEL_PG_PASSWORD="$password"
  as_owner "$bin/psql" -h "$data" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA <<'SQL'
\getenv user CARTINTEL_PG_USER
\getenv password CARTINTEL_PG_PASSWORD
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', db, :'user')
FROM unnest(ARRAY['dagster', 'mlflow']) AS db
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = db) \gexec
SQL
  echo "==> PostgreSQL ready: databases dagster and mlflow, role $user"
  ;;
stop)
  if [ -f "$data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    echo "==> PostgreSQL in $data stopped"
  fi
  ;;
*)
  echo "usage: $0 start DATA_DIR PORT | stop DATA_DIR" >&2
  exit 2
  ;;
esac
