#!/bin/bash
# A development CA and a broker certificate for the compose broker's SASL_SSL
# listener, made with openssl:
#
#   deploy/kafka/make-certs.sh [DIR [HOSTNAME...]]
#
# DIR (default: deploy/kafka/tls, which git ignores) receives
#   broker.pem  the broker's private key (unencrypted PKCS#8, the form Kafka's PEM
#               key store reads) followed by its certificate and the CA's (the chain);
#               mounted into the kafka container, readable by its user (uid 1000)
#   ca.pem      the CA certificate: what every client trusts (PLATEREG_KAFKA_SSL_CAFILE)
#   ca.key      the CA's private key, to issue the next broker certificate; never mounted
# The broker certificate names each HOSTNAME (default: kafka localhost, as clients
# inside and outside the compose network reach it), an IP address as such.
# Real certificates replace the two mounted files (docs/operations.md, "TLS").
# Existing files are kept: delete them first to make new ones.
set -euo pipefail

dir=${1:-"$(dirname "$0")/tls"}
shift $(( $# > 0 ? 1 : 0 ))
hosts=("$@")
(( ${#hosts[@]} )) || hosts=(kafka localhost)

for f in broker.pem ca.pem ca.key; do
  if [[ -e "$dir/$f" ]]; then
    echo "make-certs: $dir/$f exists; delete it to make new certificates" >&2
    exit 1
  fi
done
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

san=""
for host in "${hosts[@]}"; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san+="IP:$host,"; else san+="DNS:$host,"; fi
done
san=${san%,}

umask 077
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$dir/ca.key" 2>/dev/null
openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 \
  -subj "/CN=Plate Registry development CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$work/ca.pem"

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/broker.key" 2>/dev/null
openssl req -new -key "$work/broker.key" -subj "/CN=${hosts[0]}" -out "$work/broker.csr"
printf '%s\n' "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
  "subjectAltName=$san" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" \
  > "$work/broker.ext"
openssl x509 -req -in "$work/broker.csr" -CA "$work/ca.pem" -CAkey "$dir/ca.key" \
  -CAcreateserial -sha256 -days 825 -extfile "$work/broker.ext" -out "$work/broker.crt" \
  2>/dev/null

cat "$work/broker.key" "$work/broker.crt" "$work/ca.pem" > "$dir/broker.pem"
install -m 0644 "$work/ca.pem" "$dir/ca.pem"
chmod 0600 "$dir/broker.pem" "$dir/ca.key"
echo "make-certs: $dir/broker.pem (key and chain for $san) and $dir/ca.pem (the CA)"
if [[ $(id -u) != 1000 ]]; then
  echo "make-certs: the kafka container reads broker.pem as uid 1000:" \
       "sudo chown 1000 $dir/broker.pem" >&2
fi
