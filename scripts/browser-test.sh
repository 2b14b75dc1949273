#!/usr/bin/env bash
# Browser check of the WebSocket listener: MQTT.js (npm package mqtt) in headless Chromium connects to a Ferry
# over ws://, subscribes, shows a message a Go client publishes and publishes an answer (server/browser_test.go
# asserts both the page's DOM and the answer). Installs Chromium from Debian and MQTT.js from npm into a cache
# directory when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

MQTTJS_VERSION=5.16.0
cache="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}/browser"
bundle="$cache/node_modules/mqtt/dist/mqtt.min.js"

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "browser-test: installing chromium from Debian"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  chromium=$(command -v chromium)
fi
if [ ! -f "$bundle" ] || ! grep -q "\"version\": \"$MQTTJS_VERSION\"" "$cache/node_modules/mqtt/package.json"; then
  if ! command -v npm >/dev/null; then
    echo "browser-test: installing npm from Debian"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
  fi
  echo "browser-test: installing mqtt@$MQTTJS_VERSION from npm into $cache"
  mkdir -p "$cache"
  npm install --prefix "$cache" "mqtt@$MQTTJS_VERSION" --no-audit --no-fund --silent >/dev/null
fi
echo "browser-test: $("$chromium" --version 2>/dev/null), MQTT.js $MQTTJS_VERSION"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! FERRY_BROWSER_TEST=1 FERRY_CHROMIUM="$chromium" FERRY_MQTTJS="$bundle" \
  go test -count=1 -v -run '^TestBrowserMQTTJS$' ./server/ >"$log" 2>&1 || ! grep -q -- '--- PASS: TestBrowserMQTTJS' "$log"; then
  cat "$log"
  echo "browser-test FAILED"
  exit 1
fi
grep -v '^=== RUN' "$log"
echo "browser-test passed"
