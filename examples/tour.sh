#!/usr/bin/env bash
# The README's tour, end to end, on a fresh data directory: starts `phoenix serve all` on
# the default ports (5002 collector, 5003 distributor), runs every command the README
# shows in the order it shows them, and prints a transcript (`$ command`, then its output).
#
#   cargo install --locked --path . && examples/tour.sh
#
# PHOENIX (default: `phoenix` on PATH) picks the binary; TOUR_HOME (default: a new temp
# directory) holds the data. Stops the servers it started when it ends.
set -u
cd "$(dirname "$0")"
PHOENIX=${PHOENIX:-phoenix}
export PHOENIX_HOME=${TOUR_HOME:-$(mktemp -d)}/data
export PHOENIX_CONFIG=/dev/null XDG_CONFIG_HOME=$PHOENIX_HOME/config
unset OPENROUTER_API_KEY PHOENIX_LLM_BASE_URL PHOENIX_ADMIN_TOKEN X402_PREMIUM_KEY
state=$(dirname "$PHOENIX_HOME")
mkdir -p "$PHOENIX_HOME"

say() { printf '\n$ %s\n' "$*"; }
run() { say "$*"; "$@"; local rc=$?; [ $rc -ne 0 ] && echo "(exit code $rc)"; return 0; }
phoenix() { "$PHOENIX" "$@"; }

"$PHOENIX" serve all >"$state/serve.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT
up=no
for _ in $(seq 100); do
  curl -sf localhost:5002/health >/dev/null && curl -sf localhost:5003/health >/dev/null && up=yes && break
  sleep 0.1
done
if [ $up != yes ]; then
  echo "phoenix serve all did not come up on ports 5002/5003:" >&2
  cat "$state/serve.log" >&2
  exit 1
fi

echo "# telemetry"
say "curl -s -X POST http://localhost:5002/ingest -H 'Content-Type: application/json' -d '{...skill_execution...}'"
curl -s -X POST http://localhost:5002/ingest -H 'Content-Type: application/json' \
  -d '{"orch_id":"orch-1","agent_path":"root","kind":"skill_execution","level":"info","tags":["skill","execution"],"payload":{"skill_id":"abc","love_score":0.95,"utility_score":0.80}}'
echo
run phoenix ingest --kind skill_execution --level info --orch-id orch-7 --agent-path code-gen/rust \
  --payload '{"response_time": 840, "love_score": 0.93}'
run phoenix ingest --file events.ndjson
say 'curl -X POST http://localhost:5002/analyze -H "Content-Type: application/json" -d '"'"'{"last_n": 500, "focus": "performance"}'"'"
curl -s -X POST http://localhost:5002/analyze -H "Content-Type: application/json" -d '{"last_n": 500, "focus": "performance"}' | head -c 300
echo
run phoenix analyze --last-n 500 --focus performance
run phoenix telemetry query --limit 3 --agent-prefix code-gen
run phoenix insights --limit 2

echo
echo "# hot updates"
say "curl -s -X POST http://localhost:5003/publish -H 'Content-Type: application/json' -d '{...prompt_tweak...}'"
curl -s -X POST http://localhost:5003/publish -H "Content-Type: application/json" \
  -d '{"update_type": "prompt_tweak", "tier_required": "free", "payload": {"default_prompt": "Updated prompt text..."}}'
echo
run phoenix publish json-patch --patch patch.json
run phoenix subscribe --orch-id orch-7 --agent-path code-gen/rust --state "$state/agent7.json" --once
run phoenix publish model-tweak --model anthropic/claude-3.5-sonnet --target-prefix code-gen
run phoenix subscribe --orch-id orch-9 --agent-path emotional-support --state "$state/agent9.json" --once
run phoenix subscribe --orch-id orch-7 --agent-path code-gen/rust --state "$state/agent7.json" --once
run phoenix publish status 2
run phoenix publish rollback 3
run phoenix subscribe --orch-id orch-7 --agent-path code-gen/rust --state "$state/agent7.json" --once
run phoenix subscribe show --state "$state/agent7.json"

echo
echo "# privacy at the edge"
run phoenix redact --session demo chat.txt
run phoenix ingest --conversations chats.jsonl
run phoenix telemetrist --source conversations --once
run phoenix export --format sft --min-score 3
