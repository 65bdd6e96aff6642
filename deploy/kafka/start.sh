#!/bin/bash
# Apache Kafka for the compose stack, with SASL/SCRAM and ACLs.
#
# Starts the image's own entrypoint (/etc/kafka/docker/run) in the background,
# waits for the broker on its loopback-only BROKER listener (plaintext, whose
# anonymous principal is the super user: only processes inside this container
# reach it), then creates one SCRAM-SHA-512 principal per client and its ACLs:
#   platereg-services  the registry consumer, relays, notices, APIs' readiness
#                      and the prestart topic creation: topics plates.*, groups
#   platereg-ingest    the ingest API: write (and describe) plates.events only
#   each producer of KAFKA_PRODUCERS ("name:password name:password ..."), e.g.
#                      registry-office, insurer-acme, police: write plates.events only
# Clients connect to kafka:9092 (CLIENT listener, SASL_PLAINTEXT on the compose
# network; put TLS in front, or switch the listener to SASL_SSL with your
# certificates, before it leaves that network). Re-running is safe: SCRAM
# credentials are replaced and ACLs are added idempotently. Passwords must be
# URL-safe (e.g. `openssl rand -hex 24`).
set -euo pipefail

: "${SCRAM_SERVICES_PASSWORD:?set KAFKA_SERVICES_PASSWORD}"
: "${SCRAM_INGEST_PASSWORD:?set KAFKA_INGEST_PASSWORD}"
BIN=/opt/kafka/bin
ADMIN=(--bootstrap-server 127.0.0.1:9094)

/etc/kafka/docker/run &
broker=$!
trap 'kill -TERM "$broker"; wait "$broker"' TERM INT

until "$BIN/kafka-broker-api-versions.sh" "${ADMIN[@]}" >/dev/null 2>&1; do
  kill -0 "$broker" 2>/dev/null || { echo "kafka exited during start-up" >&2; exit 1; }
  sleep 1
done

scram() {  # principal password
  "$BIN/kafka-configs.sh" "${ADMIN[@]}" --alter --entity-type users --entity-name "$1" \
    --add-config "SCRAM-SHA-512=[password=$2]" >/dev/null
}
allow() {  # principal, then kafka-acls.sh arguments
  local who=$1; shift
  "$BIN/kafka-acls.sh" "${ADMIN[@]}" --add --allow-principal "User:$who" "$@" >/dev/null
}
producer() {  # principal password: may write plates.events and nothing else
  scram "$1" "$2"
  allow "$1" --operation Write --operation Describe --topic plates.events
}

scram platereg-services "$SCRAM_SERVICES_PASSWORD"
allow platereg-services --operation All --topic plates. --resource-pattern-type prefixed
allow platereg-services --operation All --group '*'
allow platereg-services --operation Create --operation Describe --cluster
producer platereg-ingest "$SCRAM_INGEST_PASSWORD"
for entry in ${SCRAM_PRODUCERS:-}; do
  producer "${entry%%:*}" "${entry#*:}"
done

touch /tmp/platereg-kafka-ready
echo "kafka: SCRAM principals and ACLs are in place"
wait "$broker"
