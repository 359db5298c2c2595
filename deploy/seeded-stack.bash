# Sourced by deploy/profile and deploy/compare: a development stack of issuance, validation
# and the gateway (release binaries from BIN) in DIR, seeded with licenses through the
# gateway. The caller keeps `pids` (an array) and stops them on exit.
#   start_seeded_stack BIN DIR LICENSES
# Sets pid_issuance, pid_validation, pid_gateway, and `gateway_args` (the endpoint and
# admin API key, one word each); the seed file is DIR/seed.txt.
start_seeded_stack() {
  local bin=$1 dir=$2 licenses=$3 service
  mkdir -p "$dir"
  for service in issuance validation; do
    "$bin/license-$service" --dev --data-dir "$dir" --log-level warning >"$dir/$service.log" 2>&1 &
    pids+=($!); eval "pid_$service=$!"
  done
  "$bin/license-gateway" --dev --data-dir "$dir" --log-level warning --listen "unix:$dir/run/gateway.sock" >"$dir/gateway.log" 2>&1 &
  pids+=($!); pid_gateway=$!
  for _ in $(seq 1 100); do [ -s "$dir/secrets/admin-api-key" ] && [ -S "$dir/run/gateway.sock" ] && break; sleep 0.1; done
  gateway_args=(--endpoint "unix:$dir/run/gateway.sock" --api-key "$(cat "$dir/secrets/admin-api-key")")
  "$bin/license-bench" seed "${gateway_args[@]}" --licenses "$licenses" --out "$dir/seed.txt" 2>/dev/null >/dev/null
}
