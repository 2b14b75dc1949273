#!/usr/bin/env bash
# share-100k.sh — 100,000 QoS 1 messages through one share group (share-group mode, KIP-932 on kfake) of
# ten members on three Ferry instances, one member killed mid-run holding unacknowledged messages: checks
# that none is lost and that the only duplicates are released messages (server/share_group_test.go,
# TestShareGroup100k). About 5 minutes on 2 shared cores.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY_SHARE_100K=1 exec go test -count=1 -timeout 30m -v -run '^TestShareGroup100k$' ./server/
