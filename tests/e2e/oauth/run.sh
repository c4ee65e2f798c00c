#!/usr/bin/env bash
# The whole chain, for a manual run: node-oidc-provider, mcp-authz, the Python MCP server,
# Envoy (the shipped deploy/envoy/envoy.yaml, ports rewritten), then the TypeScript and the Python
# SDK clients, each doing its own client-credentials OAuth flow. Prints each client's JSON report
# on stdout, one line each, prefixed "TS " and "PY ". Kills everything it started on exit.
#
# Usage: tests/e2e/oauth/run.sh [operation|granted_and_operation] [json|sse]
#
# Env: MCP_AUTHZ_BIN (default target/debug/mcp-authz), ENVOY_BIN (default .venv/bin/envoy),
#      PYTHON (default .venv/bin/python), REPO (default: the repository holding this script),
#      TS_SCOPE / PY_SCOPE (the scope each client is configured with; default
#      "mcp:connect mcp:tools:weather"), WORK (scratch dir; default a new mktemp -d),
#      CLIENTS (default "ts py"), TS_STEP_UP_WORKAROUND (see ts_client.mjs; not SDK behaviour).
# Ports: provider 19444, Envoy listener 18000 / admin 19901, mcp-authz gRPC 19191 / admin 19090 /
#        admin gRPC 19092, MCP server 18080.
set -euo pipefail

STEP_UP=${1:-operation}
FRAMING=${2:-sse}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${REPO:-$(cd "$HERE/../../.." && pwd)}
MCP_AUTHZ_BIN=${MCP_AUTHZ_BIN:-$REPO/target/debug/mcp-authz}
ENVOY_BIN=${ENVOY_BIN:-$REPO/.venv/bin/envoy}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
WORK=${WORK:-$(mktemp -d)}
TS_SCOPE=${TS_SCOPE-mcp:connect mcp:tools:weather}
PY_SCOPE=${PY_SCOPE-mcp:connect mcp:tools:weather}

AS_PORT=19444 LISTENER=18000 ENVOY_ADMIN=19901 GRPC=19191 ADMIN=19090 ADMIN_GRPC=19092 UPSTREAM=18080
ISSUER=http://127.0.0.1:$AS_PORT
RESOURCE=http://127.0.0.1:$LISTENER/mcp

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_for() { # URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    if ((SECONDS > deadline)); then echo "not ready: $1 (logs in $WORK)" >&2; exit 1; fi
    sleep 0.2
  done
}

# 1. The OpenID provider.
timeout 600 node "$HERE/provider.mjs" "$AS_PORT" >"$WORK/provider.out" 2>"$WORK/provider.err" &
PIDS+=($!)
wait_for "$ISSUER/.well-known/openid-configuration" 20

# 2. mcp-authz, trusting that issuer, for the resource behind Envoy.
cat >"$WORK/mcp-authz.yaml" <<EOF
policies:
  dir: $REPO/policies
listen:
  grpc: 127.0.0.1:$GRPC
  admin: 127.0.0.1:$ADMIN
  admin_grpc: 127.0.0.1:$ADMIN_GRPC
issuers:
  - issuer: $ISSUER
    algorithms: [RS256, ES256]
    claims: {tenant: tenant}
servers:
  - id: demo
    tenant: acme
    resource: $RESOURCE
    authorization_servers: [$ISSUER]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files, mcp:tools:admin]
    challenge_scopes: [mcp:connect]
    step_up: {scope: $STEP_UP}
    match: {hosts: ["*"]}
decision_log: {allow_sample_rate: 1.0}
EOF
"$MCP_AUTHZ_BIN" validate --config "$WORK/mcp-authz.yaml" >&2
timeout 600 "$MCP_AUTHZ_BIN" serve --config "$WORK/mcp-authz.yaml" --log-format json \
  >"$WORK/mcp-authz.out" 2>"$WORK/mcp-authz.err" &
PIDS+=($!)
wait_for "http://127.0.0.1:$ADMIN/readyz" 30   # 200 once the issuer's JWKS is loaded

# 3. The MCP server.
timeout 600 "$PYTHON" "$REPO/tests/e2e/mcp_server.py" "$UPSTREAM" $([ "$FRAMING" = json ] && echo json) \
  >"$WORK/mcp_server.out" 2>"$WORK/mcp_server.err" &
PIDS+=($!)
deadline=$((SECONDS + 30))
until (exec 3<>/dev/tcp/127.0.0.1/$UPSTREAM) 2>/dev/null; do
  ((SECONDS > deadline)) && { echo "MCP server did not start" >&2; exit 1; }
  sleep 0.2
done

# 4. Envoy, the shipped config with the ports rewritten.
sed -e "s/port_value: 10000/port_value: $LISTENER/" \
    -e "s/port_value: 9191/port_value: $GRPC/" \
    -e "s/port_value: 8080/port_value: $UPSTREAM/" \
    -e "s/port_value: 9901/port_value: $ENVOY_ADMIN/" \
    "$REPO/deploy/envoy/envoy.yaml" >"$WORK/envoy.yaml"
timeout 600 "$ENVOY_BIN" -c "$WORK/envoy.yaml" --disable-hot-restart --concurrency 1 --log-level warn \
  >"$WORK/envoy.out" 2>"$WORK/envoy.err" &
PIDS+=($!)
wait_for "http://127.0.0.1:$ENVOY_ADMIN/ready" 30

# 5. The clients. Each prints one JSON line.
for c in ${CLIENTS:-ts py}; do
  case $c in
    ts) printf 'TS '
        OAUTH_ISSUER=$ISSUER timeout 60 node "$HERE/ts_client.mjs" "$RESOURCE" ts-client ts-secret "$TS_SCOPE" 2>"$WORK/ts_client.err" ;;
    py) printf 'PY '
        OAUTH_ISSUER=$ISSUER timeout 60 "$PYTHON" "$HERE/py_client.py" "$RESOURCE" py-client py-secret "$PY_SCOPE" 2>"$WORK/py_client.err" ;;
  esac
done

echo "logs: $WORK" >&2
