#!/usr/bin/env bash
# A Docker engine for tests/e2e, and the local base image they build
# Dockerfile.example on (no registry can be reached from here, so it is made
# from Debian's packages). Idempotent: whatever is already there is kept, so a
# second run takes about a second.
#
#   bash .ci/docker-setup.sh        # then: docker info; docker image ls
#
# Steps, each skipped when done: install docker.io and debootstrap; start
# dockerd in the background (no iptables, no bridge: containers run with
# --network none or host) and wait until `docker info` answers; debootstrap a
# Debian bookworm with Python 3.11 and import it as $BASE_IMAGE.
set -euo pipefail

BASE_IMAGE=${TORCHPROBE_E2E_BASE:-local/bookworm-python:latest}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
SUITE=bookworm

say() { echo "docker-setup: $*"; }

if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing docker.io and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

engine_up() { docker info >/dev/null 2>&1; }

# A process that exists and is not a zombie. A dockerd killed with the job
# before can linger as a zombie where nothing reaps it; pgrep and kill -0 still
# "find" it, and dockerd then refuses to start over its stale pid file.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

live_dockerd() {
    local pid
    for pid in $(pgrep -x dockerd); do
        alive "$pid" && return 0
    done
    return 1
}

if ! engine_up; then
    # A dockerd that is starting already (another job) only needs waiting for.
    if ! live_dockerd; then
        for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
            if [[ -f "$pidfile" ]] && ! alive "$(cat "$pidfile")"; then
                rm -f "$pidfile"
            fi
        done
        say "starting dockerd (log: $DOCKERD_LOG)"
        setsid dockerd --host unix:///var/run/docker.sock --iptables=false --bridge=none \
            >"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    for _ in $(seq 120); do
        engine_up && break
        sleep 0.5
    done
    if ! engine_up; then
        say "dockerd did not answer within 60 s; the end of its log:" >&2
        tail -n 40 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
fi
say "engine $(docker version -f '{{.Server.Version}}') answers"

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE is there"
    exit 0
fi

# The Debian mirror this machine's apt already uses (deb822 or one-line format).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [[ -z "$mirror" ]]; then
    mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
if [[ -z "$mirror" ]]; then
    say "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2
    exit 1
fi

rootfs=$(mktemp -d /tmp/torchprobe-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
say "building $BASE_IMAGE: debootstrap $SUITE from $mirror (about 70 s)"
# procps: ps, which the tests run inside containers to count processes.
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,procps \
    "$SUITE" "$rootfs" "$mirror" >/tmp/torchprobe-debootstrap.log 2>&1 || {
    say "debootstrap failed; the end of its log:" >&2
    tail -n 40 /tmp/torchprobe-debootstrap.log >&2
    exit 1
}
tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
say "base image $BASE_IMAGE built"
