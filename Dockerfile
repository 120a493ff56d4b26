# syntax=docker/dockerfile:1
# The gateway's image. Wheels for the core, the first-party plugins and every dependency are built
# and installed into a virtual environment in a throwaway stage; the final stage copies that
# environment and has no compiler, no wheels and no build cache.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler only for a dependency that ships no wheel for the target platform. Debian's versions
# move with the base image, so they are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels . ./plugins/*
# Copied whole into the final stage: a COPY --from is cached by what it copies, whereas builders
# (buildah among them) may reuse a RUN that only mounts another stage after that stage changed.
RUN python -m venv --without-pip /opt/authgateway \
 && pip --python /opt/authgateway/bin/python install --no-index --find-links=/wheels \
      /wheels/*.whl

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    AUTH_GATEWAY_INSTANCE_PATH=/app/instance \
    AUTH_GATEWAY_MIGRATIONS_DIR=/app/migrations \
    PATH=/opt/authgateway/bin:$PATH
RUN groupadd --system --gid 10001 authgateway \
 && useradd --system --uid 10001 --gid authgateway --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin authgateway
WORKDIR /app
COPY --from=builder /opt/authgateway /opt/authgateway
COPY migrations ./migrations
COPY --chmod=755 scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir instance && chown authgateway:authgateway instance
# Numeric, so that a runtime can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# slim has no curl: the interpreter asks /health, and a 503 (degraded) or no answer fails.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["authgateway", "serve"]
