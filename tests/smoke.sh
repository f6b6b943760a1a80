#!/usr/bin/env bash
# Smoke test: real gunicorn (the production config) on a free 127.0.0.1 port,
# driven with curl. The server is stopped on every exit path.
set -uo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
export RUNNER_STORE_PATH="$work/runner.sqlite3" RUNNER_LOG_FILE="$work/log/app.log"
export PROMETHEUS_MULTIPROC_DIR="$work/metrics"
export WEB_CONCURRENCY=2
PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PORT
BASE="http://127.0.0.1:$PORT"

server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null
        wait "$server" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

flask --app wsgi token seed-dev >/dev/null
gunicorn -c gunicorn.conf.py wsgi:app >"$work/gunicorn.out" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -s -o /dev/null "$BASE/v1/node-types" && break
    sleep 0.1
done

passed=0 failed=0
# check NAME EXPECTED_STATUS JQ_LIKE_PYTHON_EXPR curl-args...
# The Python expression sees the parsed body as `b` and must be true.
check() {
    local name=$1 want=$2 expr=$3
    shift 3
    local status
    status=$(curl -s -o "$work/body" -w '%{http_code}' "$@")
    if [ "$status" = "$want" ] && python - "$work/body" "$expr" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2], {"b": b}) else 1)
PY
    then
        passed=$((passed + 1)); echo "ok   $name"
    else
        failed=$((failed + 1)); echo "FAIL $name: status $status, body $(head -c 400 "$work/body")"
    fi
}

AUTH=(-H "Authorization: Bearer dev-token")
JSON=(-H "Content-Type: application/json")
TWO_NODES='{"definition":{"nodes":{"root":{"type":"manual","children":["greet"]},"greet":{"type":"log","payload":{"message":"Incoming: {{root.result.message}}"}}}},"payload":{"message":"hello"}}'

check "two-node run succeeds" 200 \
    'b["status"] == "success" and b["executionState"]["greet"]["result"]["message"] == "Incoming: hello" and b["runId"].startswith("run_") and b["totalCu"] == 1' \
    "${AUTH[@]}" "${JSON[@]}" -d "$TWO_NODES" "$BASE/v1/runs/sync"
run_id=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["runId"])' "$work/body")
check "stored run is returned" 200 "b[\"runId\"] == \"$run_id\" and b[\"status\"] == \"success\"" \
    "${AUTH[@]}" "$BASE/v1/runs/$run_id"
check "request id is echoed in errors" 401 'b["code"] == 401000 and b["requestId"] == "smoke-1"' \
    -H "X-Request-ID: smoke-1" "${JSON[@]}" -d "$TWO_NODES" "$BASE/v1/runs/sync"
check "unknown token" 401 'b["code"] == 401000' \
    -H "Authorization: Bearer nope" "${JSON[@]}" -d "$TWO_NODES" "$BASE/v1/runs/sync"
check "root must be manual" 400 'b["code"] == 400229 and "definition.nodes.root.type" in b["errors"]' \
    "${AUTH[@]}" "${JSON[@]}" -d '{"definition":{"nodes":{"root":{"type":"log"}}}}' "$BASE/v1/runs/sync"
check "unknown child is located" 400 'b["code"] == 400228 and "definition.nodes.root.children[0]" in b["errors"]' \
    "${AUTH[@]}" "${JSON[@]}" -d '{"definition":{"nodes":{"root":{"type":"manual","children":["ghost"]}}}}' "$BASE/v1/runs/sync"
check "malformed JSON" 400 'b["code"] == 400000' \
    "${AUTH[@]}" "${JSON[@]}" -d '{"definition":' "$BASE/v1/runs/sync"
check "wrong content type" 415 'b["code"] == 415000' \
    "${AUTH[@]}" -H "Content-Type: text/plain" -d "$TWO_NODES" "$BASE/v1/runs/sync"
check "unknown route" 404 'b["code"] == 404000' "${AUTH[@]}" "$BASE/v1/nothing"
check "method not allowed" 405 'b["code"] == 405000' "${AUTH[@]}" -X DELETE "$BASE/v1/runs/sync"
check "doubled slashes are no route (JSON, not a redirect)" 404 'b["code"] == 404000' \
    --path-as-is "${AUTH[@]}" "${JSON[@]}" -d "$TWO_NODES" "$BASE/v1//runs/sync"
check "gunicorn's own 414 is JSON" 414 'b["code"] == 414000' \
    "$BASE/v1/runs/$(python -c 'print("a" * 9000)')"
check "stored run in the B3OS envelope" 200 "b[\"code\"] == 0 and b[\"data\"][\"runId\"] == \"$run_id\"" \
    "${AUTH[@]}" "$BASE/b3os/v1/runs/$run_id"

python -c 'import sys; sys.stdout.write("[" * 5000 + "]" * 5000)' >"$work/deep.json"
check "5,000-deep JSON is a 400" 400 'b["code"] == 400000' \
    "${AUTH[@]}" "${JSON[@]}" --data-binary "@$work/deep.json" "$BASE/v1/runs/sync"
python -c 'import sys; sys.stdout.write("{\"x\": \"" + "a" * (2 * 1024 * 1024) + "\"}")' >"$work/big.json"
check "oversized body is a 413" 413 'b["code"] == 413000' \
    "${AUTH[@]}" "${JSON[@]}" --data-binary "@$work/big.json" "$BASE/v1/runs/sync"
check "oversized chunked body is a 413" 413 'b["code"] == 413000' \
    "${AUTH[@]}" "${JSON[@]}" -H "Transfer-Encoding: chunked" --data-binary "@$work/big.json" \
    "$BASE/v1/runs/sync"
check "validate endpoint" 200 'b == {"valid": True, "nodeCount": 2, "levels": [["root"], ["greet"]], "loops": {}, "warnings": {}}' \
    "${AUTH[@]}" "${JSON[@]}" -d "$TWO_NODES" "$BASE/v1/workflows/validate"

if ! grep -q '"message": "run finished"' "$work/log/app.log"; then
    failed=$((failed + 1)); echo "FAIL run summary line in the log file"
else
    passed=$((passed + 1)); echo "ok   run summary line in the log file"
fi

if [ "$failed" -ne 0 ]; then
    echo "--- gunicorn output ---"; tail -n 40 "$work/gunicorn.out"
fi
echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
