#!/bin/bash
# Apache Kafka for the compose stack, with SASL/SCRAM, ACLs and TLS.
#
# Starts the image's own entrypoint (/etc/kafka/docker/run) in the background,
# waits for the broker on its loopback-only BROKER listener (plaintext, whose
# anonymous principal is the super user: only processes inside this container
# reach it), then sets up every principal of the ACL file (deploy/kafka/acls,
# mounted at $ACLS), the one list the test suite proves too:
#   * a SCRAM-SHA-512 credential per principal, its password from the variable
#     SCRAM_PASSWORD_<NAME> (the name in capitals, "-" as "_": platereg-registry
#     -> SCRAM_PASSWORD_PLATEREG_REGISTRY), and one per direct producer of
#     SCRAM_PRODUCERS ("name:password name:password ...");
#   * the file's grants (a "producer:*" line once per direct producer).
# Every password must be set before the broker starts; they must be URL-safe
# (e.g. `openssl rand -hex 24`). Clients connect to kafka:9092 (CLIENT listener,
# SASL_SSL with the certificate of /etc/kafka/tls/broker.pem). Re-running is safe:
# credentials are replaced and grants added idempotently; a grant removed from
# the file is not removed from the broker (kafka-acls.sh --remove does that).
set -euo pipefail
shopt -s inherit_errexit

BIN=${KAFKA_BIN:-/opt/kafka/bin}
ACLS=${PLATEREG_ACLS:-/opt/platereg/acls}
ADMIN=(--bootstrap-server 127.0.0.1:9094)
PRODUCERS='producer:*'

# The variable holding the SCRAM password of principal $1.
password_variable() {
  local name=${1^^}
  printf 'SCRAM_PASSWORD_%s\n' "${name//-/_}"
}

# The direct producers' names, one a line.
producer_names() {
  local entry
  for entry in ${SCRAM_PRODUCERS:-}; do printf '%s\n' "${entry%%:*}"; done
}

# The file's lines without comments, as "number principal [resource name pattern
# operations]"; exits naming the line if one is malformed (as devtools/kafka_acls.py).
acl_lines() {
  local number=0 line fields
  while IFS= read -r line || [[ -n $line ]]; do
    number=$((number + 1))
    read -r -a fields <<< "${line%%#*}"
    (( ${#fields[@]} )) || continue
    if [[ ${#fields[@]} == 2 && ${fields[1]} == - ]] || {
         [[ ${#fields[@]} == 5 ]] &&
         [[ ${fields[1]} =~ ^(topic|group|transactional-id|cluster)$ ]] &&
         [[ ${fields[3]} =~ ^(literal|prefixed)$ ]]; }; then
      printf '%s %s\n' "$number" "${fields[*]}"
    else
      echo "$ACLS:$number: expected 'principal resource name pattern operations': $line" >&2
      return 1
    fi
  done < "$ACLS"
}

# The platform's principals in file order, then the direct producers.
principals() {
  local lines
  lines=$(acl_lines)
  awk '$2 != "'"$PRODUCERS"'" && !seen[$2]++ { print $2 }' <<< "$lines"
  producer_names
}

# One line per grant: principal resource name pattern operations.
grants() {
  local lines number who resource name pattern operations producer
  lines=$(acl_lines)
  while read -r number who resource name pattern operations; do
    [[ -n $resource && $resource != - ]] || continue   # "-": may log in, nothing more
    if [[ $who == "$PRODUCERS" ]]; then
      for producer in $(producer_names); do
        printf '%s %s %s %s %s\n' "$producer" "$resource" "$name" "$pattern" "$operations"
      done
    else
      printf '%s %s %s %s %s\n' "$who" "$resource" "$name" "$pattern" "$operations"
    fi
  done <<< "$lines"
}

# kafka-acls.sh arguments adding one grant (as Grant.acl_command_args in Python).
grant_args() {  # principal resource name pattern operations
  local target=(--"$2" "$3") operation
  [[ $2 == cluster ]] && target=(--cluster)
  printf '%s\n' --add --allow-principal "User:$1" "${target[@]}" --resource-pattern-type "$4"
  for operation in ${5//,/ }; do printf '%s\n' --operation "$operation"; done
}

# The password of principal $1: its SCRAM_PASSWORD_* variable or its producer entry.
password_of() {
  local entry variable
  for entry in ${SCRAM_PRODUCERS:-}; do
    if [[ ${entry%%:*} == "$1" ]]; then printf '%s\n' "${entry#*:}"; return; fi
  done
  variable=$(password_variable "$1")
  if [[ -z ${!variable:-} ]]; then
    echo "set $variable (the password of Kafka principal $1)" >&2
    return 1
  fi
  printf '%s\n' "${!variable}"
}

# Every principal has a password: checked before the broker starts.
check_passwords() {
  local names who
  names=$(principals)
  for who in $names; do password_of "$who" > /dev/null; done
}

# Credentials, then grants, through the loopback super-user listener.
configure() {
  local names who password list grant out args
  names=$(principals)
  for who in $names; do
    password=$(password_of "$who")
    "$BIN/kafka-configs.sh" "${ADMIN[@]}" --alter --entity-type users --entity-name "$who" \
      --add-config "SCRAM-SHA-512=[password=$password]" > /dev/null
  done
  list=$(grants)
  while read -r -a grant; do
    (( ${#grant[@]} )) || continue
    out=$(grant_args "${grant[@]}")
    mapfile -t args <<< "$out"
    "$BIN/kafka-acls.sh" "${ADMIN[@]}" "${args[@]}" > /dev/null
  done <<< "$list"
}

main() {
  check_passwords
  local key=${KAFKA_LISTENER_NAME_CLIENT_SSL_KEYSTORE_LOCATION:-}
  if [[ -n $key && ! -r $key ]]; then
    echo "cannot read the broker's TLS key and certificates ($key): make them with" \
         "deploy/kafka/make-certs.sh or put yours in KAFKA_TLS_DIR (docs/operations.md, TLS)" >&2
    exit 1
  fi
  /etc/kafka/docker/run &
  broker=$!
  trap 'kill -TERM "$broker"; wait "$broker"' TERM INT
  until "$BIN/kafka-broker-api-versions.sh" "${ADMIN[@]}" > /dev/null 2>&1; do
    kill -0 "$broker" 2>/dev/null || { echo "kafka exited during start-up" >&2; exit 1; }
    sleep 1
  done
  configure
  touch /tmp/platereg-kafka-ready
  echo "kafka: SCRAM principals and ACLs of $ACLS are in place"
  wait "$broker"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
