#!/bin/sh
# The login the compose stack's read replica (profile "replica", deploy/postgres/replica.sh)
# streams as: platereg_replicator, with REPLICATION and LOGIN and nothing else (not a
# superuser, no database object granted), password from DB_REPLICATOR_PASSWORD.
# pg_hba.conf lets it make replication connections only. The postgres image runs this
# once, when it creates the primary's data directory (/docker-entrypoint-initdb.d); on a
# data directory made before, or to change the password, run it again (it creates the
# role or sets its attributes and password):
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-replicator.sh
set -eu
: "${DB_REPLICATOR_PASSWORD:?set DB_REPLICATOR_PASSWORD}"
# The password goes in as a psql variable (:'password' quotes it), never in the SQL text.
psql -v ON_ERROR_STOP=1 -v password="$DB_REPLICATOR_PASSWORD" \
     --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'platereg_replicator') AS missing
\gset
\if :missing
CREATE ROLE platereg_replicator;
\endif
ALTER ROLE platereg_replicator WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE
    NOINHERIT NOBYPASSRLS PASSWORD :'password';
SQL
