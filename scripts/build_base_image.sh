#!/bin/sh
# A stand-in for python:3.11-slim-bookworm, made from Debian's own packages, for machines that
# reach Debian's mirror and PyPI but not Docker Hub. Debian bookworm's Python 3.11 with a venv
# first on PATH (so `python` and `pip` work as in the official image, which installs outside
# Debian's packages), the machine's CA bundle (so pip reaches the registry through whatever the
# machine trusts), and Debian's apt sources (so the Dockerfile's builder stage can apt-get).
#
# Prints the image's name (for --build-arg PYTHON_IMAGE=...) on stdout. The root filesystem is
# kept as a tarball in $AUTHGATEWAY_IMAGE_CACHE (default /var/cache/authgateway-ci), named by a
# hash of everything it is made from, so a second run imports it instead of bootstrapping.
# Needs root (debootstrap, chroot), debootstrap, and podman or docker (CONTAINER_ENGINE).
set -eu

SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
VENV=/opt/venv
ENGINE=${CONTAINER_ENGINE:-podman}
CACHE=${AUTHGATEWAY_IMAGE_CACHE:-/var/cache/authgateway-ci}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

# The mirror this machine's apt uses (deb822 "URIs:" or one-line "deb" entries), else Debian's.
apt_uri() {  # $1: a pattern the URI matches
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null \
      | sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
      | tr ' ' '\n' | grep -E "$1" | head -n 1
}
MIRROR=${DEBIAN_MIRROR:-$(apt_uri '/debian/?$')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-$(apt_uri '/debian-security/?$')}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}
ARCH=$(dpkg --print-architecture)

[ -r "$CA_BUNDLE" ] || { echo "build_base_image: no CA bundle at $CA_BUNDLE" >&2; exit 1; }
KEY=$( { cat "$0" "$CA_BUNDLE"; echo "$MIRROR $SECURITY $ARCH"; } | sha256sum | cut -c1-12)
IMAGE=localhost/authgateway-python:3.11-$SUITE-$KEY
TARBALL=$CACHE/python-3.11-$SUITE-$ARCH-$KEY.tar

if "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"
    exit 0
fi

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null \
        || { echo "build_base_image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
    ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$ROOTFS" "$TARBALL.partial"' EXIT
    echo "build_base_image: debootstrap $SUITE from $MIRROR" >&2
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >&2
    cat > "$ROOTFS/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    rm -f "$ROOTFS/etc/apt/sources.list"
    # As Debian's slim images: dpkg leaves out documentation and translations (the copyright
    # notices stay), here and in whatever a Dockerfile installs on top.
    cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/slim" <<'EXCLUDES'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EXCLUDES
    # The point release's packages plus the security fixes published since.
    chroot "$ROOTFS" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get upgrade -y -qq >/dev/null' >&2
    cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    chroot "$ROOTFS" python3 -m venv "$VENV" >&2
    # What a slim image leaves out: package lists and caches, documentation, logs.
    find "$ROOTFS/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
        -exec rm -rf {} +
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
        "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/usr/share/man/* \
        "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian/* "$ROOTFS"/var/log/*.log \
        "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
    tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
    rm -rf "$ROOTFS"
    trap - EXIT
fi

echo "build_base_image: importing $TARBALL as $IMAGE" >&2
"$ENGINE" import \
    --change "ENV PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["python3"]' \
    "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE"
