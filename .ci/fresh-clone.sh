#!/usr/bin/env bash
# Fresh-clone check: what a newcomer does. Clone the committed tree, build
# it, run `smtpgate dev` with a temporary data directory on free loopback
# ports, run the curl command it prints, find the message in the outbox,
# and stop it with SIGINT. Bounded: every wait has a limit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d -t smtpgate-fresh.XXXXXX)
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

git clone --quiet "$repo" "$tmp/src"
cd "$tmp/src"
go build -o "$tmp/smtpgate" ./cmd/smtpgate

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
"$tmp/smtpgate" dev -data "$tmp/state" \
  -submission "127.0.0.1:$(port)" -submissions "127.0.0.1:$(port)" -web "127.0.0.1:$(port)" \
  -idp "127.0.0.1:$(port)" -upstream "127.0.0.1:$(port)" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 1 120); do
  grep -qs '^The configuration is ' "$tmp/out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/err"; echo "fresh clone: smtpgate dev exited early" >&2; exit 1; }
  sleep 0.5
done
grep -q '^The configuration is ' "$tmp/out" || { cat "$tmp/err"; echo "fresh clone: smtpgate dev not ready in 60s" >&2; exit 1; }
curl_cmd=$(grep -E '^  curl ' "$tmp/out")
bash -c "$curl_cmd --silent --show-error --max-time 30"
n=$(find "$tmp/state/outbox/new" -name '*.eml' | wc -l)
[[ $n -eq 1 ]] || { echo "fresh clone: outbox holds $n messages, want 1" >&2; exit 1; }
grep -q '(smtpgate) with ESMTPSA' "$tmp/state/outbox/new/"*.eml
kill -INT "$pid"
for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
if kill -0 "$pid" 2>/dev/null; then echo "fresh clone: smtpgate dev did not stop on SIGINT" >&2; exit 1; fi
wait "$pid" || { echo "fresh clone: smtpgate dev exited non-zero after SIGINT" >&2; cat "$tmp/err"; exit 1; }
pid=
echo "fresh clone: built, ran smtpgate dev, sent with the printed curl command, stopped cleanly"
