#!/usr/bin/env bash
# `make run`: serve the gateway on the embedded SQLite database. When no encryption key is set,
# development keys are generated once into instance/dev.env and used from there.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin

if [ -z "${AUTH_GATEWAY_ENCRYPTION_KEY:-}" ]; then
  if [ ! -f instance/dev.env ]; then
    mkdir -p instance
    (umask 077 && "$BIN/authgateway" keys generate > instance/dev.env 2>/dev/null)
    made="were generated into"
  else
    made="are in"
  fi
  set -a
  # shellcheck disable=SC1091
  . instance/dev.env
  set +a
  cat >&2 <<MSG
************************************************************************
  DEVELOPMENT KEYS $made instance/dev.env (encryption key and
  API key). Use them only on this machine; set real ones in the
  environment for anything else. Your API key:
    $AUTH_GATEWAY_API_KEY
************************************************************************
MSG
fi

"$BIN/authgateway" init-db
exec "$BIN/authgateway" serve
