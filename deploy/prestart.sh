#!/bin/sh
# Runs once before the services: waits for PostgreSQL and Kafka (the CLI retries),
# applies migrations (safe to repeat, serialized by an advisory lock) and creates topics.
set -eu
platereg migrate
platereg topics
