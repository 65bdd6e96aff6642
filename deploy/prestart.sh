#!/bin/sh
# Runs once before the services: waits for PostgreSQL and Kafka (the CLI retries),
# creates or updates the database roles (as the admin: the schema owner, the
# services' role and the purge role, with the passwords of their URLs), applies
# migrations as the owner (safe to repeat, serialized by an advisory lock),
# creates topics and registers the ingest API's signed producer with its secret
# (left as it is when registered already).
set -eu
platereg roles
platereg migrate
platereg topics
platereg sources producer add "$PLATEREG_PRODUCER_NAME" --source / --secret-from-env PLATEREG_PRODUCER_SECRET
