#!/bin/sh
# Creates and upgrades Temporal's two PostgreSQL databases; safe to run again (each
# upgrade of temporalio/server and admin-tools runs it first).
set -eu
: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required (from POSTGRES_PASSWORD in .env)}"
PORT="${DB_PORT:-5432}"
nc -z -w 10 "$POSTGRES_SEEDS" "$PORT"
for db in temporal temporal_visibility; do
    case "$db" in
        temporal) dir=/etc/temporal/schema/postgresql/v12/temporal/versioned ;;
        *) dir=/etc/temporal/schema/postgresql/v12/visibility/versioned ;;
    esac
    tool="temporal-sql-tool --plugin postgres12 --ep $POSTGRES_SEEDS -u $POSTGRES_USER -p $PORT --db $db"
    $tool create || echo "database $db exists"
    $tool setup-schema -v 0.0 || echo "schema of $db exists"
    $tool update-schema -d "$dir"
done
echo "PostgreSQL schema ready"
