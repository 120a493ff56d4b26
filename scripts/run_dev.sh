#!/usr/bin/env bash
# `make run`: serve the gateway on the embedded SQLite database. When no encryption key is set,
# development keys are generated once into instance/dev.env and used from there.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin

if [ -z "${AUTH_GATEWAY_ENCRYPTION_KEY:-}" ]; then
  if [ ! -f instance/dev.env ]; then
    mkdir -p instance
    "$BIN/flask" --app authgateway keys generate > instance/dev.env 2>/dev/null
    chmod 600 instance/dev.env
    cat >&2 <<MSG
************************************************************************
  DEVELOPMENT KEYS were generated into instance/dev.env (encryption key
  and API key). Use them only on this machine; set real ones in the
  environment for anything else. Your API key:
    $(grep AUTH_GATEWAY_API_KEY instance/dev.env | cut -d= -f2-)
************************************************************************
MSG
  else
    echo "Using the development keys in instance/dev.env." >&2
  fi
  set -a
  # shellcheck disable=SC1091
  . instance/dev.env
  set +a
fi

"$BIN/authgateway" init-db
exec "$BIN/authgateway" serve
