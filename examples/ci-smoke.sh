#!/usr/bin/env bash
# CI smoke test: build the image, start it, and pass only once Docker — that is,
# the image's own HEALTHCHECK, torchprobe — says it is healthy. Fail the job
# when it turns unhealthy, exits, or is not healthy by the deadline, and print
# why: each probe's output from .State.Health.Log, and the container's log.
#
#   examples/ci-smoke.sh                      # from the torchprobe source tree
#
# Settings, all optional, from the environment:
#   IMAGE       tag to build and run             (default torchprobe-example:smoke)
#   DEADLINE    seconds to wait for healthy      (default 300: the start period
#               of 120 s, then retries; keep it above the image's start period)
#   BUILD_ARGS  extra `docker build` arguments, e.g. "--build-arg BASE=..."
#   RUN_ARGS    extra `docker run` arguments, e.g. "--gpus all", or for a CPU
#               runner "-e DEVICE=cpu"; shorter probe timings for a quick job:
#               "--health-interval 2s --health-start-period 60s"
#   SKIP_BUILD  1: use IMAGE as it is
set -euo pipefail

IMAGE=${IMAGE:-torchprobe-example:smoke}
DEADLINE=${DEADLINE:-300}
name="torchprobe-smoke-$$"

cd "$(dirname "$0")/.."
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of arguments
    docker build -f Dockerfile.example -t "$IMAGE" ${BUILD_ARGS:-} .
fi

cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# --init: an init as PID 1 reaps whatever a killed probe leaves behind.
# shellcheck disable=SC2086  # RUN_ARGS is a list of arguments
docker run -d --init --name "$name" ${RUN_ARGS:-} "$IMAGE" >/dev/null

fail() {
    echo "ci-smoke: FAIL: $*" >&2
    echo "--- health log (last probes: exit code, then output) ---" >&2
    docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.Start}} exit {{.ExitCode}}:
{{.Output}}
{{end}}{{end}}' "$name" >&2 || true
    echo "--- container log (tail) ---" >&2
    docker logs --tail 50 "$name" >&2 || true
    exit 1
}

started=$SECONDS
last=""
while :; do
    state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$name")
    health=${state#* }
    if [[ "$state" != "$last" ]]; then
        echo "ci-smoke: $((SECONDS - started))s: container ${state% *}, health $health"
        last=$state
    fi
    case "$health" in
        healthy)
            # Docker's verdict is one probe's; ask every worker once more, the
            # way a job waits on a service without a HEALTHCHECK of its own.
            docker exec "$name" torchprobe --wait 30s --profile ready >&2 \
                || fail "healthy, but torchprobe --profile ready did not pass within 30s"
            echo "ci-smoke: OK: healthy after $((SECONDS - started))s"
            exit 0
            ;;
        unhealthy) fail "the container turned unhealthy" ;;
        none) fail "the image has no HEALTHCHECK" ;;
    esac
    [[ "${state% *}" == running ]] || fail "the container is ${state% *}, not running"
    ((SECONDS - started < DEADLINE)) || fail "not healthy within ${DEADLINE}s"
    sleep 1
done
