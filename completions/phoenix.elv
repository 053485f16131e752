
use builtin;
use str;

set edit:completion:arg-completer[phoenix] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'phoenix'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'phoenix'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run Phoenix''s servers (the collector, or everything at once)'
            cand ingest 'Send telemetry events (flags or NDJSON) or conversations (JSONL, redacted here) to the collector'
            cand analyze 'Ask the collector for an insight over the latest telemetry'
            cand insights 'List the insights the collector has stored'
            cand publish 'Publish hot updates to subscribed agents, and follow their delivery'
            cand subscribe 'Run the agent-side learning pipeline: apply hot updates to a local state file'
            cand redact 'De-identify text or chat messages with session pseudonyms, or reveal them from the vault'
            cand telemetrist 'Edge Telemetrist: pick up completed conversations, redact them here, spool and send them'
            cand export 'Write fine-tuning datasets (TRL or OpenAI JSONL, SFT or DPO pairs) from stored conversations'
            cand propose 'Ask N concurrent LLM workers for improvement proposals (the hive), rank and publish them'
            cand telemetry 'Read stored telemetry'
            cand config 'Inspect the effective configuration'
            cand agents 'Issue agent credentials: the per-ORCH tokens subscribers and heartbeats present'
            cand completions 'Generate shell completions'
            cand man 'Generate man pages'
            cand spawn-agent 'Create an agent repository from Phoenix''s template, with LLM-generated code'
            cand evolve-playbook 'Evolve an agent''s playbook through a branch, a pull request, CI and approval'
            cand bench 'Measure Phoenix''s throughput and latency on this machine'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;serve'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand collector 'Run the Vital Pulse telemetry collector'
            cand distributor 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)'
            cand all 'Run every service (collector and distributor) in one process on the embedded SQLite default'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;serve;collector'= {
            cand --bind 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]'
            cand --otlp-bind 'Also serve OTLP/HTTP (POST /v1/traces, /v1/logs, and /health) on this address, e.g. the standard 127.0.0.1:4318; OTLP is always on --bind too [default: $PHOENIX_OTLP_BIND or off]'
            cand --db 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]'
            cand --database-url 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]'
            cand --nats-url 'NATS server with JetStream (nats://HOST:4222): ingest is acknowledged once in its stream, and the collectors sharing --database-url drain it into the database (serve all: the distributor rings the others through it too) [default: $PHOENIX_NATS_URL or [cluster] nats_url]'
            cand --retention-days 'Delete telemetry older than this many days [default: keep everything]'
            cand --tls-cert 'Serve HTTPS with this PEM certificate chain (needs --tls-key)'
            cand --tls-key 'Private key (PEM) for --tls-cert'
            cand --shutdown-timeout 'After SIGTERM/SIGINT, how long in-flight requests may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]'
            cand --distributor-url 'serve collector: the distributor whose updates the dashboard shows, read over its HTTP API with the admin token (serve all reads its own) [default: $PULSE_DISTRIBUTOR_URL or the local one]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --insecure-no-auth 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)'
            cand --no-dashboard 'Do not serve the web dashboard at / (and /ui/...)'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;serve;distributor'= {
            cand --bind 'Address to listen on [default: $PULSE_DISTRIBUTOR_BIND or 127.0.0.1:5003]'
            cand --db 'SQLite file of the update log [default: $PHOENIX_DISTRIBUTOR_DB_PATH or <data dir>/distributor.db]'
            cand --nats-url 'NATS server the distributors sharing --database-url ring each other through after each commit (nats://HOST:4222) [default: $PHOENIX_NATS_URL or [cluster] nats_url]'
            cand --database-url 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]'
            cand --tls-cert 'Serve HTTPS and WSS with this PEM certificate chain (needs --tls-key)'
            cand --tls-key 'Private key (PEM) for --tls-cert'
            cand --shutdown-timeout 'After SIGTERM/SIGINT, how long in-flight requests and WebSocket closes may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --insecure-no-auth 'Allow a non-loopback address without an admin token (anyone who can connect may publish)'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;serve;all'= {
            cand --bind 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]'
            cand --otlp-bind 'Also serve OTLP/HTTP (POST /v1/traces, /v1/logs, and /health) on this address, e.g. the standard 127.0.0.1:4318; OTLP is always on --bind too [default: $PHOENIX_OTLP_BIND or off]'
            cand --db 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]'
            cand --database-url 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]'
            cand --nats-url 'NATS server with JetStream (nats://HOST:4222): ingest is acknowledged once in its stream, and the collectors sharing --database-url drain it into the database (serve all: the distributor rings the others through it too) [default: $PHOENIX_NATS_URL or [cluster] nats_url]'
            cand --retention-days 'Delete telemetry older than this many days [default: keep everything]'
            cand --tls-cert 'Serve HTTPS with this PEM certificate chain (needs --tls-key)'
            cand --tls-key 'Private key (PEM) for --tls-cert'
            cand --shutdown-timeout 'After SIGTERM/SIGINT, how long in-flight requests may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]'
            cand --distributor-url 'serve collector: the distributor whose updates the dashboard shows, read over its HTTP API with the admin token (serve all reads its own) [default: $PULSE_DISTRIBUTOR_URL or the local one]'
            cand --distributor-bind 'Address the distributor listens on [default: $PULSE_DISTRIBUTOR_BIND or 127.0.0.1:5003]'
            cand --distributor-db 'SQLite file of the distributor''s update log [default: $PHOENIX_DISTRIBUTOR_DB_PATH or <data dir>/distributor.db]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --insecure-no-auth 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)'
            cand --no-dashboard 'Do not serve the web dashboard at / (and /ui/...)'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;serve;help'= {
            cand collector 'Run the Vital Pulse telemetry collector'
            cand distributor 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)'
            cand all 'Run every service (collector and distributor) in one process on the embedded SQLite default'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;serve;help;collector'= {
        }
        &'phoenix;serve;help;distributor'= {
        }
        &'phoenix;serve;help;all'= {
        }
        &'phoenix;serve;help;help'= {
        }
        &'phoenix;ingest'= {
            cand --kind 'Event kind (one event from flags), e.g. orch_heartbeat, skill_execution'
            cand --level 'Level: trace, debug, info, notice, warn, error, critical, fatal'
            cand --tag 'Tag (repeatable)'
            cand --payload 'Payload as a JSON document'
            cand --orch-id 'Raw ORCH id (the collector stores only its keyed hash)'
            cand --agent-path 'Agent path such as code-gen/rust'
            cand --ts 'Event time in Unix seconds [default: the collector''s clock]'
            cand -f 'NDJSON file of envelopes, one per line; `-` reads stdin'
            cand --file 'NDJSON file of envelopes, one per line; `-` reads stdin'
            cand --conversations 'JSONL file of conversations, one per line; `-` reads stdin. Each is redacted on this machine (pseudonyms in the local vault), spooled, and sent to POST /ingest/conversations'
            cand --session 'Pseudonym session for every conversation [default: each conversation''s own id]'
            cand --batch-size 'Records (or conversations) per request'
            cand --retries 'Retries per request on 429, 5xx or an unreachable collector'
            cand --url 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]'
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;analyze'= {
            cand --last-n 'How many of the newest records to analyse (free tier: at most 200, premium: 5000)'
            cand --focus 'What the summary should focus on: performance, emotional_resonance, errors, ...'
            cand --premium-key 'Premium key sent as the X402 header [default: $X402_PREMIUM_KEY]'
            cand --kind 'Only records of this kind'
            cand --level 'Only records of this level'
            cand --agent-prefix 'Only agents at or below this path (segment-wise: code-gen matches code-gen/rust)'
            cand --orch 'Only this ORCH (raw id or orch_ hash)'
            cand --since 'Only records at or after: Unix seconds, RFC 3339, or an age like 2h'
            cand --until 'Only records before: Unix seconds, RFC 3339, or an age like 30m'
            cand --url 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]'
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;insights'= {
            cand --limit 'How many insights to show, newest first'
            cand --url 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]'
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --full 'Show every bullet and the statistics of each insight instead of one line each'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand prompt-tweak 'Publish a new default prompt (prompt_tweak)'
            cand model-tweak 'Publish a new default model (model_tweak)'
            cand json-patch 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)'
            cand yaml-graft 'Publish YAML to deep-merge into the agents'' config (yaml_graft)'
            cand notice 'Publish a message the agents log (notice)'
            cand rollback 'Undo an earlier update where it was applied, keeping later updates (rollback)'
            cand list 'List the newest updates with their delivery and ack counts'
            cand status 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors'
            cand widen 'Raise an update''s rollout percentage; newly admitted agents receive it at once'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;publish;prompt-tweak'= {
            cand --prompt 'The new default prompt'
            cand --target-orch 'Only this ORCH (its raw id or its orch_ hash)'
            cand --target-prefix 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)'
            cand --tier 'Tier a subscriber needs to receive the update [default: free]'
            cand --rollout-percent 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`'
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --no-cascade 'Only the exact --target-prefix path, not the agents below it'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;model-tweak'= {
            cand --model 'The new default model, e.g. anthropic/claude-3-haiku'
            cand --target-orch 'Only this ORCH (its raw id or its orch_ hash)'
            cand --target-prefix 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)'
            cand --tier 'Tier a subscriber needs to receive the update [default: free]'
            cand --rollout-percent 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`'
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --no-cascade 'Only the exact --target-prefix path, not the agents below it'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;json-patch'= {
            cand --patch 'JSON file with the RFC 6902 operations (an array, or {"patch": [...]}); `-` reads stdin'
            cand --target-orch 'Only this ORCH (its raw id or its orch_ hash)'
            cand --target-prefix 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)'
            cand --tier 'Tier a subscriber needs to receive the update [default: free]'
            cand --rollout-percent 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`'
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --no-cascade 'Only the exact --target-prefix path, not the agents below it'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;yaml-graft'= {
            cand --file 'YAML file holding a mapping to merge into the agents'' config; `-` reads stdin'
            cand --target-orch 'Only this ORCH (its raw id or its orch_ hash)'
            cand --target-prefix 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)'
            cand --tier 'Tier a subscriber needs to receive the update [default: free]'
            cand --rollout-percent 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`'
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --no-cascade 'Only the exact --target-prefix path, not the agents below it'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;notice'= {
            cand --message 'The message agents log'
            cand --target-orch 'Only this ORCH (its raw id or its orch_ hash)'
            cand --target-prefix 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)'
            cand --tier 'Tier a subscriber needs to receive the update [default: free]'
            cand --rollout-percent 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`'
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --no-cascade 'Only the exact --target-prefix path, not the agents below it'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;rollback'= {
            cand --target-orch 'Only this ORCH (its raw id or its orch_ hash)'
            cand --target-prefix 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)'
            cand --tier 'Tier a subscriber needs to receive the update [default: free]'
            cand --rollout-percent 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`'
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --no-cascade 'Only the exact --target-prefix path, not the agents below it'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;list'= {
            cand --limit 'How many updates to show, newest first'
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;status'= {
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;widen'= {
            cand --rollout-percent 'New rollout percentage, above the current one (100 reaches every targeted ORCH); `--percent` is an older name'
            cand --percent 'New rollout percentage, above the current one (100 reaches every targeted ORCH); `--percent` is an older name'
            cand --url 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;publish;help'= {
            cand prompt-tweak 'Publish a new default prompt (prompt_tweak)'
            cand model-tweak 'Publish a new default model (model_tweak)'
            cand json-patch 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)'
            cand yaml-graft 'Publish YAML to deep-merge into the agents'' config (yaml_graft)'
            cand notice 'Publish a message the agents log (notice)'
            cand rollback 'Undo an earlier update where it was applied, keeping later updates (rollback)'
            cand list 'List the newest updates with their delivery and ack counts'
            cand status 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors'
            cand widen 'Raise an update''s rollout percentage; newly admitted agents receive it at once'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;publish;help;prompt-tweak'= {
        }
        &'phoenix;publish;help;model-tweak'= {
        }
        &'phoenix;publish;help;json-patch'= {
        }
        &'phoenix;publish;help;yaml-graft'= {
        }
        &'phoenix;publish;help;notice'= {
        }
        &'phoenix;publish;help;rollback'= {
        }
        &'phoenix;publish;help;list'= {
        }
        &'phoenix;publish;help;status'= {
        }
        &'phoenix;publish;help;widen'= {
        }
        &'phoenix;publish;help;help'= {
        }
        &'phoenix;subscribe'= {
            cand --orch-id 'Raw ORCH id (targeting matches it or its orch_ hash)'
            cand --agent-path 'Agent path such as code-gen/rust (targeting prefixes match whole segments)'
            cand --state 'State file [default: <data dir>/learning/<orch id>.json]'
            cand --exec 'Shell command run after each applied update, with the new state JSON on stdin'
            cand --exec-timeout 'Kill an --exec command still running after this long'
            cand --url 'Distributor WebSocket URL [default: $PULSE_DISTRIBUTOR_URL or ws://127.0.0.1:5003/subscribe]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --premium-key 'Key that unlocks premium-tier updates, sent in hello [default: $X402_PREMIUM_KEY]'
            cand --token 'This ORCH''s agent token, sent in hello and as the heartbeats'' bearer (issued by `phoenix agents token ORCH_ID`; required by a distributor off loopback) [default: $PHOENIX_AGENT_TOKEN]'
            cand --telemetrist-url 'Collector that receives heartbeats [default: $TELEMETRIST_URL or http://127.0.0.1:5002]'
            cand --heartbeat-interval 'Time between heartbeats, e.g. 30s or 5m [default: $ORCH_SLAVE_SYNC_INTERVAL seconds, 300]'
            cand --template-version 'Agent template version reported in heartbeats'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --no-heartbeat 'Send no heartbeats to the collector'
            cand --master-mode 'Report master mode in heartbeats'
            cand --once 'Apply the pending updates, then exit (no heartbeats); exit code 3 if the distributor is unreachable'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand show 'Print the overrides, config, last update, last error and history of a state file'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;subscribe;show'= {
            cand --state 'State file to read'
            cand --orch-id 'Read the default state file of this ORCH id'
            cand --limit 'Most history entries listed, newest first'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --config-json 'Print the config as pretty JSON instead of YAML'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;subscribe;help'= {
            cand show 'Print the overrides, config, last update, last error and history of a state file'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;subscribe;help;show'= {
        }
        &'phoenix;subscribe;help;help'= {
        }
        &'phoenix;redact'= {
            cand --session 'Session whose pseudonyms to reuse [default: a new random session, printed in the summary]'
            cand --format 'What the input holds'
            cand --vault 'Vault file [default: $PHOENIX_VAULT_PATH or <home>/vault.db]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --reveal 'Map de-identified input back to the originals with the vault (needs --session)'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;telemetrist'= {
            cand --source 'Directory of completed conversations [default: $PHOENIX_TELEMETRIST_SOURCE]'
            cand --interval 'Seconds between two cycles [default: $PHOENIX_TELEMETRIST_INTERVAL or 300]'
            cand --session 'Pseudonym session for every conversation and OTLP record [default: each conversation''s own id; OTLP: see below]'
            cand --batch-size 'Conversations per request'
            cand --retries 'Retries per request on 429, 5xx or an unreachable collector'
            cand --otlp-listen 'Serve OTLP/HTTP (POST /v1/traces, /v1/logs) on this address, e.g. 127.0.0.1:4318: spans and logs are redacted, spooled and forwarded to the collector'
            cand --otlp-spool-limit-mb 'MiB of OTLP batches not yet sent past which new OTLP requests get 503'
            cand --url 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]'
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --once 'Run one cycle and exit (for cron and tests)'
            cand --quarantine 'List the quarantined conversations and OTLP batches and exit'
            cand --requeue-quarantined 'Move the quarantined conversations and OTLP batches back to the spool and exit; the next run sends them'
            cand --insecure-no-auth 'Serve --otlp-listen on a non-loopback address, where anyone who reaches it can send through this edge''s collector credentials'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;export'= {
            cand --format 'Dataset format'
            cand --since 'Only conversations completed at or after this time: RFC 3339, Unix seconds, or an age such as 12h or 7d'
            cand --min-score 'Only conversations with a score of at least S (unscored ones are left out)'
            cand -o 'Write the JSONL to FILE (a temporary file renamed into place when complete) instead of stdout'
            cand --out 'Write the JSONL to FILE (a temporary file renamed into place when complete) instead of stdout'
            cand --db 'Collector database [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]'
            cand --database-url 'The collector''s PostgreSQL database (postgres://USER:PASSWORD@HOST:PORT/DB) [default: $PHOENIX_DATABASE_URL or [store] url]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;propose'= {
            cand -n 'Number of workers, each asking the LLM for one proposal'
            cand --n 'Number of workers, each asking the LLM for one proposal'
            cand --concurrency 'Most workers asking the LLM at the same time [default: N, at most 8]'
            cand --timeout 'Deadline of one attempt of one worker (also of the ranking)'
            cand --retries 'Extra attempts for a worker that errors, times out, panics or answers garbage'
            cand --model 'LLM model the workers and the ranking use [default: $PHOENIX_LLM_MODEL]'
            cand --collector-url 'Collector to read the insight from [default: $TELEMETRIST_URL or http://127.0.0.1:5002]'
            cand --publish-best 'Publish the best proposal carrying this update type through the distributor (implies --rank unless --pick)'
            cand --pick 'Publish this worker''s proposal instead of the best-ranked one'
            cand --distributor-url 'Distributor to publish to [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]'
            cand --admin-token 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]'
            cand --target-orch 'Only this ORCH (its raw id or its orch_ hash)'
            cand --target-prefix 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)'
            cand --tier 'Tier a subscriber needs to receive the update [default: free]'
            cand --rollout-percent 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --context-from-insights 'Ground the seed in the collector''s latest insight (GET /insights)'
            cand --rank 'Ask the LLM for a ranked synthesis of the distinct proposals, with reasons'
            cand -y 'Publish without asking for confirmation (required when stdin is not a terminal)'
            cand --yes 'Publish without asking for confirmation (required when stdin is not a terminal)'
            cand --no-cascade 'Only the exact --target-prefix path, not the agents below it'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;telemetry'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand query 'Show stored records, newest first'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;telemetry;query'= {
            cand --kind 'Only this kind'
            cand --level 'Only this level'
            cand --agent-prefix 'Only agents at or below this path'
            cand --orch 'Only this ORCH (raw id or orch_ hash)'
            cand --since 'At or after: Unix seconds, RFC 3339, or an age like 2h'
            cand --until 'Before: Unix seconds, RFC 3339, or an age like 30m'
            cand --limit 'Most records to show'
            cand --cursor 'Continue after a previous page (its next_cursor)'
            cand --url 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]'
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]'
            cand --ca-cert 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]'
            cand --timeout 'Give up on one request after this long'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;telemetry;help'= {
            cand query 'Show stored records, newest first'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;telemetry;help;query'= {
        }
        &'phoenix;telemetry;help;help'= {
        }
        &'phoenix;config'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand show 'Print every setting, its value (secrets masked) and its source'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;config;show'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;config;help'= {
            cand show 'Print every setting, its value (secrets masked) and its source'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;config;help;show'= {
        }
        &'phoenix;config;help;help'= {
        }
        &'phoenix;agents'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand token 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;agents;token'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;agents;help'= {
            cand token 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;agents;help;token'= {
        }
        &'phoenix;agents;help;help'= {
        }
        &'phoenix;completions'= {
            cand --out-dir 'Write the completions of every supported shell into this directory instead'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;man'= {
            cand --out-dir 'Write phoenix.1 and one page per subcommand into this directory instead of printing phoenix.1'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;spawn-agent'= {
            cand -d 'What the agent does; the LLM writes its code from this'
            cand --description 'What the agent does; the LLM writes its code from this'
            cand --tier 'free = public repository; paid and enterprise = private'
            cand --max-repairs 'Corrections the LLM may make after compiler or test errors'
            cand --forge 'Where agent repositories live [default: $PHOENIX_FORGE or local]'
            cand --org 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]'
            cand --api-url 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --no-llm 'Scaffold a documented placeholder instead of asking the LLM (marked in agent.json)'
            cand --force 'Replace the main branch of an existing repository of that name'
            cand --pr 'Push the scaffold to a branch and open a pull request instead of pushing to main'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;evolve-playbook'= {
            cand --repo 'Agent repository'
            cand --note 'What changes and why; appended to the playbook''s `updates`'
            cand --metric 'A telemetry metric to record in the playbook (repeatable)'
            cand --collector-url 'Collector for --metrics-from-collector [default: $TELEMETRIST_URL]'
            cand --timeout 'Give up waiting for CI, approval and the merge after this long'
            cand --poll 'First poll interval while waiting; doubles up to 1 minute'
            cand --forge 'Where agent repositories live [default: $PHOENIX_FORGE or local]'
            cand --org 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]'
            cand --api-url 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --metrics-from-collector 'Also record the agent''s figures from the collector''s analysis (records, error rate, mean and p95 of numeric fields)'
            cand --no-wait 'Open (or find) the pull request and return without waiting for CI or approval'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand approve 'Approve a pull request''s current head commit (local forge)'
            cand status 'Show a pull request: state, CI of its head, approvals'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;evolve-playbook;approve'= {
            cand --repo 'Agent repository'
            cand --by 'Who approves (recorded with the approval)'
            cand --forge 'Where agent repositories live [default: $PHOENIX_FORGE or local]'
            cand --org 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]'
            cand --api-url 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;evolve-playbook;status'= {
            cand --repo 'Agent repository'
            cand --by 'Who approves (recorded with the approval)'
            cand --forge 'Where agent repositories live [default: $PHOENIX_FORGE or local]'
            cand --org 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]'
            cand --api-url 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;evolve-playbook;help'= {
            cand approve 'Approve a pull request''s current head commit (local forge)'
            cand status 'Show a pull request: state, CI of its head, approvals'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;evolve-playbook;help;approve'= {
        }
        &'phoenix;evolve-playbook;help;status'= {
        }
        &'phoenix;evolve-playbook;help;help'= {
        }
        &'phoenix;bench'= {
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand ingest 'Ingest throughput against this machine''s HTTP and storage ceilings, and /analyze latency'
            cand query 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event'
            cand dashboard 'Web dashboard: every page''s latency over a store filled with millions of events, and the CPU an open live page costs'
            cand fanout 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber'
            cand pii 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s'
            cand otlp 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector'
            cand abuse 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;bench;ingest'= {
            cand --duration 'Measured time of each load scenario'
            cand --warmup 'Unmeasured load before each measurement'
            cand --connections 'Keep-alive connections for GET /health and single-event POST /ingest'
            cand --batch-connections 'Keep-alive connections for batch POST /ingest'
            cand --batch-size 'Records per NDJSON batch request'
            cand --storage-rows 'Rows the raw storage ceiling writes (SQLite: in one transaction; PostgreSQL: by COPY, a batch per transaction)'
            cand --analyze-runs 'Timed POST /analyze calls over 5000 records'
            cand --rounds 'Repeat the load and storage scenarios this many times and report medians'
            cand --database-url 'Run on this PostgreSQL server instead of SQLite, in a scratch database made and dropped by the run'
            cand --nats-url 'Ingest through this NATS JetStream into --database-url (the collector cluster''s path), against raw JetStream publish and raw COPY ceilings; scratch stream deleted by the run'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;bench;query'= {
            cand --events 'Events the scratch store is filled with before the queries'
            cand --requests 'Timed requests per query, one at a time on one keep-alive connection'
            cand --query-budget 'A query stops before --requests once its timed requests have taken this long'
            cand --database-url 'Run on this PostgreSQL server instead of SQLite, in a scratch database made (and dropped) by the run'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --keep 'Leave the filled scratch store behind and say where it is'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;bench;dashboard'= {
            cand --events 'Events the scratch store is filled with before the pages are read'
            cand --requests 'Timed GETs per page (after 3 untimed ones) on one keep-alive connection, and live-stream connections timed to their first event'
            cand --streams 'Live Fleet pages (GET /ui/stream?page=fleet) open at once while their CPU is measured'
            cand --stream-seconds 'Seconds of process CPU measured without streams, then as long with --streams open'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --keep 'Leave the filled scratch store behind and say where it is'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;bench;fanout'= {
            cand --subscribers 'Subscribers connected at once (each needs an open file here and one in the distributor)'
            cand --publishes 'Updates published one at a time, each acked by every subscriber before the next'
            cand --connect-parallelism 'WebSocket handshakes in flight at once while connecting'
            cand --settle 'Idle time after the last handshake before the distributor''s memory is sampled'
            cand --nodes 'Distributor processes sharing one update log; subscribers are spread over them and updates published on the first (needs --database-url)'
            cand --database-url 'Keep the update log on this PostgreSQL server, in a scratch database made and dropped by the run'
            cand --nats-url 'Ring the nodes'' NATS doorbell on this server after each publish (without it they poll the log)'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;bench;pii'= {
            cand --seed 'Seed of the generated corpus (the same seed gives the same corpus)'
            cand --conversations 'Conversations in the corpus (2–5 messages each)'
            cand --min-time 'Keep redacting the corpus for at least this long to measure throughput'
            cand --dump-corpus 'Also write the corpus with its labels as JSON lines to this file'
            cand --session-mb 'Also redact texts of these sizes (MB) in one session each, for throughput on long input (`--session-mb ''''` skips it)'
            cand --locale-conversations 'Conversations of the multi-locale corpus (en_US, en_GB, de_DE, fr_FR, es_ES), scored on its tuning and its held-out values (0 skips it)'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --examples 'Print examples of misses and false positives'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;bench;otlp'= {
            cand --duration 'Measured time of each scenario'
            cand --warmup 'Unmeasured load before each measurement'
            cand --connections 'Keep-alive connections sending POST /v1/traces'
            cand --spans-per-request 'Spans per OTLP request (GenAI chat, tool and embedding spans; a second scenario adds message content)'
            cand --batch-connections 'Keep-alive connections of the NDJSON batch POST /ingest it is compared with'
            cand --batch-size 'Records per NDJSON batch request'
            cand --health-connections 'Keep-alive connections of GET /health'
            cand --storage-rows 'Rows of the OTLP scenario the raw SQLite storage ceiling inserts in one transaction'
            cand --rounds 'Repeat the scenarios and the ceiling this many times and report medians'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;bench;abuse'= {
            cand --scenario 'Run only this scenario (repeat for several) [default: all of them]'
            cand --slow-clients 'Slow clients connected when SIGTERM is sent (shutdown)'
            cand --shutdown-timeout 'The server''s --shutdown-timeout, the deadline its exit is judged against (shutdown)'
            cand --slowloris 'Connections trickling headers (slowloris; each needs an open file here and in the collector)'
            cand --slowloris-duration 'How long GET /health is timed under the slowloris (past the 10 s header timeout shows the cuts)'
            cand --pings 'Pings the flooding subscriber tries to send (ping-flood)'
            cand --bombs 'Gzip bombs sent at once (gzip-bombs)'
            cand --bomb-decoded-mib 'What each bomb inflates to, in MiB (gzip-bombs)'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --json 'Print machine-readable JSON on stdout instead of tables'
            cand -v 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand --verbose 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
            cand -q 'Log only errors'
            cand --quiet 'Log only errors'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'phoenix;bench;help'= {
            cand ingest 'Ingest throughput against this machine''s HTTP and storage ceilings, and /analyze latency'
            cand query 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event'
            cand dashboard 'Web dashboard: every page''s latency over a store filled with millions of events, and the CPU an open live page costs'
            cand fanout 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber'
            cand pii 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s'
            cand otlp 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector'
            cand abuse 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;bench;help;ingest'= {
        }
        &'phoenix;bench;help;query'= {
        }
        &'phoenix;bench;help;dashboard'= {
        }
        &'phoenix;bench;help;fanout'= {
        }
        &'phoenix;bench;help;pii'= {
        }
        &'phoenix;bench;help;otlp'= {
        }
        &'phoenix;bench;help;abuse'= {
        }
        &'phoenix;bench;help;help'= {
        }
        &'phoenix;help'= {
            cand serve 'Run Phoenix''s servers (the collector, or everything at once)'
            cand ingest 'Send telemetry events (flags or NDJSON) or conversations (JSONL, redacted here) to the collector'
            cand analyze 'Ask the collector for an insight over the latest telemetry'
            cand insights 'List the insights the collector has stored'
            cand publish 'Publish hot updates to subscribed agents, and follow their delivery'
            cand subscribe 'Run the agent-side learning pipeline: apply hot updates to a local state file'
            cand redact 'De-identify text or chat messages with session pseudonyms, or reveal them from the vault'
            cand telemetrist 'Edge Telemetrist: pick up completed conversations, redact them here, spool and send them'
            cand export 'Write fine-tuning datasets (TRL or OpenAI JSONL, SFT or DPO pairs) from stored conversations'
            cand propose 'Ask N concurrent LLM workers for improvement proposals (the hive), rank and publish them'
            cand telemetry 'Read stored telemetry'
            cand config 'Inspect the effective configuration'
            cand agents 'Issue agent credentials: the per-ORCH tokens subscribers and heartbeats present'
            cand completions 'Generate shell completions'
            cand man 'Generate man pages'
            cand spawn-agent 'Create an agent repository from Phoenix''s template, with LLM-generated code'
            cand evolve-playbook 'Evolve an agent''s playbook through a branch, a pull request, CI and approval'
            cand bench 'Measure Phoenix''s throughput and latency on this machine'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;help;serve'= {
            cand collector 'Run the Vital Pulse telemetry collector'
            cand distributor 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)'
            cand all 'Run every service (collector and distributor) in one process on the embedded SQLite default'
        }
        &'phoenix;help;serve;collector'= {
        }
        &'phoenix;help;serve;distributor'= {
        }
        &'phoenix;help;serve;all'= {
        }
        &'phoenix;help;ingest'= {
        }
        &'phoenix;help;analyze'= {
        }
        &'phoenix;help;insights'= {
        }
        &'phoenix;help;publish'= {
            cand prompt-tweak 'Publish a new default prompt (prompt_tweak)'
            cand model-tweak 'Publish a new default model (model_tweak)'
            cand json-patch 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)'
            cand yaml-graft 'Publish YAML to deep-merge into the agents'' config (yaml_graft)'
            cand notice 'Publish a message the agents log (notice)'
            cand rollback 'Undo an earlier update where it was applied, keeping later updates (rollback)'
            cand list 'List the newest updates with their delivery and ack counts'
            cand status 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors'
            cand widen 'Raise an update''s rollout percentage; newly admitted agents receive it at once'
        }
        &'phoenix;help;publish;prompt-tweak'= {
        }
        &'phoenix;help;publish;model-tweak'= {
        }
        &'phoenix;help;publish;json-patch'= {
        }
        &'phoenix;help;publish;yaml-graft'= {
        }
        &'phoenix;help;publish;notice'= {
        }
        &'phoenix;help;publish;rollback'= {
        }
        &'phoenix;help;publish;list'= {
        }
        &'phoenix;help;publish;status'= {
        }
        &'phoenix;help;publish;widen'= {
        }
        &'phoenix;help;subscribe'= {
            cand show 'Print the overrides, config, last update, last error and history of a state file'
        }
        &'phoenix;help;subscribe;show'= {
        }
        &'phoenix;help;redact'= {
        }
        &'phoenix;help;telemetrist'= {
        }
        &'phoenix;help;export'= {
        }
        &'phoenix;help;propose'= {
        }
        &'phoenix;help;telemetry'= {
            cand query 'Show stored records, newest first'
        }
        &'phoenix;help;telemetry;query'= {
        }
        &'phoenix;help;config'= {
            cand show 'Print every setting, its value (secrets masked) and its source'
        }
        &'phoenix;help;config;show'= {
        }
        &'phoenix;help;agents'= {
            cand token 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)'
        }
        &'phoenix;help;agents;token'= {
        }
        &'phoenix;help;completions'= {
        }
        &'phoenix;help;man'= {
        }
        &'phoenix;help;spawn-agent'= {
        }
        &'phoenix;help;evolve-playbook'= {
            cand approve 'Approve a pull request''s current head commit (local forge)'
            cand status 'Show a pull request: state, CI of its head, approvals'
        }
        &'phoenix;help;evolve-playbook;approve'= {
        }
        &'phoenix;help;evolve-playbook;status'= {
        }
        &'phoenix;help;bench'= {
            cand ingest 'Ingest throughput against this machine''s HTTP and storage ceilings, and /analyze latency'
            cand query 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event'
            cand dashboard 'Web dashboard: every page''s latency over a store filled with millions of events, and the CPU an open live page costs'
            cand fanout 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber'
            cand pii 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s'
            cand otlp 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector'
            cand abuse 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers'
        }
        &'phoenix;help;bench;ingest'= {
        }
        &'phoenix;help;bench;query'= {
        }
        &'phoenix;help;bench;dashboard'= {
        }
        &'phoenix;help;bench;fanout'= {
        }
        &'phoenix;help;bench;pii'= {
        }
        &'phoenix;help;bench;otlp'= {
        }
        &'phoenix;help;bench;abuse'= {
        }
        &'phoenix;help;help'= {
        }
    ]
    $completions[$command]
}
