#!/bin/sh
# Runs once before the services: waits for PostgreSQL and Kafka (the CLI retries),
# creates or updates the database roles (as the admin: the schema owner, the
# services' role and the purge role, with the passwords of their URLs), applies
# migrations as the owner (safe to repeat, serialized by an advisory lock) and
# creates topics.
set -eu
platereg roles
platereg migrate
platereg topics
