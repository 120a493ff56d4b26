#!/usr/bin/env bash
# `make try`: the whole flow by hand, without a Google account. Starts a real OpenID Connect
# server (panva's oidc-provider, from tests/oidc_peer) on loopback, and the gateway in front of
# it through the generic OIDC plugin, on a throwaway SQLite database with throwaway keys; then
# prints the three steps. Ctrl-C stops both; nothing is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
PORT=${TRY_PORT:-8000}
EMAIL=${TRY_EMAIL:-you@example.com}
PROVIDER=demo
GATEWAY="http://127.0.0.1:$PORT"

fail() { echo "make try: $*" >&2; exit 1; }

command -v node >/dev/null || fail "needs Node.js 20 or later for the OpenID Connect server; node is not on PATH."
command -v curl >/dev/null || echo "make try: the steps below use curl; install it to follow them." >&2
[ -x "$BIN/authgateway" ] || fail "$BIN/authgateway is missing: run \`make install\` (or set VENV)."
"$BIN/python" -c "import authgateway_oidc" 2>/dev/null \
  || fail "the generic OIDC plugin is not installed: run \`make install\`."
"$BIN/python" - "$PORT" <<'PY' || fail "port $PORT is taken: run \`TRY_PORT=8001 make try\`."
import socket, sys
with socket.socket() as s:
    s.bind(("127.0.0.1", int(sys.argv[1])))
PY
if [ ! -f tests/oidc_peer/node_modules/oidc-provider/package.json ]; then
  echo "Installing the OpenID Connect server (npm ci in tests/oidc_peer)..." >&2
  (cd tests/oidc_peer && npm ci --no-audit --no-fund --loglevel=error)
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

random() { "$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))'; }
client_secret=$(random)
api_key=$(random)

# The server picks a free port and prints one line naming its issuer when it is ready.
: >"$work/server.out"
OIDC_PEER_CONFIG=$(cat <<JSON
{"port": 0, "clients": [{"client_id": "authgateway-try", "client_secret": "$client_secret",
  "redirect_uris": ["$GATEWAY/auth/callback/$PROVIDER"],
  "token_endpoint_auth_method": "client_secret_basic"}]}
JSON
) node tests/oidc_peer/server.mjs >"$work/server.out" 2>"$work/server.log" &
pids+=($!)
issuer=
for _ in $(seq 200); do
  issuer=$(sed -n 's/.*"issuer": *"\([^"]*\)".*/\1/p' "$work/server.out")
  [ -n "$issuer" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.1
done
[ -n "$issuer" ] || { cat "$work/server.log" >&2; fail "the OpenID Connect server did not start."; }

# The gateway, configured for it exactly as an operator would configure any OIDC provider,
# and by nothing else from this shell (say, a real AUTH_GATEWAY_DATABASE_URL).
for name in $(compgen -e | grep '^AUTH_GATEWAY_' || true); do unset "$name"; done
export AUTH_GATEWAY_ENCRYPTION_KEY
AUTH_GATEWAY_ENCRYPTION_KEY=$("$BIN/python" -c \
  'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
export AUTH_GATEWAY_API_KEY=$api_key
export DATABASE_URL="sqlite:///$work/gateway.sqlite"
export HOST=127.0.0.1 PORT
export AUTH_GATEWAY_OIDC_PROVIDERS=$PROVIDER
export DEMO_ISSUER=$issuer
export DEMO_DISPLAY_NAME="Demo OpenID server"
export DEMO_CLIENT_ID=authgateway-try
export DEMO_CLIENT_SECRET=$client_secret
export DEMO_REDIRECT_URI="$GATEWAY/auth/callback/$PROVIDER"
# This server issues refresh tokens for offline_access, which it grants on prompt=consent.
export DEMO_SCOPES="openid email offline_access"
export DEMO_EXTRA_AUTHORIZE_PARAMS="prompt=consent"
"$BIN/authgateway" init-db >"$work/init-db.log" 2>&1 \
  || { cat "$work/init-db.log" >&2; fail "the database could not be created."; }
"$BIN/authgateway" serve >"$work/gateway.log" 2>&1 &
pids+=($!)
"$BIN/python" - "$GATEWAY/health" "${pids[1]}" <<'PY' \
  || { cat "$work/gateway.log" >&2; fail "the gateway did not start."; }
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
for _ in range(200):
    try:
        urllib.request.urlopen(url, timeout=1)
        sys.exit(0)
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)  # the gateway died: its log says why
    time.sleep(0.1)
sys.exit(1)
PY

cat <<STEPS

  The gateway is at $GATEWAY, in front of a real OpenID Connect server at $issuer
  (provider "$PROVIDER"). Both stop with Ctrl-C; nothing is kept.

  1. Start a connection for a user, as an MCP server would:

     curl -s -X POST $GATEWAY/auth/init -H 'X-API-Key: $api_key' \\
       -H 'Content-Type: application/json' \\
       -d '{"provider": "$PROVIDER", "user_email": "$EMAIL"}'

  2. Open the "auth_url" it answers in a browser. Sign in as $EMAIL (the same email;
     any password), press Continue, and the gateway shows "Demo OpenID server is connected".

  3. Get that user's access token (refreshed by the gateway whenever it needs to be):

     curl -s -X POST $GATEWAY/auth/token -H 'X-API-Key: $api_key' \\
       -H 'Content-Type: application/json' \\
       -d '{"provider": "$PROVIDER", "user_email": "$EMAIL"}'

  More: GET /auth/providers/$EMAIL, DELETE /auth/revoke, GET /openapi.json.
  The gateway's log is in $work/gateway.log.

STEPS
wait "${pids[1]}"
