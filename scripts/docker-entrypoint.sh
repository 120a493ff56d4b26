#!/bin/sh
# The image's entrypoint. Before `authgateway serve`, and only then, it applies the database
# migrations when AUTH_GATEWAY_MIGRATE_ON_START=1 (docker-compose.yml's default); every other
# command (`authgateway keys generate`, `flask --app authgateway ...`) runs exactly as given.
set -eu

if [ "${1:-}" = "authgateway" ] && [ "${2:-}" = "serve" ] \
    && [ "${AUTH_GATEWAY_MIGRATE_ON_START:-0}" = "1" ]; then
    echo "docker-entrypoint: applying database migrations (AUTH_GATEWAY_MIGRATE_ON_START=1)" >&2
    flask --app authgateway db upgrade
fi
exec "$@"
