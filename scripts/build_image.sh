#!/bin/sh
# `make image`: build the gateway's image (tag $IMAGE, default authgateway:local) from the
# Dockerfile, with docker when its daemon answers, else with podman (CONTAINER_ENGINE chooses).
# With docker the base is the Dockerfile's own (python:3.11-slim-bookworm from Docker Hub); with
# podman it is the stand-in scripts/build_base_image.sh makes from Debian's packages, unless
# PYTHON_IMAGE names another.
set -eu
cd "$(dirname "$0")/.."
TAG=${IMAGE:-authgateway:local}

ENGINE=${CONTAINER_ENGINE:-}
if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        echo "build_image: neither a docker daemon nor podman is available" >&2
        exit 1
    fi
fi

set -- --tag "$TAG"
if [ "$ENGINE" = podman ]; then
    PYTHON_IMAGE=${PYTHON_IMAGE:-$(CONTAINER_ENGINE=podman scripts/build_base_image.sh)}
    # Docker's image format, since OCI's has no HEALTHCHECK; the host's network, since the
    # builder stage reaches Debian's mirror and PyPI and a bridge needs more than some hosts
    # allow.
    set -- "$@" --format docker --network host
fi
if [ -n "${PYTHON_IMAGE:-}" ]; then
    set -- "$@" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"
fi
echo "build_image: $ENGINE build $*" >&2
"$ENGINE" build "$@" .
