#!/usr/bin/env bash
# Local PostgreSQL for the licence-server tests (licensing/server/tests).
#
# Idempotent; run as root on Debian. Installs PostgreSQL if missing, creates and
# starts the newest version's "main" cluster, creates the role and database
# outpost/outpost (the role may create databases: each test run makes its own), and
# prints the URL to use as OUTPOST_TEST_POSTGRES_URL on stdout (last line). It
# exports nothing; all other output goes to stderr.
#
#   export OUTPOST_TEST_POSTGRES_URL="$(bash licensing/server/ci-postgres.sh)"
#   cargo test -p outpost-license-server
set -euo pipefail

if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    echo "ci-postgres: installing PostgreSQL" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h | awk '{print $1 " " $2}' | grep -qx "$version main"; then
    pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk '$1 == "'"$version"'" && $2 == "main" {print $4}' | grep -qx online; then
    pg_ctlcluster "$version" main start >&2
fi
port="$(pg_lsclusters -h | awk '$1 == "'"$version"'" && $2 == "main" {print $3}')"

# Wait until the server accepts connections.
for _ in $(seq 1 60); do
    if su postgres -c "psql -p $port -qAt -c 'SELECT 1'" >/dev/null 2>&1; then
        break
    fi
    sleep 1
done

su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -qAt" >&2 <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'outpost') THEN
        CREATE ROLE outpost LOGIN PASSWORD 'outpost' CREATEDB;
    ELSE
        ALTER ROLE outpost LOGIN PASSWORD 'outpost' CREATEDB;
    END IF;
END
$$;
SQL
if ! su postgres -c "psql -p $port -qAt -c \"SELECT 1 FROM pg_database WHERE datname = 'outpost'\"" | grep -qx 1; then
    su postgres -c "createdb -p $port -O outpost outpost" >&2
fi

echo "postgres://outpost:outpost@127.0.0.1:$port/outpost"
