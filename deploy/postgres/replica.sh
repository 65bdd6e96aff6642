#!/bin/sh
# The compose stack's read replica (profile "replica"): on its first start a base
# backup of the primary (pg_basebackup -R writes standby.signal and primary_conninfo),
# then PostgreSQL as a hot standby replaying the primary's WAL as it streams in. Its
# data directory is a volume of its own: later starts resume from it. It logs in to the
# primary as platereg_replicator (REPLICATION and LOGIN only; deploy/postgres/replicator.sh
# creates it), password in PGPASSWORD: -R writes that user into primary_conninfo, so the
# streaming connection uses it too. A replica made as another user keeps that user in its
# primary_conninfo: remove its volume (pgreplica) to make it again.
set -eu
PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  gosu postgres pg_basebackup -h "$PRIMARY_HOST" -U platereg_replicator -D "$PGDATA" -R -X stream -c fast
fi
exec gosu postgres postgres -D "$PGDATA"
