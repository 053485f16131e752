# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_phoenix_global_optspecs
    string join \n config= json v/verbose q/quiet h/help V/version
end

function __fish_phoenix_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_phoenix_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_phoenix_using_subcommand
    set -l cmd (__fish_phoenix_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c phoenix -n "__fish_phoenix_needs_command" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_needs_command" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_needs_command" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_needs_command" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_needs_command" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_needs_command" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "serve" -d 'Run Phoenix\'s servers (the collector, or everything at once)'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "ingest" -d 'Send telemetry events (flags or NDJSON) or conversations (JSONL, redacted here) to the collector'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "analyze" -d 'Ask the collector for an insight over the latest telemetry'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "insights" -d 'List the insights the collector has stored'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "publish" -d 'Publish hot updates to subscribed agents, and follow their delivery'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "subscribe" -d 'Run the agent-side learning pipeline: apply hot updates to a local state file'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "redact" -d 'De-identify text or chat messages with session pseudonyms, or reveal them from the vault'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "telemetrist" -d 'Edge Telemetrist: pick up completed conversations, redact them here, spool and send them'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "export" -d 'Write fine-tuning datasets (TRL or OpenAI JSONL, SFT or DPO pairs) from stored conversations'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "propose" -d 'Ask N concurrent LLM workers for improvement proposals (the hive), rank and publish them'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "telemetry" -d 'Read stored telemetry'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "config" -d 'Inspect the effective configuration'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "agents" -d 'Issue agent credentials: the per-ORCH tokens subscribers and heartbeats present'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "completions" -d 'Generate shell completions'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "man" -d 'Generate man pages'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "spawn-agent" -d 'Create an agent repository from Phoenix\'s template, with LLM-generated code'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "evolve-playbook" -d 'Evolve an agent\'s playbook through a branch, a pull request, CI and approval'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "bench" -d 'Measure Phoenix\'s throughput and latency on this machine'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -f -a "collector" -d 'Run the Vital Pulse telemetry collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -f -a "distributor" -d 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -f -a "all" -d 'Run every service (collector and distributor) in one process on the embedded SQLite default'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector distributor all help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l bind -d 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l otlp-bind -d 'Also serve OTLP/HTTP (POST /v1/traces, /v1/logs, and /health) on this address, e.g. the standard 127.0.0.1:4318; OTLP is always on --bind too [default: $PHOENIX_OTLP_BIND or off]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l db -d 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l database-url -d 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l nats-url -d 'NATS server with JetStream (nats://HOST:4222): ingest is acknowledged once in its stream, and the collectors sharing --database-url drain it into the database (serve all: the distributor rings the others through it too) [default: $PHOENIX_NATS_URL or [cluster] nats_url]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l retention-days -d 'Delete telemetry older than this many days [default: keep everything]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l tls-cert -d 'Serve HTTPS with this PEM certificate chain (needs --tls-key)' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l tls-key -d 'Private key (PEM) for --tls-cert' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l shutdown-timeout -d 'After SIGTERM/SIGINT, how long in-flight requests may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l distributor-url -d 'serve collector: the distributor whose updates the dashboard shows, read over its HTTP API with the admin token (serve all reads its own) [default: $PULSE_DISTRIBUTOR_URL or the local one]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l insecure-no-auth -d 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l no-dashboard -d 'Do not serve the web dashboard at / (and /ui/...)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l bind -d 'Address to listen on [default: $PULSE_DISTRIBUTOR_BIND or 127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l db -d 'SQLite file of the update log [default: $PHOENIX_DISTRIBUTOR_DB_PATH or <data dir>/distributor.db]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l nats-url -d 'NATS server the distributors sharing --database-url ring each other through after each commit (nats://HOST:4222) [default: $PHOENIX_NATS_URL or [cluster] nats_url]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l database-url -d 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l tls-cert -d 'Serve HTTPS and WSS with this PEM certificate chain (needs --tls-key)' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l tls-key -d 'Private key (PEM) for --tls-cert' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l shutdown-timeout -d 'After SIGTERM/SIGINT, how long in-flight requests and WebSocket closes may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l insecure-no-auth -d 'Allow a non-loopback address without an admin token (anyone who can connect may publish)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from distributor" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l bind -d 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l otlp-bind -d 'Also serve OTLP/HTTP (POST /v1/traces, /v1/logs, and /health) on this address, e.g. the standard 127.0.0.1:4318; OTLP is always on --bind too [default: $PHOENIX_OTLP_BIND or off]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l db -d 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l database-url -d 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l nats-url -d 'NATS server with JetStream (nats://HOST:4222): ingest is acknowledged once in its stream, and the collectors sharing --database-url drain it into the database (serve all: the distributor rings the others through it too) [default: $PHOENIX_NATS_URL or [cluster] nats_url]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l retention-days -d 'Delete telemetry older than this many days [default: keep everything]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l tls-cert -d 'Serve HTTPS with this PEM certificate chain (needs --tls-key)' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l tls-key -d 'Private key (PEM) for --tls-cert' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l shutdown-timeout -d 'After SIGTERM/SIGINT, how long in-flight requests may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l distributor-url -d 'serve collector: the distributor whose updates the dashboard shows, read over its HTTP API with the admin token (serve all reads its own) [default: $PULSE_DISTRIBUTOR_URL or the local one]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l distributor-bind -d 'Address the distributor listens on [default: $PULSE_DISTRIBUTOR_BIND or 127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l distributor-db -d 'SQLite file of the distributor\'s update log [default: $PHOENIX_DISTRIBUTOR_DB_PATH or <data dir>/distributor.db]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l insecure-no-auth -d 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l no-dashboard -d 'Do not serve the web dashboard at / (and /ui/...)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "collector" -d 'Run the Vital Pulse telemetry collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "distributor" -d 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "all" -d 'Run every service (collector and distributor) in one process on the embedded SQLite default'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l kind -d 'Event kind (one event from flags), e.g. orch_heartbeat, skill_execution' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l level -d 'Level: trace, debug, info, notice, warn, error, critical, fatal' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l tag -d 'Tag (repeatable)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l payload -d 'Payload as a JSON document' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l orch-id -d 'Raw ORCH id (the collector stores only its keyed hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l agent-path -d 'Agent path such as code-gen/rust' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l ts -d 'Event time in Unix seconds [default: the collector\'s clock]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -s f -l file -d 'NDJSON file of envelopes, one per line; `-` reads stdin' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l conversations -d 'JSONL file of conversations, one per line; `-` reads stdin. Each is redacted on this machine (pseudonyms in the local vault), spooled, and sent to POST /ingest/conversations' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l session -d 'Pseudonym session for every conversation [default: each conversation\'s own id]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l batch-size -d 'Records (or conversations) per request' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l retries -d 'Retries per request on 429, 5xx or an unreachable collector' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l url -d 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l last-n -d 'How many of the newest records to analyse (free tier: at most 200, premium: 5000)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l focus -d 'What the summary should focus on: performance, emotional_resonance, errors, ...' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l premium-key -d 'Premium key sent as the X402 header [default: $X402_PREMIUM_KEY]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l kind -d 'Only records of this kind' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l level -d 'Only records of this level' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l agent-prefix -d 'Only agents at or below this path (segment-wise: code-gen matches code-gen/rust)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l orch -d 'Only this ORCH (raw id or orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l since -d 'Only records at or after: Unix seconds, RFC 3339, or an age like 2h' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l until -d 'Only records before: Unix seconds, RFC 3339, or an age like 30m' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l url -d 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l limit -d 'How many insights to show, newest first' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l url -d 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l full -d 'Show every bullet and the statistics of each insight instead of one line each'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "prompt-tweak" -d 'Publish a new default prompt (prompt_tweak)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "model-tweak" -d 'Publish a new default model (model_tweak)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "json-patch" -d 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "yaml-graft" -d 'Publish YAML to deep-merge into the agents\' config (yaml_graft)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "notice" -d 'Publish a message the agents log (notice)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "rollback" -d 'Undo an earlier update where it was applied, keeping later updates (rollback)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "list" -d 'List the newest updates with their delivery and ack counts'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "status" -d 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "widen" -d 'Raise an update\'s rollout percentage; newly admitted agents receive it at once'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and not __fish_seen_subcommand_from prompt-tweak model-tweak json-patch yaml-graft notice rollback list status widen help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l prompt -d 'The new default prompt' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l target-orch -d 'Only this ORCH (its raw id or its orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l target-prefix -d 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l tier -d 'Tier a subscriber needs to receive the update [default: free]' -r -f -a "free\t''
premium\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l rollout-percent -d 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l no-cascade -d 'Only the exact --target-prefix path, not the agents below it'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from prompt-tweak" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l model -d 'The new default model, e.g. anthropic/claude-3-haiku' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l target-orch -d 'Only this ORCH (its raw id or its orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l target-prefix -d 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l tier -d 'Tier a subscriber needs to receive the update [default: free]' -r -f -a "free\t''
premium\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l rollout-percent -d 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l no-cascade -d 'Only the exact --target-prefix path, not the agents below it'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from model-tweak" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l patch -d 'JSON file with the RFC 6902 operations (an array, or {"patch": [...]}); `-` reads stdin' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l target-orch -d 'Only this ORCH (its raw id or its orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l target-prefix -d 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l tier -d 'Tier a subscriber needs to receive the update [default: free]' -r -f -a "free\t''
premium\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l rollout-percent -d 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l no-cascade -d 'Only the exact --target-prefix path, not the agents below it'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from json-patch" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l file -d 'YAML file holding a mapping to merge into the agents\' config; `-` reads stdin' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l target-orch -d 'Only this ORCH (its raw id or its orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l target-prefix -d 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l tier -d 'Tier a subscriber needs to receive the update [default: free]' -r -f -a "free\t''
premium\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l rollout-percent -d 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l no-cascade -d 'Only the exact --target-prefix path, not the agents below it'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from yaml-graft" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l message -d 'The message agents log' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l target-orch -d 'Only this ORCH (its raw id or its orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l target-prefix -d 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l tier -d 'Tier a subscriber needs to receive the update [default: free]' -r -f -a "free\t''
premium\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l rollout-percent -d 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l no-cascade -d 'Only the exact --target-prefix path, not the agents below it'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from notice" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l target-orch -d 'Only this ORCH (its raw id or its orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l target-prefix -d 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l tier -d 'Tier a subscriber needs to receive the update [default: free]' -r -f -a "free\t''
premium\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l rollout-percent -d 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l no-cascade -d 'Only the exact --target-prefix path, not the agents below it'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from rollback" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -l limit -d 'How many updates to show, newest first' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -l rollout-percent -l percent -d 'New rollout percentage, above the current one (100 reaches every targeted ORCH); `--percent` is an older name' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -l url -d 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -l token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from widen" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "prompt-tweak" -d 'Publish a new default prompt (prompt_tweak)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "model-tweak" -d 'Publish a new default model (model_tweak)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "json-patch" -d 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "yaml-graft" -d 'Publish YAML to deep-merge into the agents\' config (yaml_graft)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "notice" -d 'Publish a message the agents log (notice)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "rollback" -d 'Undo an earlier update where it was applied, keeping later updates (rollback)'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the newest updates with their delivery and ack counts'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "widen" -d 'Raise an update\'s rollout percentage; newly admitted agents receive it at once'
complete -c phoenix -n "__fish_phoenix_using_subcommand publish; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l orch-id -d 'Raw ORCH id (targeting matches it or its orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l agent-path -d 'Agent path such as code-gen/rust (targeting prefixes match whole segments)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l state -d 'State file [default: <data dir>/learning/<orch id>.json]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l exec -d 'Shell command run after each applied update, with the new state JSON on stdin' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l exec-timeout -d 'Kill an --exec command still running after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l url -d 'Distributor WebSocket URL [default: $PULSE_DISTRIBUTOR_URL or ws://127.0.0.1:5003/subscribe]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l premium-key -d 'Key that unlocks premium-tier updates, sent in hello [default: $X402_PREMIUM_KEY]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l token -d 'This ORCH\'s agent token, sent in hello and as the heartbeats\' bearer (issued by `phoenix agents token ORCH_ID`; required by a distributor off loopback) [default: $PHOENIX_AGENT_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l telemetrist-url -d 'Collector that receives heartbeats [default: $TELEMETRIST_URL or http://127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l heartbeat-interval -d 'Time between heartbeats, e.g. 30s or 5m [default: $ORCH_SLAVE_SYNC_INTERVAL seconds, 300]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l template-version -d 'Agent template version reported in heartbeats' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l no-heartbeat -d 'Send no heartbeats to the collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l master-mode -d 'Report master mode in heartbeats'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l once -d 'Apply the pending updates, then exit (no heartbeats); exit code 3 if the distributor is unreachable'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -f -a "show" -d 'Print the overrides, config, last update, last error and history of a state file'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and not __fish_seen_subcommand_from show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -l state -d 'State file to read' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -l orch-id -d 'Read the default state file of this ORCH id' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -l limit -d 'Most history entries listed, newest first' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -l config-json -d 'Print the config as pretty JSON instead of YAML'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from help" -f -a "show" -d 'Print the overrides, config, last update, last error and history of a state file'
complete -c phoenix -n "__fish_phoenix_using_subcommand subscribe; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -l session -d 'Session whose pseudonyms to reuse [default: a new random session, printed in the summary]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -l format -d 'What the input holds' -r -f -a "text\t'Free text'
messages\t'Chat messages as JSON: an array, `{"messages": [...]}`, or NDJSON of those'"
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -l vault -d 'Vault file [default: $PHOENIX_VAULT_PATH or <home>/vault.db]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -l reveal -d 'Map de-identified input back to the originals with the vault (needs --session)'
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c phoenix -n "__fish_phoenix_using_subcommand redact" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l source -d 'Directory of completed conversations [default: $PHOENIX_TELEMETRIST_SOURCE]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l interval -d 'Seconds between two cycles [default: $PHOENIX_TELEMETRIST_INTERVAL or 300]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l session -d 'Pseudonym session for every conversation and OTLP record [default: each conversation\'s own id; OTLP: see below]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l batch-size -d 'Conversations per request' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l retries -d 'Retries per request on 429, 5xx or an unreachable collector' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l otlp-listen -d 'Serve OTLP/HTTP (POST /v1/traces, /v1/logs) on this address, e.g. 127.0.0.1:4318: spans and logs are redacted, spooled and forwarded to the collector' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l otlp-spool-limit-mb -d 'MiB of OTLP batches not yet sent past which new OTLP requests get 503' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l url -d 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l once -d 'Run one cycle and exit (for cron and tests)'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l quarantine -d 'List the quarantined conversations and OTLP batches and exit'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l requeue-quarantined -d 'Move the quarantined conversations and OTLP batches back to the spool and exit; the next run sends them'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l insecure-no-auth -d 'Serve --otlp-listen on a non-loopback address, where anyone who reaches it can send through this edge\'s collector credentials'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetrist" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -l format -d 'Dataset format' -r -f -a "sft\t'TRL conversational language modelling: {"messages": [...]}'
dpo\t'TRL conversational preference pairs: {"prompt", "chosen", "rejected"}'
openai-sft\t'OpenAI supervised fine-tuning lines'
openai-dpo\t'OpenAI preference fine-tuning lines'"
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -l since -d 'Only conversations completed at or after this time: RFC 3339, Unix seconds, or an age such as 12h or 7d' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -l min-score -d 'Only conversations with a score of at least S (unscored ones are left out)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -s o -l out -d 'Write the JSONL to FILE (a temporary file renamed into place when complete) instead of stdout' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -l db -d 'Collector database [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -l database-url -d 'The collector\'s PostgreSQL database (postgres://USER:PASSWORD@HOST:PORT/DB) [default: $PHOENIX_DATABASE_URL or [store] url]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c phoenix -n "__fish_phoenix_using_subcommand export" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -s n -l n -d 'Number of workers, each asking the LLM for one proposal' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l concurrency -d 'Most workers asking the LLM at the same time [default: N, at most 8]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l timeout -d 'Deadline of one attempt of one worker (also of the ranking)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l retries -d 'Extra attempts for a worker that errors, times out, panics or answers garbage' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l model -d 'LLM model the workers and the ranking use [default: $PHOENIX_LLM_MODEL]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l collector-url -d 'Collector to read the insight from [default: $TELEMETRIST_URL or http://127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l publish-best -d 'Publish the best proposal carrying this update type through the distributor (implies --rank unless --pick)' -r -f -a "prompt-tweak\t'A new default prompt (prompt_tweak)'
model-tweak\t'A new default model (model_tweak)'"
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l pick -d 'Publish this worker\'s proposal instead of the best-ranked one' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l distributor-url -d 'Distributor to publish to [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l admin-token -d 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l target-orch -d 'Only this ORCH (its raw id or its orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l target-prefix -d 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l tier -d 'Tier a subscriber needs to receive the update [default: free]' -r -f -a "free\t''
premium\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l rollout-percent -d 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l context-from-insights -d 'Ground the seed in the collector\'s latest insight (GET /insights)'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l rank -d 'Ask the LLM for a ranked synthesis of the distinct proposals, with reasons'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -s y -l yes -d 'Publish without asking for confirmation (required when stdin is not a terminal)'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l no-cascade -d 'Only the exact --target-prefix path, not the agents below it'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c phoenix -n "__fish_phoenix_using_subcommand propose" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and not __fish_seen_subcommand_from query help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and not __fish_seen_subcommand_from query help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and not __fish_seen_subcommand_from query help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and not __fish_seen_subcommand_from query help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and not __fish_seen_subcommand_from query help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and not __fish_seen_subcommand_from query help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and not __fish_seen_subcommand_from query help" -f -a "query" -d 'Show stored records, newest first'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and not __fish_seen_subcommand_from query help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l kind -d 'Only this kind' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l level -d 'Only this level' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l agent-prefix -d 'Only agents at or below this path' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l orch -d 'Only this ORCH (raw id or orch_ hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l since -d 'At or after: Unix seconds, RFC 3339, or an age like 2h' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l until -d 'Before: Unix seconds, RFC 3339, or an age like 30m' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l limit -d 'Most records to show' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l cursor -d 'Continue after a previous page (its next_cursor)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l url -d 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from help" -f -a "query" -d 'Show stored records, newest first'
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and not __fish_seen_subcommand_from show help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and not __fish_seen_subcommand_from show help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and not __fish_seen_subcommand_from show help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and not __fish_seen_subcommand_from show help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and not __fish_seen_subcommand_from show help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and not __fish_seen_subcommand_from show help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and not __fish_seen_subcommand_from show help" -f -a "show" -d 'Print every setting, its value (secrets masked) and its source'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and not __fish_seen_subcommand_from show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and __fish_seen_subcommand_from show" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and __fish_seen_subcommand_from show" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "show" -d 'Print every setting, its value (secrets masked) and its source'
complete -c phoenix -n "__fish_phoenix_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and not __fish_seen_subcommand_from token help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and not __fish_seen_subcommand_from token help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and not __fish_seen_subcommand_from token help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and not __fish_seen_subcommand_from token help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and not __fish_seen_subcommand_from token help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and not __fish_seen_subcommand_from token help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and not __fish_seen_subcommand_from token help" -f -a "token" -d 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and not __fish_seen_subcommand_from token help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and __fish_seen_subcommand_from token" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and __fish_seen_subcommand_from token" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and __fish_seen_subcommand_from token" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and __fish_seen_subcommand_from token" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and __fish_seen_subcommand_from token" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and __fish_seen_subcommand_from token" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and __fish_seen_subcommand_from help" -f -a "token" -d 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)'
complete -c phoenix -n "__fish_phoenix_using_subcommand agents; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand completions" -l out-dir -d 'Write the completions of every supported shell into this directory instead' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand completions" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand completions" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand completions" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand completions" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand completions" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand completions" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand man" -l out-dir -d 'Write phoenix.1 and one page per subcommand into this directory instead of printing phoenix.1' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand man" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand man" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand man" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand man" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand man" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand man" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -s d -l description -d 'What the agent does; the LLM writes its code from this' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l tier -d 'free = public repository; paid and enterprise = private' -r -f -a "free\t'Public repository'
paid\t'Private repository'
enterprise\t'Private repository'"
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l max-repairs -d 'Corrections the LLM may make after compiler or test errors' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l forge -d 'Where agent repositories live [default: $PHOENIX_FORGE or local]' -r -f -a "local\t''
github\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l org -d 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l api-url -d 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l no-llm -d 'Scaffold a documented placeholder instead of asking the LLM (marked in agent.json)'
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l force -d 'Replace the main branch of an existing repository of that name'
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l pr -d 'Push the scaffold to a branch and open a pull request instead of pushing to main'
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c phoenix -n "__fish_phoenix_using_subcommand spawn-agent" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l repo -d 'Agent repository' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l note -d 'What changes and why; appended to the playbook\'s `updates`' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l metric -d 'A telemetry metric to record in the playbook (repeatable)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l collector-url -d 'Collector for --metrics-from-collector [default: $TELEMETRIST_URL]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l timeout -d 'Give up waiting for CI, approval and the merge after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l poll -d 'First poll interval while waiting; doubles up to 1 minute' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l forge -d 'Where agent repositories live [default: $PHOENIX_FORGE or local]' -r -f -a "local\t''
github\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l org -d 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l api-url -d 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l metrics-from-collector -d 'Also record the agent\'s figures from the collector\'s analysis (records, error rate, mean and p95 of numeric fields)'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l no-wait -d 'Open (or find) the pull request and return without waiting for CI or approval'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -f -a "approve" -d 'Approve a pull request\'s current head commit (local forge)'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -f -a "status" -d 'Show a pull request: state, CI of its head, approvals'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and not __fish_seen_subcommand_from approve status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -l repo -d 'Agent repository' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -l by -d 'Who approves (recorded with the approval)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -l forge -d 'Where agent repositories live [default: $PHOENIX_FORGE or local]' -r -f -a "local\t''
github\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -l org -d 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -l api-url -d 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from approve" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -l repo -d 'Agent repository' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -l by -d 'Who approves (recorded with the approval)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -l forge -d 'Where agent repositories live [default: $PHOENIX_FORGE or local]' -r -f -a "local\t''
github\t''"
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -l org -d 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -l api-url -d 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from help" -f -a "approve" -d 'Approve a pull request\'s current head commit (local forge)'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show a pull request: state, CI of its head, approvals'
complete -c phoenix -n "__fish_phoenix_using_subcommand evolve-playbook; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -f -a "ingest" -d 'Ingest throughput against this machine\'s HTTP and storage ceilings, and /analyze latency'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -f -a "query" -d 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -f -a "dashboard" -d 'Web dashboard: every page\'s latency over a store filled with millions of events, and the CPU an open live page costs'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -f -a "fanout" -d 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -f -a "pii" -d 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -f -a "otlp" -d 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -f -a "abuse" -d 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest query dashboard fanout pii otlp abuse help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l duration -d 'Measured time of each load scenario' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l warmup -d 'Unmeasured load before each measurement' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l connections -d 'Keep-alive connections for GET /health and single-event POST /ingest' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l batch-connections -d 'Keep-alive connections for batch POST /ingest' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l batch-size -d 'Records per NDJSON batch request' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l storage-rows -d 'Rows the raw storage ceiling writes (SQLite: in one transaction; PostgreSQL: by COPY, a batch per transaction)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l analyze-runs -d 'Timed POST /analyze calls over 5000 records' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l rounds -d 'Repeat the load and storage scenarios this many times and report medians' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l database-url -d 'Run on this PostgreSQL server instead of SQLite, in a scratch database made and dropped by the run' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l nats-url -d 'Ingest through this NATS JetStream into --database-url (the collector cluster\'s path), against raw JetStream publish and raw COPY ceilings; scratch stream deleted by the run' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -l events -d 'Events the scratch store is filled with before the queries' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -l requests -d 'Timed requests per query, one at a time on one keep-alive connection' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -l query-budget -d 'A query stops before --requests once its timed requests have taken this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -l database-url -d 'Run on this PostgreSQL server instead of SQLite, in a scratch database made (and dropped) by the run' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -l keep -d 'Leave the filled scratch store behind and say where it is'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from query" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -l events -d 'Events the scratch store is filled with before the pages are read' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -l requests -d 'Timed GETs per page (after 3 untimed ones) on one keep-alive connection, and live-stream connections timed to their first event' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -l streams -d 'Live Fleet pages (GET /ui/stream?page=fleet) open at once while their CPU is measured' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -l stream-seconds -d 'Seconds of process CPU measured without streams, then as long with --streams open' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -l keep -d 'Leave the filled scratch store behind and say where it is'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from dashboard" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l subscribers -d 'Subscribers connected at once (each needs an open file here and one in the distributor)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l publishes -d 'Updates published one at a time, each acked by every subscriber before the next' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l connect-parallelism -d 'WebSocket handshakes in flight at once while connecting' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l settle -d 'Idle time after the last handshake before the distributor\'s memory is sampled' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l nodes -d 'Distributor processes sharing one update log; subscribers are spread over them and updates published on the first (needs --database-url)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l database-url -d 'Keep the update log on this PostgreSQL server, in a scratch database made and dropped by the run' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l nats-url -d 'Ring the nodes\' NATS doorbell on this server after each publish (without it they poll the log)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from fanout" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l seed -d 'Seed of the generated corpus (the same seed gives the same corpus)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l conversations -d 'Conversations in the corpus (2–5 messages each)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l min-time -d 'Keep redacting the corpus for at least this long to measure throughput' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l dump-corpus -d 'Also write the corpus with its labels as JSON lines to this file' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l session-mb -d 'Also redact texts of these sizes (MB) in one session each, for throughput on long input (`--session-mb \'\'` skips it)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l locale-conversations -d 'Conversations of the multi-locale corpus (en_US, en_GB, de_DE, fr_FR, es_ES), scored on its tuning and its held-out values (0 skips it)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l examples -d 'Print examples of misses and false positives'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from pii" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l duration -d 'Measured time of each scenario' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l warmup -d 'Unmeasured load before each measurement' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l connections -d 'Keep-alive connections sending POST /v1/traces' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l spans-per-request -d 'Spans per OTLP request (GenAI chat, tool and embedding spans; a second scenario adds message content)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l batch-connections -d 'Keep-alive connections of the NDJSON batch POST /ingest it is compared with' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l batch-size -d 'Records per NDJSON batch request' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l health-connections -d 'Keep-alive connections of GET /health' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l storage-rows -d 'Rows of the OTLP scenario the raw SQLite storage ceiling inserts in one transaction' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l rounds -d 'Repeat the scenarios and the ceiling this many times and report medians' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from otlp" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l scenario -d 'Run only this scenario (repeat for several) [default: all of them]' -r -f -a "shutdown\t'SIGTERM to `serve all` with slow clients holding half-sent requests: time to exit, exit code'
slowloris\t'Connections trickling headers while GET /health is timed'
ping-flood\t'A WebSocket subscriber sending pings without reading: distributor RSS, peer closed'
gzip-bombs\t'Concurrent gzip bombs: the collector\'s peak RSS'"
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l slow-clients -d 'Slow clients connected when SIGTERM is sent (shutdown)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l shutdown-timeout -d 'The server\'s --shutdown-timeout, the deadline its exit is judged against (shutdown)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l slowloris -d 'Connections trickling headers (slowloris; each needs an open file here and in the collector)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l slowloris-duration -d 'How long GET /health is timed under the slowloris (past the 10 s header timeout shows the cuts)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l pings -d 'Pings the flooding subscriber tries to send (ping-flood)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l bombs -d 'Gzip bombs sent at once (gzip-bombs)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l bomb-decoded-mib -d 'What each bomb inflates to, in MiB (gzip-bombs)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from abuse" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "ingest" -d 'Ingest throughput against this machine\'s HTTP and storage ceilings, and /analyze latency'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "query" -d 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "dashboard" -d 'Web dashboard: every page\'s latency over a store filled with millions of events, and the CPU an open live page costs'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "fanout" -d 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "pii" -d 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "otlp" -d 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "abuse" -d 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "serve" -d 'Run Phoenix\'s servers (the collector, or everything at once)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "ingest" -d 'Send telemetry events (flags or NDJSON) or conversations (JSONL, redacted here) to the collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "analyze" -d 'Ask the collector for an insight over the latest telemetry'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "insights" -d 'List the insights the collector has stored'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "publish" -d 'Publish hot updates to subscribed agents, and follow their delivery'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "subscribe" -d 'Run the agent-side learning pipeline: apply hot updates to a local state file'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "redact" -d 'De-identify text or chat messages with session pseudonyms, or reveal them from the vault'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "telemetrist" -d 'Edge Telemetrist: pick up completed conversations, redact them here, spool and send them'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "export" -d 'Write fine-tuning datasets (TRL or OpenAI JSONL, SFT or DPO pairs) from stored conversations'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "propose" -d 'Ask N concurrent LLM workers for improvement proposals (the hive), rank and publish them'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "telemetry" -d 'Read stored telemetry'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "config" -d 'Inspect the effective configuration'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "agents" -d 'Issue agent credentials: the per-ORCH tokens subscribers and heartbeats present'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "completions" -d 'Generate shell completions'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "man" -d 'Generate man pages'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "spawn-agent" -d 'Create an agent repository from Phoenix\'s template, with LLM-generated code'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "evolve-playbook" -d 'Evolve an agent\'s playbook through a branch, a pull request, CI and approval'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "bench" -d 'Measure Phoenix\'s throughput and latency on this machine'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights publish subscribe redact telemetrist export propose telemetry config agents completions man spawn-agent evolve-playbook bench help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "collector" -d 'Run the Vital Pulse telemetry collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "distributor" -d 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "all" -d 'Run every service (collector and distributor) in one process on the embedded SQLite default'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "prompt-tweak" -d 'Publish a new default prompt (prompt_tweak)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "model-tweak" -d 'Publish a new default model (model_tweak)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "json-patch" -d 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "yaml-graft" -d 'Publish YAML to deep-merge into the agents\' config (yaml_graft)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "notice" -d 'Publish a message the agents log (notice)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "rollback" -d 'Undo an earlier update where it was applied, keeping later updates (rollback)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "list" -d 'List the newest updates with their delivery and ack counts'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "status" -d 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from publish" -f -a "widen" -d 'Raise an update\'s rollout percentage; newly admitted agents receive it at once'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from subscribe" -f -a "show" -d 'Print the overrides, config, last update, last error and history of a state file'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from telemetry" -f -a "query" -d 'Show stored records, newest first'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "show" -d 'Print every setting, its value (secrets masked) and its source'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from agents" -f -a "token" -d 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from evolve-playbook" -f -a "approve" -d 'Approve a pull request\'s current head commit (local forge)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from evolve-playbook" -f -a "status" -d 'Show a pull request: state, CI of its head, approvals'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "ingest" -d 'Ingest throughput against this machine\'s HTTP and storage ceilings, and /analyze latency'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "query" -d 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "dashboard" -d 'Web dashboard: every page\'s latency over a store filled with millions of events, and the CPU an open live page costs'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "fanout" -d 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "pii" -d 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "otlp" -d 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "abuse" -d 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers'
