#!/usr/bin/env bash
# Debian packages the tests and benchmarks use, installed once on a fresh machine:
#   chromium  - the headless browser the dashboard test drives (through Playwright, never a
#               browser downloaded at run time)
#   wrk       - the HTTP load generator of the serving benchmark
#   postgresql - the production topology run natively (Dagster storage, MLflow backend store;
#               infra/scripts/postgres.sh starts a private cluster on 127.0.0.1)
#   openjdk-17-jre-headless - the Java runtime of Apache Spark (the scale-out engine, local mode
#               in the tests)
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "==> installing Debian packages: ${need[*]} (first time only)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "error: ${need[*]} missing and not root: install them with apt-get" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
