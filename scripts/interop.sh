#!/usr/bin/env bash
# Interop check: the README quick start, done with third-party tools (mosquitto_pub/mosquitto_sub from
# mosquitto-clients, kcat) against the built ferry binary. Fails loudly on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v kcat >/dev/null || need+=(kcat)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "interop: installing ${need[*]} from Debian"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
bin="$work/ferry"
go build -o "$bin" ./cmd/ferry
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
MQTT_PORT=$(free_port); KAFKA_PORT=$(free_port); TLS_PORT=$(free_port)

# Certificates for the TLS checks (section 5): a CA signs the server's and a device's certificate; a rogue CA
# signs another device's. ECDSA P-256, made with openssl.
pki="$work/pki"; mkdir -p "$pki"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
mkca() { openssl req -x509 "${ec[@]}" -keyout "$pki/$1.key" -out "$pki/$1.pem" -days 2 -subj "/CN=$1" 2>/dev/null; }
mkleaf() { # name CA CN extensions
  openssl req "${ec[@]}" -keyout "$pki/$1.key" -out "$pki/$1.csr" -subj "/CN=$3" 2>/dev/null
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/$2.pem" -CAkey "$pki/$2.key" -set_serial "$RANDOM" -days 2 \
    -out "$pki/$1.pem" -extfile <(printf '%s\n' "$4") 2>/dev/null
}
mkca ca && mkca rogue-ca || { echo "interop FAILED: openssl could not make the test CAs"; exit 1; }
mkleaf server ca 127.0.0.1 "subjectAltName=IP:127.0.0.1,DNS:localhost"
mkleaf device ca interop-device "extendedKeyUsage=clientAuth"
mkleaf rogue rogue-ca rogue-device "extendedKeyUsage=clientAuth"

"$bin" --mqtt "tcp://127.0.0.1:$MQTT_PORT" --embedded-kafka-addr "127.0.0.1:$KAFKA_PORT" --data-dir "$work/data" \
  --mqtt "tls://127.0.0.1:$TLS_PORT" --tls-cert "$pki/server.pem" --tls-key "$pki/server.key" \
  --tls-client-ca "$pki/ca.pem" --tls-client-auth verify-if-given --log-level debug \
  >"$work/ferry.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "interop FAILED: $*"; echo "--- ferry log"; cat "$work/ferry.log"; exit 1; }

for _ in $(seq 100); do
  grep -q "serving MQTT" "$work/ferry.log" && break
  kill -0 "$pid" 2>/dev/null || fail "ferry exited at start"
  sleep 0.1
done
grep -q "serving MQTT" "$work/ferry.log" || fail "ferry did not start within 10s"

H=(-h 127.0.0.1 -p "$MQTT_PORT")
# 1. mosquitto_sub receives what mosquitto_pub publishes, at every QoS and in both protocol versions.
for v in mqttv311 mqttv5; do
  timeout 10 mosquitto_sub "${H[@]}" -V "$v" -t "interop/$v/#" -q 2 -v -C 3 >"$work/sub-$v.out" &
  sub=$!
  sleep 0.5
  for q in 0 1 2; do
    mosquitto_pub "${H[@]}" -V "$v" -t "interop/$v/q$q" -q "$q" -m "hello $v q$q" || fail "mosquitto_pub $v QoS $q"
  done
  wait "$sub" || fail "mosquitto_sub $v did not receive 3 messages: $(cat "$work/sub-$v.out")"
  for q in 0 1 2; do
    grep -qx "interop/$v/q$q hello $v q$q" "$work/sub-$v.out" || fail "$v QoS $q message missing: $(cat "$work/sub-$v.out")"
  done
done
echo "interop: mosquitto_pub → Ferry → mosquitto_sub at QoS 0/1/2, v3.1.1 and v5: ok"

# 2. kcat reads the same messages from Kafka: key = MQTT topic, value = payload, Ferry's headers.
kcat -C -b "127.0.0.1:$KAFKA_PORT" -t mqtt-messages -o beginning -e -q -f '%k|%s|%h\n' >"$work/kcat.out" 2>"$work/kcat.err" \
  || fail "kcat: $(cat "$work/kcat.err")"
grep -q '^interop/mqttv311/q1|hello mqttv311 q1|.*mqtt.qos=1' "$work/kcat.out" || fail "kcat did not see the v3.1.1 QoS 1 record: $(cat "$work/kcat.out")"
grep -q '^interop/mqttv5/q2|hello mqttv5 q2|' "$work/kcat.out" || fail "kcat did not see the v5 QoS 2 record: $(cat "$work/kcat.out")"
echo "interop: kcat reads every message as a record (key = topic, value = payload): ok"

# 3. A record produced with kcat (key = an MQTT topic) reaches mosquitto_sub.
timeout 10 mosquitto_sub "${H[@]}" -t 'cmd/#' -q 1 -v -C 1 >"$work/cmd.out" &
sub=$!
sleep 0.5
echo 'cmd/dev7/reboot:now' | kcat -P -b "127.0.0.1:$KAFKA_PORT" -t mqtt-messages -K: || fail "kcat produce"
wait "$sub" || fail "mosquitto_sub did not receive the Kafka-born record"
grep -qx 'cmd/dev7/reboot now' "$work/cmd.out" || fail "Kafka-born record arrived changed: $(cat "$work/cmd.out")"
echo "interop: kcat → Kafka → Ferry → mosquitto_sub: ok"

# 4. A retained message reaches a later subscriber.
mosquitto_pub "${H[@]}" -t interop/retained -q 1 -r -m kept || fail "retained publish"
sleep 0.5
timeout 10 mosquitto_sub "${H[@]}" -t interop/retained -q 1 -C 1 >"$work/ret.out" || fail "no retained message"
grep -qx kept "$work/ret.out" || fail "retained message changed: $(cat "$work/ret.out")"
echo "interop: retained message: ok"

# 5. TLS (tls://, the server's certificate verified with --cafile) and mutual TLS (a device certificate of the
# client CA, whose Common Name becomes the client's identity; a certificate of another CA is refused).
T=(-h 127.0.0.1 -p "$TLS_PORT" --cafile "$pki/ca.pem")
DEV=(--cert "$pki/device.pem" --key "$pki/device.key")
timeout 10 mosquitto_sub "${T[@]}" -t 'tls/#' -q 1 -v -C 2 >"$work/tls.out" &
sub=$!
sleep 0.5
mosquitto_pub "${T[@]}" -t tls/plain -q 1 -m "over tls" || fail "mosquitto_pub over TLS"
mosquitto_pub "${T[@]}" "${DEV[@]}" -i mtls-device -t tls/mtls -q 1 -m "over mtls" || fail "mosquitto_pub over mutual TLS"
wait "$sub" || fail "mosquitto_sub over TLS did not receive 2 messages: $(cat "$work/tls.out")"
grep -qx 'tls/plain over tls' "$work/tls.out" && grep -qx 'tls/mtls over mtls' "$work/tls.out" \
  || fail "TLS messages changed: $(cat "$work/tls.out")"
grep -q 'client connected.*client=mtls-device.*identity=interop-device' "$work/ferry.log" \
  || fail "the device certificate's identity is not in the log"
if mosquitto_pub "${T[@]}" --cert "$pki/rogue.pem" --key "$pki/rogue.key" -t tls/rogue -q 1 -m no 2>/dev/null; then
  fail "a client certificate of another CA was accepted"
fi
if mosquitto_pub -h 127.0.0.1 -p "$TLS_PORT" -t tls/cleartext -m no 2>/dev/null; then
  fail "plain MQTT was accepted on the TLS port"
fi
echo "interop: mosquitto_pub/mosquitto_sub over TLS and mutual TLS; wrong CA and cleartext refused: ok"
echo "interop passed"
