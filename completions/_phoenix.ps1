
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'phoenix' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'phoenix'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'phoenix' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run Phoenix''s servers (the collector, or everything at once)')
            [CompletionResult]::new('ingest', 'ingest', [CompletionResultType]::ParameterValue, 'Send telemetry events (flags or NDJSON) or conversations (JSONL, redacted here) to the collector')
            [CompletionResult]::new('analyze', 'analyze', [CompletionResultType]::ParameterValue, 'Ask the collector for an insight over the latest telemetry')
            [CompletionResult]::new('insights', 'insights', [CompletionResultType]::ParameterValue, 'List the insights the collector has stored')
            [CompletionResult]::new('publish', 'publish', [CompletionResultType]::ParameterValue, 'Publish hot updates to subscribed agents, and follow their delivery')
            [CompletionResult]::new('subscribe', 'subscribe', [CompletionResultType]::ParameterValue, 'Run the agent-side learning pipeline: apply hot updates to a local state file')
            [CompletionResult]::new('redact', 'redact', [CompletionResultType]::ParameterValue, 'De-identify text or chat messages with session pseudonyms, or reveal them from the vault')
            [CompletionResult]::new('telemetrist', 'telemetrist', [CompletionResultType]::ParameterValue, 'Edge Telemetrist: pick up completed conversations, redact them here, spool and send them')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write fine-tuning datasets (TRL or OpenAI JSONL, SFT or DPO pairs) from stored conversations')
            [CompletionResult]::new('propose', 'propose', [CompletionResultType]::ParameterValue, 'Ask N concurrent LLM workers for improvement proposals (the hive), rank and publish them')
            [CompletionResult]::new('telemetry', 'telemetry', [CompletionResultType]::ParameterValue, 'Read stored telemetry')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Inspect the effective configuration')
            [CompletionResult]::new('agents', 'agents', [CompletionResultType]::ParameterValue, 'Issue agent credentials: the per-ORCH tokens subscribers and heartbeats present')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Generate shell completions')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Generate man pages')
            [CompletionResult]::new('spawn-agent', 'spawn-agent', [CompletionResultType]::ParameterValue, 'Create an agent repository from Phoenix''s template, with LLM-generated code')
            [CompletionResult]::new('evolve-playbook', 'evolve-playbook', [CompletionResultType]::ParameterValue, 'Evolve an agent''s playbook through a branch, a pull request, CI and approval')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure Phoenix''s throughput and latency on this machine')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;serve' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('collector', 'collector', [CompletionResultType]::ParameterValue, 'Run the Vital Pulse telemetry collector')
            [CompletionResult]::new('distributor', 'distributor', [CompletionResultType]::ParameterValue, 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)')
            [CompletionResult]::new('all', 'all', [CompletionResultType]::ParameterValue, 'Run every service (collector and distributor) in one process on the embedded SQLite default')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;serve;collector' {
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]')
            [CompletionResult]::new('--otlp-bind', '--otlp-bind', [CompletionResultType]::ParameterName, 'Also serve OTLP/HTTP (POST /v1/traces, /v1/logs, and /health) on this address, e.g. the standard 127.0.0.1:4318; OTLP is always on --bind too [default: $PHOENIX_OTLP_BIND or off]')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]')
            [CompletionResult]::new('--nats-url', '--nats-url', [CompletionResultType]::ParameterName, 'NATS server with JetStream (nats://HOST:4222): ingest is acknowledged once in its stream, and the collectors sharing --database-url drain it into the database (serve all: the distributor rings the others through it too) [default: $PHOENIX_NATS_URL or [cluster] nats_url]')
            [CompletionResult]::new('--retention-days', '--retention-days', [CompletionResultType]::ParameterName, 'Delete telemetry older than this many days [default: keep everything]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve HTTPS with this PEM certificate chain (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key (PEM) for --tls-cert')
            [CompletionResult]::new('--shutdown-timeout', '--shutdown-timeout', [CompletionResultType]::ParameterName, 'After SIGTERM/SIGINT, how long in-flight requests may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]')
            [CompletionResult]::new('--distributor-url', '--distributor-url', [CompletionResultType]::ParameterName, 'serve collector: the distributor whose updates the dashboard shows, read over its HTTP API with the admin token (serve all reads its own) [default: $PULSE_DISTRIBUTOR_URL or the local one]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--insecure-no-auth', '--insecure-no-auth', [CompletionResultType]::ParameterName, 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)')
            [CompletionResult]::new('--no-dashboard', '--no-dashboard', [CompletionResultType]::ParameterName, 'Do not serve the web dashboard at / (and /ui/...)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;serve;distributor' {
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Address to listen on [default: $PULSE_DISTRIBUTOR_BIND or 127.0.0.1:5003]')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'SQLite file of the update log [default: $PHOENIX_DISTRIBUTOR_DB_PATH or <data dir>/distributor.db]')
            [CompletionResult]::new('--nats-url', '--nats-url', [CompletionResultType]::ParameterName, 'NATS server the distributors sharing --database-url ring each other through after each commit (nats://HOST:4222) [default: $PHOENIX_NATS_URL or [cluster] nats_url]')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve HTTPS and WSS with this PEM certificate chain (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key (PEM) for --tls-cert')
            [CompletionResult]::new('--shutdown-timeout', '--shutdown-timeout', [CompletionResultType]::ParameterName, 'After SIGTERM/SIGINT, how long in-flight requests and WebSocket closes may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--insecure-no-auth', '--insecure-no-auth', [CompletionResultType]::ParameterName, 'Allow a non-loopback address without an admin token (anyone who can connect may publish)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;serve;all' {
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]')
            [CompletionResult]::new('--otlp-bind', '--otlp-bind', [CompletionResultType]::ParameterName, 'Also serve OTLP/HTTP (POST /v1/traces, /v1/logs, and /health) on this address, e.g. the standard 127.0.0.1:4318; OTLP is always on --bind too [default: $PHOENIX_OTLP_BIND or off]')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'One PostgreSQL database for every store, shared by every process pointed at it (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require) [default: $PHOENIX_DATABASE_URL, [store] url, or the SQLite files]')
            [CompletionResult]::new('--nats-url', '--nats-url', [CompletionResultType]::ParameterName, 'NATS server with JetStream (nats://HOST:4222): ingest is acknowledged once in its stream, and the collectors sharing --database-url drain it into the database (serve all: the distributor rings the others through it too) [default: $PHOENIX_NATS_URL or [cluster] nats_url]')
            [CompletionResult]::new('--retention-days', '--retention-days', [CompletionResultType]::ParameterName, 'Delete telemetry older than this many days [default: keep everything]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve HTTPS with this PEM certificate chain (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key (PEM) for --tls-cert')
            [CompletionResult]::new('--shutdown-timeout', '--shutdown-timeout', [CompletionResultType]::ParameterName, 'After SIGTERM/SIGINT, how long in-flight requests may take before the rest is dropped [default: $PHOENIX_SHUTDOWN_TIMEOUT_SECS or 10s]')
            [CompletionResult]::new('--distributor-url', '--distributor-url', [CompletionResultType]::ParameterName, 'serve collector: the distributor whose updates the dashboard shows, read over its HTTP API with the admin token (serve all reads its own) [default: $PULSE_DISTRIBUTOR_URL or the local one]')
            [CompletionResult]::new('--distributor-bind', '--distributor-bind', [CompletionResultType]::ParameterName, 'Address the distributor listens on [default: $PULSE_DISTRIBUTOR_BIND or 127.0.0.1:5003]')
            [CompletionResult]::new('--distributor-db', '--distributor-db', [CompletionResultType]::ParameterName, 'SQLite file of the distributor''s update log [default: $PHOENIX_DISTRIBUTOR_DB_PATH or <data dir>/distributor.db]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--insecure-no-auth', '--insecure-no-auth', [CompletionResultType]::ParameterName, 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)')
            [CompletionResult]::new('--no-dashboard', '--no-dashboard', [CompletionResultType]::ParameterName, 'Do not serve the web dashboard at / (and /ui/...)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;serve;help' {
            [CompletionResult]::new('collector', 'collector', [CompletionResultType]::ParameterValue, 'Run the Vital Pulse telemetry collector')
            [CompletionResult]::new('distributor', 'distributor', [CompletionResultType]::ParameterValue, 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)')
            [CompletionResult]::new('all', 'all', [CompletionResultType]::ParameterValue, 'Run every service (collector and distributor) in one process on the embedded SQLite default')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;serve;help;collector' {
            break
        }
        'phoenix;serve;help;distributor' {
            break
        }
        'phoenix;serve;help;all' {
            break
        }
        'phoenix;serve;help;help' {
            break
        }
        'phoenix;ingest' {
            [CompletionResult]::new('--kind', '--kind', [CompletionResultType]::ParameterName, 'Event kind (one event from flags), e.g. orch_heartbeat, skill_execution')
            [CompletionResult]::new('--level', '--level', [CompletionResultType]::ParameterName, 'Level: trace, debug, info, notice, warn, error, critical, fatal')
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'Tag (repeatable)')
            [CompletionResult]::new('--payload', '--payload', [CompletionResultType]::ParameterName, 'Payload as a JSON document')
            [CompletionResult]::new('--orch-id', '--orch-id', [CompletionResultType]::ParameterName, 'Raw ORCH id (the collector stores only its keyed hash)')
            [CompletionResult]::new('--agent-path', '--agent-path', [CompletionResultType]::ParameterName, 'Agent path such as code-gen/rust')
            [CompletionResult]::new('--ts', '--ts', [CompletionResultType]::ParameterName, 'Event time in Unix seconds [default: the collector''s clock]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'NDJSON file of envelopes, one per line; `-` reads stdin')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'NDJSON file of envelopes, one per line; `-` reads stdin')
            [CompletionResult]::new('--conversations', '--conversations', [CompletionResultType]::ParameterName, 'JSONL file of conversations, one per line; `-` reads stdin. Each is redacted on this machine (pseudonyms in the local vault), spooled, and sent to POST /ingest/conversations')
            [CompletionResult]::new('--session', '--session', [CompletionResultType]::ParameterName, 'Pseudonym session for every conversation [default: each conversation''s own id]')
            [CompletionResult]::new('--batch-size', '--batch-size', [CompletionResultType]::ParameterName, 'Records (or conversations) per request')
            [CompletionResult]::new('--retries', '--retries', [CompletionResultType]::ParameterName, 'Retries per request on 429, 5xx or an unreachable collector')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;analyze' {
            [CompletionResult]::new('--last-n', '--last-n', [CompletionResultType]::ParameterName, 'How many of the newest records to analyse (free tier: at most 200, premium: 5000)')
            [CompletionResult]::new('--focus', '--focus', [CompletionResultType]::ParameterName, 'What the summary should focus on: performance, emotional_resonance, errors, ...')
            [CompletionResult]::new('--premium-key', '--premium-key', [CompletionResultType]::ParameterName, 'Premium key sent as the X402 header [default: $X402_PREMIUM_KEY]')
            [CompletionResult]::new('--kind', '--kind', [CompletionResultType]::ParameterName, 'Only records of this kind')
            [CompletionResult]::new('--level', '--level', [CompletionResultType]::ParameterName, 'Only records of this level')
            [CompletionResult]::new('--agent-prefix', '--agent-prefix', [CompletionResultType]::ParameterName, 'Only agents at or below this path (segment-wise: code-gen matches code-gen/rust)')
            [CompletionResult]::new('--orch', '--orch', [CompletionResultType]::ParameterName, 'Only this ORCH (raw id or orch_ hash)')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Only records at or after: Unix seconds, RFC 3339, or an age like 2h')
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'Only records before: Unix seconds, RFC 3339, or an age like 30m')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;insights' {
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'How many insights to show, newest first')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--full', '--full', [CompletionResultType]::ParameterName, 'Show every bullet and the statistics of each insight instead of one line each')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('prompt-tweak', 'prompt-tweak', [CompletionResultType]::ParameterValue, 'Publish a new default prompt (prompt_tweak)')
            [CompletionResult]::new('model-tweak', 'model-tweak', [CompletionResultType]::ParameterValue, 'Publish a new default model (model_tweak)')
            [CompletionResult]::new('json-patch', 'json-patch', [CompletionResultType]::ParameterValue, 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)')
            [CompletionResult]::new('yaml-graft', 'yaml-graft', [CompletionResultType]::ParameterValue, 'Publish YAML to deep-merge into the agents'' config (yaml_graft)')
            [CompletionResult]::new('notice', 'notice', [CompletionResultType]::ParameterValue, 'Publish a message the agents log (notice)')
            [CompletionResult]::new('rollback', 'rollback', [CompletionResultType]::ParameterValue, 'Undo an earlier update where it was applied, keeping later updates (rollback)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the newest updates with their delivery and ack counts')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors')
            [CompletionResult]::new('widen', 'widen', [CompletionResultType]::ParameterValue, 'Raise an update''s rollout percentage; newly admitted agents receive it at once')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;publish;prompt-tweak' {
            [CompletionResult]::new('--prompt', '--prompt', [CompletionResultType]::ParameterName, 'The new default prompt')
            [CompletionResult]::new('--target-orch', '--target-orch', [CompletionResultType]::ParameterName, 'Only this ORCH (its raw id or its orch_ hash)')
            [CompletionResult]::new('--target-prefix', '--target-prefix', [CompletionResultType]::ParameterName, 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)')
            [CompletionResult]::new('--tier', '--tier', [CompletionResultType]::ParameterName, 'Tier a subscriber needs to receive the update [default: free]')
            [CompletionResult]::new('--rollout-percent', '--rollout-percent', [CompletionResultType]::ParameterName, 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--no-cascade', '--no-cascade', [CompletionResultType]::ParameterName, 'Only the exact --target-prefix path, not the agents below it')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;model-tweak' {
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'The new default model, e.g. anthropic/claude-3-haiku')
            [CompletionResult]::new('--target-orch', '--target-orch', [CompletionResultType]::ParameterName, 'Only this ORCH (its raw id or its orch_ hash)')
            [CompletionResult]::new('--target-prefix', '--target-prefix', [CompletionResultType]::ParameterName, 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)')
            [CompletionResult]::new('--tier', '--tier', [CompletionResultType]::ParameterName, 'Tier a subscriber needs to receive the update [default: free]')
            [CompletionResult]::new('--rollout-percent', '--rollout-percent', [CompletionResultType]::ParameterName, 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--no-cascade', '--no-cascade', [CompletionResultType]::ParameterName, 'Only the exact --target-prefix path, not the agents below it')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;json-patch' {
            [CompletionResult]::new('--patch', '--patch', [CompletionResultType]::ParameterName, 'JSON file with the RFC 6902 operations (an array, or {"patch": [...]}); `-` reads stdin')
            [CompletionResult]::new('--target-orch', '--target-orch', [CompletionResultType]::ParameterName, 'Only this ORCH (its raw id or its orch_ hash)')
            [CompletionResult]::new('--target-prefix', '--target-prefix', [CompletionResultType]::ParameterName, 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)')
            [CompletionResult]::new('--tier', '--tier', [CompletionResultType]::ParameterName, 'Tier a subscriber needs to receive the update [default: free]')
            [CompletionResult]::new('--rollout-percent', '--rollout-percent', [CompletionResultType]::ParameterName, 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--no-cascade', '--no-cascade', [CompletionResultType]::ParameterName, 'Only the exact --target-prefix path, not the agents below it')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;yaml-graft' {
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'YAML file holding a mapping to merge into the agents'' config; `-` reads stdin')
            [CompletionResult]::new('--target-orch', '--target-orch', [CompletionResultType]::ParameterName, 'Only this ORCH (its raw id or its orch_ hash)')
            [CompletionResult]::new('--target-prefix', '--target-prefix', [CompletionResultType]::ParameterName, 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)')
            [CompletionResult]::new('--tier', '--tier', [CompletionResultType]::ParameterName, 'Tier a subscriber needs to receive the update [default: free]')
            [CompletionResult]::new('--rollout-percent', '--rollout-percent', [CompletionResultType]::ParameterName, 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--no-cascade', '--no-cascade', [CompletionResultType]::ParameterName, 'Only the exact --target-prefix path, not the agents below it')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;notice' {
            [CompletionResult]::new('--message', '--message', [CompletionResultType]::ParameterName, 'The message agents log')
            [CompletionResult]::new('--target-orch', '--target-orch', [CompletionResultType]::ParameterName, 'Only this ORCH (its raw id or its orch_ hash)')
            [CompletionResult]::new('--target-prefix', '--target-prefix', [CompletionResultType]::ParameterName, 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)')
            [CompletionResult]::new('--tier', '--tier', [CompletionResultType]::ParameterName, 'Tier a subscriber needs to receive the update [default: free]')
            [CompletionResult]::new('--rollout-percent', '--rollout-percent', [CompletionResultType]::ParameterName, 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--no-cascade', '--no-cascade', [CompletionResultType]::ParameterName, 'Only the exact --target-prefix path, not the agents below it')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;rollback' {
            [CompletionResult]::new('--target-orch', '--target-orch', [CompletionResultType]::ParameterName, 'Only this ORCH (its raw id or its orch_ hash)')
            [CompletionResult]::new('--target-prefix', '--target-prefix', [CompletionResultType]::ParameterName, 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)')
            [CompletionResult]::new('--tier', '--tier', [CompletionResultType]::ParameterName, 'Tier a subscriber needs to receive the update [default: free]')
            [CompletionResult]::new('--rollout-percent', '--rollout-percent', [CompletionResultType]::ParameterName, 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--no-cascade', '--no-cascade', [CompletionResultType]::ParameterName, 'Only the exact --target-prefix path, not the agents below it')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;list' {
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'How many updates to show, newest first')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;status' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;widen' {
            [CompletionResult]::new('--rollout-percent', '--rollout-percent', [CompletionResultType]::ParameterName, 'New rollout percentage, above the current one (100 reaches every targeted ORCH); `--percent` is an older name')
            [CompletionResult]::new('--percent', '--percent', [CompletionResultType]::ParameterName, 'New rollout percentage, above the current one (100 reaches every targeted ORCH); `--percent` is an older name')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor base URL [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;publish;help' {
            [CompletionResult]::new('prompt-tweak', 'prompt-tweak', [CompletionResultType]::ParameterValue, 'Publish a new default prompt (prompt_tweak)')
            [CompletionResult]::new('model-tweak', 'model-tweak', [CompletionResultType]::ParameterValue, 'Publish a new default model (model_tweak)')
            [CompletionResult]::new('json-patch', 'json-patch', [CompletionResultType]::ParameterValue, 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)')
            [CompletionResult]::new('yaml-graft', 'yaml-graft', [CompletionResultType]::ParameterValue, 'Publish YAML to deep-merge into the agents'' config (yaml_graft)')
            [CompletionResult]::new('notice', 'notice', [CompletionResultType]::ParameterValue, 'Publish a message the agents log (notice)')
            [CompletionResult]::new('rollback', 'rollback', [CompletionResultType]::ParameterValue, 'Undo an earlier update where it was applied, keeping later updates (rollback)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the newest updates with their delivery and ack counts')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors')
            [CompletionResult]::new('widen', 'widen', [CompletionResultType]::ParameterValue, 'Raise an update''s rollout percentage; newly admitted agents receive it at once')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;publish;help;prompt-tweak' {
            break
        }
        'phoenix;publish;help;model-tweak' {
            break
        }
        'phoenix;publish;help;json-patch' {
            break
        }
        'phoenix;publish;help;yaml-graft' {
            break
        }
        'phoenix;publish;help;notice' {
            break
        }
        'phoenix;publish;help;rollback' {
            break
        }
        'phoenix;publish;help;list' {
            break
        }
        'phoenix;publish;help;status' {
            break
        }
        'phoenix;publish;help;widen' {
            break
        }
        'phoenix;publish;help;help' {
            break
        }
        'phoenix;subscribe' {
            [CompletionResult]::new('--orch-id', '--orch-id', [CompletionResultType]::ParameterName, 'Raw ORCH id (targeting matches it or its orch_ hash)')
            [CompletionResult]::new('--agent-path', '--agent-path', [CompletionResultType]::ParameterName, 'Agent path such as code-gen/rust (targeting prefixes match whole segments)')
            [CompletionResult]::new('--state', '--state', [CompletionResultType]::ParameterName, 'State file [default: <data dir>/learning/<orch id>.json]')
            [CompletionResult]::new('--exec', '--exec', [CompletionResultType]::ParameterName, 'Shell command run after each applied update, with the new state JSON on stdin')
            [CompletionResult]::new('--exec-timeout', '--exec-timeout', [CompletionResultType]::ParameterName, 'Kill an --exec command still running after this long')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Distributor WebSocket URL [default: $PULSE_DISTRIBUTOR_URL or ws://127.0.0.1:5003/subscribe]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--premium-key', '--premium-key', [CompletionResultType]::ParameterName, 'Key that unlocks premium-tier updates, sent in hello [default: $X402_PREMIUM_KEY]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'This ORCH''s agent token, sent in hello and as the heartbeats'' bearer (issued by `phoenix agents token ORCH_ID`; required by a distributor off loopback) [default: $PHOENIX_AGENT_TOKEN]')
            [CompletionResult]::new('--telemetrist-url', '--telemetrist-url', [CompletionResultType]::ParameterName, 'Collector that receives heartbeats [default: $TELEMETRIST_URL or http://127.0.0.1:5002]')
            [CompletionResult]::new('--heartbeat-interval', '--heartbeat-interval', [CompletionResultType]::ParameterName, 'Time between heartbeats, e.g. 30s or 5m [default: $ORCH_SLAVE_SYNC_INTERVAL seconds, 300]')
            [CompletionResult]::new('--template-version', '--template-version', [CompletionResultType]::ParameterName, 'Agent template version reported in heartbeats')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--no-heartbeat', '--no-heartbeat', [CompletionResultType]::ParameterName, 'Send no heartbeats to the collector')
            [CompletionResult]::new('--master-mode', '--master-mode', [CompletionResultType]::ParameterName, 'Report master mode in heartbeats')
            [CompletionResult]::new('--once', '--once', [CompletionResultType]::ParameterName, 'Apply the pending updates, then exit (no heartbeats); exit code 3 if the distributor is unreachable')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Print the overrides, config, last update, last error and history of a state file')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;subscribe;show' {
            [CompletionResult]::new('--state', '--state', [CompletionResultType]::ParameterName, 'State file to read')
            [CompletionResult]::new('--orch-id', '--orch-id', [CompletionResultType]::ParameterName, 'Read the default state file of this ORCH id')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'Most history entries listed, newest first')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--config-json', '--config-json', [CompletionResultType]::ParameterName, 'Print the config as pretty JSON instead of YAML')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;subscribe;help' {
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Print the overrides, config, last update, last error and history of a state file')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;subscribe;help;show' {
            break
        }
        'phoenix;subscribe;help;help' {
            break
        }
        'phoenix;redact' {
            [CompletionResult]::new('--session', '--session', [CompletionResultType]::ParameterName, 'Session whose pseudonyms to reuse [default: a new random session, printed in the summary]')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'What the input holds')
            [CompletionResult]::new('--vault', '--vault', [CompletionResultType]::ParameterName, 'Vault file [default: $PHOENIX_VAULT_PATH or <home>/vault.db]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--reveal', '--reveal', [CompletionResultType]::ParameterName, 'Map de-identified input back to the originals with the vault (needs --session)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;telemetrist' {
            [CompletionResult]::new('--source', '--source', [CompletionResultType]::ParameterName, 'Directory of completed conversations [default: $PHOENIX_TELEMETRIST_SOURCE]')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Seconds between two cycles [default: $PHOENIX_TELEMETRIST_INTERVAL or 300]')
            [CompletionResult]::new('--session', '--session', [CompletionResultType]::ParameterName, 'Pseudonym session for every conversation and OTLP record [default: each conversation''s own id; OTLP: see below]')
            [CompletionResult]::new('--batch-size', '--batch-size', [CompletionResultType]::ParameterName, 'Conversations per request')
            [CompletionResult]::new('--retries', '--retries', [CompletionResultType]::ParameterName, 'Retries per request on 429, 5xx or an unreachable collector')
            [CompletionResult]::new('--otlp-listen', '--otlp-listen', [CompletionResultType]::ParameterName, 'Serve OTLP/HTTP (POST /v1/traces, /v1/logs) on this address, e.g. 127.0.0.1:4318: spans and logs are redacted, spooled and forwarded to the collector')
            [CompletionResult]::new('--otlp-spool-limit-mb', '--otlp-spool-limit-mb', [CompletionResultType]::ParameterName, 'MiB of OTLP batches not yet sent past which new OTLP requests get 503')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--once', '--once', [CompletionResultType]::ParameterName, 'Run one cycle and exit (for cron and tests)')
            [CompletionResult]::new('--quarantine', '--quarantine', [CompletionResultType]::ParameterName, 'List the quarantined conversations and OTLP batches and exit')
            [CompletionResult]::new('--requeue-quarantined', '--requeue-quarantined', [CompletionResultType]::ParameterName, 'Move the quarantined conversations and OTLP batches back to the spool and exit; the next run sends them')
            [CompletionResult]::new('--insecure-no-auth', '--insecure-no-auth', [CompletionResultType]::ParameterName, 'Serve --otlp-listen on a non-loopback address, where anyone who reaches it can send through this edge''s collector credentials')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;export' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Dataset format')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Only conversations completed at or after this time: RFC 3339, Unix seconds, or an age such as 12h or 7d')
            [CompletionResult]::new('--min-score', '--min-score', [CompletionResultType]::ParameterName, 'Only conversations with a score of at least S (unscored ones are left out)')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the JSONL to FILE (a temporary file renamed into place when complete) instead of stdout')
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Write the JSONL to FILE (a temporary file renamed into place when complete) instead of stdout')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'Collector database [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'The collector''s PostgreSQL database (postgres://USER:PASSWORD@HOST:PORT/DB) [default: $PHOENIX_DATABASE_URL or [store] url]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;propose' {
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Number of workers, each asking the LLM for one proposal')
            [CompletionResult]::new('--n', '--n', [CompletionResultType]::ParameterName, 'Number of workers, each asking the LLM for one proposal')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'Most workers asking the LLM at the same time [default: N, at most 8]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Deadline of one attempt of one worker (also of the ranking)')
            [CompletionResult]::new('--retries', '--retries', [CompletionResultType]::ParameterName, 'Extra attempts for a worker that errors, times out, panics or answers garbage')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'LLM model the workers and the ranking use [default: $PHOENIX_LLM_MODEL]')
            [CompletionResult]::new('--collector-url', '--collector-url', [CompletionResultType]::ParameterName, 'Collector to read the insight from [default: $TELEMETRIST_URL or http://127.0.0.1:5002]')
            [CompletionResult]::new('--publish-best', '--publish-best', [CompletionResultType]::ParameterName, 'Publish the best proposal carrying this update type through the distributor (implies --rank unless --pick)')
            [CompletionResult]::new('--pick', '--pick', [CompletionResultType]::ParameterName, 'Publish this worker''s proposal instead of the best-ranked one')
            [CompletionResult]::new('--distributor-url', '--distributor-url', [CompletionResultType]::ParameterName, 'Distributor to publish to [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]')
            [CompletionResult]::new('--admin-token', '--admin-token', [CompletionResultType]::ParameterName, 'Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]')
            [CompletionResult]::new('--target-orch', '--target-orch', [CompletionResultType]::ParameterName, 'Only this ORCH (its raw id or its orch_ hash)')
            [CompletionResult]::new('--target-prefix', '--target-prefix', [CompletionResultType]::ParameterName, 'Only agents at this path and below it, segment-wise (code-gen reaches code-gen/rust)')
            [CompletionResult]::new('--tier', '--tier', [CompletionResultType]::ParameterName, 'Tier a subscriber needs to receive the update [default: free]')
            [CompletionResult]::new('--rollout-percent', '--rollout-percent', [CompletionResultType]::ParameterName, 'Start with this share of ORCHs (1-100); raise it later with `phoenix publish widen`')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--context-from-insights', '--context-from-insights', [CompletionResultType]::ParameterName, 'Ground the seed in the collector''s latest insight (GET /insights)')
            [CompletionResult]::new('--rank', '--rank', [CompletionResultType]::ParameterName, 'Ask the LLM for a ranked synthesis of the distinct proposals, with reasons')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Publish without asking for confirmation (required when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Publish without asking for confirmation (required when stdin is not a terminal)')
            [CompletionResult]::new('--no-cascade', '--no-cascade', [CompletionResultType]::ParameterName, 'Only the exact --target-prefix path, not the agents below it')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;telemetry' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('query', 'query', [CompletionResultType]::ParameterValue, 'Show stored records, newest first')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;telemetry;query' {
            [CompletionResult]::new('--kind', '--kind', [CompletionResultType]::ParameterName, 'Only this kind')
            [CompletionResult]::new('--level', '--level', [CompletionResultType]::ParameterName, 'Only this level')
            [CompletionResult]::new('--agent-prefix', '--agent-prefix', [CompletionResultType]::ParameterName, 'Only agents at or below this path')
            [CompletionResult]::new('--orch', '--orch', [CompletionResultType]::ParameterName, 'Only this ORCH (raw id or orch_ hash)')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'At or after: Unix seconds, RFC 3339, or an age like 2h')
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'Before: Unix seconds, RFC 3339, or an age like 30m')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'Most records to show')
            [CompletionResult]::new('--cursor', '--cursor', [CompletionResultType]::ParameterName, 'Continue after a previous page (its next_cursor)')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN; for conversations $PHOENIX_TELEMETRY_STREAM_KEY first]')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up on one request after this long')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;telemetry;help' {
            [CompletionResult]::new('query', 'query', [CompletionResultType]::ParameterValue, 'Show stored records, newest first')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;telemetry;help;query' {
            break
        }
        'phoenix;telemetry;help;help' {
            break
        }
        'phoenix;config' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Print every setting, its value (secrets masked) and its source')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;config;show' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;config;help' {
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Print every setting, its value (secrets masked) and its source')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;config;help;show' {
            break
        }
        'phoenix;config;help;help' {
            break
        }
        'phoenix;agents' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;agents;token' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;agents;help' {
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;agents;help;token' {
            break
        }
        'phoenix;agents;help;help' {
            break
        }
        'phoenix;completions' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'Write the completions of every supported shell into this directory instead')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;man' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'Write phoenix.1 and one page per subcommand into this directory instead of printing phoenix.1')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;spawn-agent' {
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'What the agent does; the LLM writes its code from this')
            [CompletionResult]::new('--description', '--description', [CompletionResultType]::ParameterName, 'What the agent does; the LLM writes its code from this')
            [CompletionResult]::new('--tier', '--tier', [CompletionResultType]::ParameterName, 'free = public repository; paid and enterprise = private')
            [CompletionResult]::new('--max-repairs', '--max-repairs', [CompletionResultType]::ParameterName, 'Corrections the LLM may make after compiler or test errors')
            [CompletionResult]::new('--forge', '--forge', [CompletionResultType]::ParameterName, 'Where agent repositories live [default: $PHOENIX_FORGE or local]')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]')
            [CompletionResult]::new('--api-url', '--api-url', [CompletionResultType]::ParameterName, 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--no-llm', '--no-llm', [CompletionResultType]::ParameterName, 'Scaffold a documented placeholder instead of asking the LLM (marked in agent.json)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Replace the main branch of an existing repository of that name')
            [CompletionResult]::new('--pr', '--pr', [CompletionResultType]::ParameterName, 'Push the scaffold to a branch and open a pull request instead of pushing to main')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;evolve-playbook' {
            [CompletionResult]::new('--repo', '--repo', [CompletionResultType]::ParameterName, 'Agent repository')
            [CompletionResult]::new('--note', '--note', [CompletionResultType]::ParameterName, 'What changes and why; appended to the playbook''s `updates`')
            [CompletionResult]::new('--metric', '--metric', [CompletionResultType]::ParameterName, 'A telemetry metric to record in the playbook (repeatable)')
            [CompletionResult]::new('--collector-url', '--collector-url', [CompletionResultType]::ParameterName, 'Collector for --metrics-from-collector [default: $TELEMETRIST_URL]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up waiting for CI, approval and the merge after this long')
            [CompletionResult]::new('--poll', '--poll', [CompletionResultType]::ParameterName, 'First poll interval while waiting; doubles up to 1 minute')
            [CompletionResult]::new('--forge', '--forge', [CompletionResultType]::ParameterName, 'Where agent repositories live [default: $PHOENIX_FORGE or local]')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]')
            [CompletionResult]::new('--api-url', '--api-url', [CompletionResultType]::ParameterName, 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--metrics-from-collector', '--metrics-from-collector', [CompletionResultType]::ParameterName, 'Also record the agent''s figures from the collector''s analysis (records, error rate, mean and p95 of numeric fields)')
            [CompletionResult]::new('--no-wait', '--no-wait', [CompletionResultType]::ParameterName, 'Open (or find) the pull request and return without waiting for CI or approval')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('approve', 'approve', [CompletionResultType]::ParameterValue, 'Approve a pull request''s current head commit (local forge)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show a pull request: state, CI of its head, approvals')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;evolve-playbook;approve' {
            [CompletionResult]::new('--repo', '--repo', [CompletionResultType]::ParameterName, 'Agent repository')
            [CompletionResult]::new('--by', '--by', [CompletionResultType]::ParameterName, 'Who approves (recorded with the approval)')
            [CompletionResult]::new('--forge', '--forge', [CompletionResultType]::ParameterName, 'Where agent repositories live [default: $PHOENIX_FORGE or local]')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]')
            [CompletionResult]::new('--api-url', '--api-url', [CompletionResultType]::ParameterName, 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;evolve-playbook;status' {
            [CompletionResult]::new('--repo', '--repo', [CompletionResultType]::ParameterName, 'Agent repository')
            [CompletionResult]::new('--by', '--by', [CompletionResultType]::ParameterName, 'Who approves (recorded with the approval)')
            [CompletionResult]::new('--forge', '--forge', [CompletionResultType]::ParameterName, 'Where agent repositories live [default: $PHOENIX_FORGE or local]')
            [CompletionResult]::new('--org', '--org', [CompletionResultType]::ParameterName, 'GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]')
            [CompletionResult]::new('--api-url', '--api-url', [CompletionResultType]::ParameterName, 'GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;evolve-playbook;help' {
            [CompletionResult]::new('approve', 'approve', [CompletionResultType]::ParameterValue, 'Approve a pull request''s current head commit (local forge)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show a pull request: state, CI of its head, approvals')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;evolve-playbook;help;approve' {
            break
        }
        'phoenix;evolve-playbook;help;status' {
            break
        }
        'phoenix;evolve-playbook;help;help' {
            break
        }
        'phoenix;bench' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('ingest', 'ingest', [CompletionResultType]::ParameterValue, 'Ingest throughput against this machine''s HTTP and storage ceilings, and /analyze latency')
            [CompletionResult]::new('query', 'query', [CompletionResultType]::ParameterValue, 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event')
            [CompletionResult]::new('dashboard', 'dashboard', [CompletionResultType]::ParameterValue, 'Web dashboard: every page''s latency over a store filled with millions of events, and the CPU an open live page costs')
            [CompletionResult]::new('fanout', 'fanout', [CompletionResultType]::ParameterValue, 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber')
            [CompletionResult]::new('pii', 'pii', [CompletionResultType]::ParameterValue, 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s')
            [CompletionResult]::new('otlp', 'otlp', [CompletionResultType]::ParameterValue, 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector')
            [CompletionResult]::new('abuse', 'abuse', [CompletionResultType]::ParameterValue, 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;bench;ingest' {
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Measured time of each load scenario')
            [CompletionResult]::new('--warmup', '--warmup', [CompletionResultType]::ParameterName, 'Unmeasured load before each measurement')
            [CompletionResult]::new('--connections', '--connections', [CompletionResultType]::ParameterName, 'Keep-alive connections for GET /health and single-event POST /ingest')
            [CompletionResult]::new('--batch-connections', '--batch-connections', [CompletionResultType]::ParameterName, 'Keep-alive connections for batch POST /ingest')
            [CompletionResult]::new('--batch-size', '--batch-size', [CompletionResultType]::ParameterName, 'Records per NDJSON batch request')
            [CompletionResult]::new('--storage-rows', '--storage-rows', [CompletionResultType]::ParameterName, 'Rows the raw storage ceiling writes (SQLite: in one transaction; PostgreSQL: by COPY, a batch per transaction)')
            [CompletionResult]::new('--analyze-runs', '--analyze-runs', [CompletionResultType]::ParameterName, 'Timed POST /analyze calls over 5000 records')
            [CompletionResult]::new('--rounds', '--rounds', [CompletionResultType]::ParameterName, 'Repeat the load and storage scenarios this many times and report medians')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Run on this PostgreSQL server instead of SQLite, in a scratch database made and dropped by the run')
            [CompletionResult]::new('--nats-url', '--nats-url', [CompletionResultType]::ParameterName, 'Ingest through this NATS JetStream into --database-url (the collector cluster''s path), against raw JetStream publish and raw COPY ceilings; scratch stream deleted by the run')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;bench;query' {
            [CompletionResult]::new('--events', '--events', [CompletionResultType]::ParameterName, 'Events the scratch store is filled with before the queries')
            [CompletionResult]::new('--requests', '--requests', [CompletionResultType]::ParameterName, 'Timed requests per query, one at a time on one keep-alive connection')
            [CompletionResult]::new('--query-budget', '--query-budget', [CompletionResultType]::ParameterName, 'A query stops before --requests once its timed requests have taken this long')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Run on this PostgreSQL server instead of SQLite, in a scratch database made (and dropped) by the run')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--keep', '--keep', [CompletionResultType]::ParameterName, 'Leave the filled scratch store behind and say where it is')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;bench;dashboard' {
            [CompletionResult]::new('--events', '--events', [CompletionResultType]::ParameterName, 'Events the scratch store is filled with before the pages are read')
            [CompletionResult]::new('--requests', '--requests', [CompletionResultType]::ParameterName, 'Timed GETs per page (after 3 untimed ones) on one keep-alive connection, and live-stream connections timed to their first event')
            [CompletionResult]::new('--streams', '--streams', [CompletionResultType]::ParameterName, 'Live Fleet pages (GET /ui/stream?page=fleet) open at once while their CPU is measured')
            [CompletionResult]::new('--stream-seconds', '--stream-seconds', [CompletionResultType]::ParameterName, 'Seconds of process CPU measured without streams, then as long with --streams open')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--keep', '--keep', [CompletionResultType]::ParameterName, 'Leave the filled scratch store behind and say where it is')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;bench;fanout' {
            [CompletionResult]::new('--subscribers', '--subscribers', [CompletionResultType]::ParameterName, 'Subscribers connected at once (each needs an open file here and one in the distributor)')
            [CompletionResult]::new('--publishes', '--publishes', [CompletionResultType]::ParameterName, 'Updates published one at a time, each acked by every subscriber before the next')
            [CompletionResult]::new('--connect-parallelism', '--connect-parallelism', [CompletionResultType]::ParameterName, 'WebSocket handshakes in flight at once while connecting')
            [CompletionResult]::new('--settle', '--settle', [CompletionResultType]::ParameterName, 'Idle time after the last handshake before the distributor''s memory is sampled')
            [CompletionResult]::new('--nodes', '--nodes', [CompletionResultType]::ParameterName, 'Distributor processes sharing one update log; subscribers are spread over them and updates published on the first (needs --database-url)')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Keep the update log on this PostgreSQL server, in a scratch database made and dropped by the run')
            [CompletionResult]::new('--nats-url', '--nats-url', [CompletionResultType]::ParameterName, 'Ring the nodes'' NATS doorbell on this server after each publish (without it they poll the log)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;bench;pii' {
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'Seed of the generated corpus (the same seed gives the same corpus)')
            [CompletionResult]::new('--conversations', '--conversations', [CompletionResultType]::ParameterName, 'Conversations in the corpus (2–5 messages each)')
            [CompletionResult]::new('--min-time', '--min-time', [CompletionResultType]::ParameterName, 'Keep redacting the corpus for at least this long to measure throughput')
            [CompletionResult]::new('--dump-corpus', '--dump-corpus', [CompletionResultType]::ParameterName, 'Also write the corpus with its labels as JSON lines to this file')
            [CompletionResult]::new('--session-mb', '--session-mb', [CompletionResultType]::ParameterName, 'Also redact texts of these sizes (MB) in one session each, for throughput on long input (`--session-mb ''''` skips it)')
            [CompletionResult]::new('--locale-conversations', '--locale-conversations', [CompletionResultType]::ParameterName, 'Conversations of the multi-locale corpus (en_US, en_GB, de_DE, fr_FR, es_ES), scored on its tuning and its held-out values (0 skips it)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--examples', '--examples', [CompletionResultType]::ParameterName, 'Print examples of misses and false positives')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;bench;otlp' {
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Measured time of each scenario')
            [CompletionResult]::new('--warmup', '--warmup', [CompletionResultType]::ParameterName, 'Unmeasured load before each measurement')
            [CompletionResult]::new('--connections', '--connections', [CompletionResultType]::ParameterName, 'Keep-alive connections sending POST /v1/traces')
            [CompletionResult]::new('--spans-per-request', '--spans-per-request', [CompletionResultType]::ParameterName, 'Spans per OTLP request (GenAI chat, tool and embedding spans; a second scenario adds message content)')
            [CompletionResult]::new('--batch-connections', '--batch-connections', [CompletionResultType]::ParameterName, 'Keep-alive connections of the NDJSON batch POST /ingest it is compared with')
            [CompletionResult]::new('--batch-size', '--batch-size', [CompletionResultType]::ParameterName, 'Records per NDJSON batch request')
            [CompletionResult]::new('--health-connections', '--health-connections', [CompletionResultType]::ParameterName, 'Keep-alive connections of GET /health')
            [CompletionResult]::new('--storage-rows', '--storage-rows', [CompletionResultType]::ParameterName, 'Rows of the OTLP scenario the raw SQLite storage ceiling inserts in one transaction')
            [CompletionResult]::new('--rounds', '--rounds', [CompletionResultType]::ParameterName, 'Repeat the scenarios and the ceiling this many times and report medians')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;bench;abuse' {
            [CompletionResult]::new('--scenario', '--scenario', [CompletionResultType]::ParameterName, 'Run only this scenario (repeat for several) [default: all of them]')
            [CompletionResult]::new('--slow-clients', '--slow-clients', [CompletionResultType]::ParameterName, 'Slow clients connected when SIGTERM is sent (shutdown)')
            [CompletionResult]::new('--shutdown-timeout', '--shutdown-timeout', [CompletionResultType]::ParameterName, 'The server''s --shutdown-timeout, the deadline its exit is judged against (shutdown)')
            [CompletionResult]::new('--slowloris', '--slowloris', [CompletionResultType]::ParameterName, 'Connections trickling headers (slowloris; each needs an open file here and in the collector)')
            [CompletionResult]::new('--slowloris-duration', '--slowloris-duration', [CompletionResultType]::ParameterName, 'How long GET /health is timed under the slowloris (past the 10 s header timeout shows the cuts)')
            [CompletionResult]::new('--pings', '--pings', [CompletionResultType]::ParameterName, 'Pings the flooding subscriber tries to send (ping-flood)')
            [CompletionResult]::new('--bombs', '--bombs', [CompletionResultType]::ParameterName, 'Gzip bombs sent at once (gzip-bombs)')
            [CompletionResult]::new('--bomb-decoded-mib', '--bomb-decoded-mib', [CompletionResultType]::ParameterName, 'What each bomb inflates to, in MiB (gzip-bombs)')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print machine-readable JSON on stdout instead of tables')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Log only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'phoenix;bench;help' {
            [CompletionResult]::new('ingest', 'ingest', [CompletionResultType]::ParameterValue, 'Ingest throughput against this machine''s HTTP and storage ceilings, and /analyze latency')
            [CompletionResult]::new('query', 'query', [CompletionResultType]::ParameterValue, 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event')
            [CompletionResult]::new('dashboard', 'dashboard', [CompletionResultType]::ParameterValue, 'Web dashboard: every page''s latency over a store filled with millions of events, and the CPU an open live page costs')
            [CompletionResult]::new('fanout', 'fanout', [CompletionResultType]::ParameterValue, 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber')
            [CompletionResult]::new('pii', 'pii', [CompletionResultType]::ParameterValue, 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s')
            [CompletionResult]::new('otlp', 'otlp', [CompletionResultType]::ParameterValue, 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector')
            [CompletionResult]::new('abuse', 'abuse', [CompletionResultType]::ParameterValue, 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;bench;help;ingest' {
            break
        }
        'phoenix;bench;help;query' {
            break
        }
        'phoenix;bench;help;dashboard' {
            break
        }
        'phoenix;bench;help;fanout' {
            break
        }
        'phoenix;bench;help;pii' {
            break
        }
        'phoenix;bench;help;otlp' {
            break
        }
        'phoenix;bench;help;abuse' {
            break
        }
        'phoenix;bench;help;help' {
            break
        }
        'phoenix;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run Phoenix''s servers (the collector, or everything at once)')
            [CompletionResult]::new('ingest', 'ingest', [CompletionResultType]::ParameterValue, 'Send telemetry events (flags or NDJSON) or conversations (JSONL, redacted here) to the collector')
            [CompletionResult]::new('analyze', 'analyze', [CompletionResultType]::ParameterValue, 'Ask the collector for an insight over the latest telemetry')
            [CompletionResult]::new('insights', 'insights', [CompletionResultType]::ParameterValue, 'List the insights the collector has stored')
            [CompletionResult]::new('publish', 'publish', [CompletionResultType]::ParameterValue, 'Publish hot updates to subscribed agents, and follow their delivery')
            [CompletionResult]::new('subscribe', 'subscribe', [CompletionResultType]::ParameterValue, 'Run the agent-side learning pipeline: apply hot updates to a local state file')
            [CompletionResult]::new('redact', 'redact', [CompletionResultType]::ParameterValue, 'De-identify text or chat messages with session pseudonyms, or reveal them from the vault')
            [CompletionResult]::new('telemetrist', 'telemetrist', [CompletionResultType]::ParameterValue, 'Edge Telemetrist: pick up completed conversations, redact them here, spool and send them')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write fine-tuning datasets (TRL or OpenAI JSONL, SFT or DPO pairs) from stored conversations')
            [CompletionResult]::new('propose', 'propose', [CompletionResultType]::ParameterValue, 'Ask N concurrent LLM workers for improvement proposals (the hive), rank and publish them')
            [CompletionResult]::new('telemetry', 'telemetry', [CompletionResultType]::ParameterValue, 'Read stored telemetry')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Inspect the effective configuration')
            [CompletionResult]::new('agents', 'agents', [CompletionResultType]::ParameterValue, 'Issue agent credentials: the per-ORCH tokens subscribers and heartbeats present')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Generate shell completions')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Generate man pages')
            [CompletionResult]::new('spawn-agent', 'spawn-agent', [CompletionResultType]::ParameterValue, 'Create an agent repository from Phoenix''s template, with LLM-generated code')
            [CompletionResult]::new('evolve-playbook', 'evolve-playbook', [CompletionResultType]::ParameterValue, 'Evolve an agent''s playbook through a branch, a pull request, CI and approval')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure Phoenix''s throughput and latency on this machine')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'phoenix;help;serve' {
            [CompletionResult]::new('collector', 'collector', [CompletionResultType]::ParameterValue, 'Run the Vital Pulse telemetry collector')
            [CompletionResult]::new('distributor', 'distributor', [CompletionResultType]::ParameterValue, 'Run the Synaptic Pulse hot-update distributor (WebSocket fan-out to agents)')
            [CompletionResult]::new('all', 'all', [CompletionResultType]::ParameterValue, 'Run every service (collector and distributor) in one process on the embedded SQLite default')
            break
        }
        'phoenix;help;serve;collector' {
            break
        }
        'phoenix;help;serve;distributor' {
            break
        }
        'phoenix;help;serve;all' {
            break
        }
        'phoenix;help;ingest' {
            break
        }
        'phoenix;help;analyze' {
            break
        }
        'phoenix;help;insights' {
            break
        }
        'phoenix;help;publish' {
            [CompletionResult]::new('prompt-tweak', 'prompt-tweak', [CompletionResultType]::ParameterValue, 'Publish a new default prompt (prompt_tweak)')
            [CompletionResult]::new('model-tweak', 'model-tweak', [CompletionResultType]::ParameterValue, 'Publish a new default model (model_tweak)')
            [CompletionResult]::new('json-patch', 'json-patch', [CompletionResultType]::ParameterValue, 'Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)')
            [CompletionResult]::new('yaml-graft', 'yaml-graft', [CompletionResultType]::ParameterValue, 'Publish YAML to deep-merge into the agents'' config (yaml_graft)')
            [CompletionResult]::new('notice', 'notice', [CompletionResultType]::ParameterValue, 'Publish a message the agents log (notice)')
            [CompletionResult]::new('rollback', 'rollback', [CompletionResultType]::ParameterValue, 'Undo an earlier update where it was applied, keeping later updates (rollback)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the newest updates with their delivery and ack counts')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show one update: targeted, delivered, applied, rejected, skipped, and the errors')
            [CompletionResult]::new('widen', 'widen', [CompletionResultType]::ParameterValue, 'Raise an update''s rollout percentage; newly admitted agents receive it at once')
            break
        }
        'phoenix;help;publish;prompt-tweak' {
            break
        }
        'phoenix;help;publish;model-tweak' {
            break
        }
        'phoenix;help;publish;json-patch' {
            break
        }
        'phoenix;help;publish;yaml-graft' {
            break
        }
        'phoenix;help;publish;notice' {
            break
        }
        'phoenix;help;publish;rollback' {
            break
        }
        'phoenix;help;publish;list' {
            break
        }
        'phoenix;help;publish;status' {
            break
        }
        'phoenix;help;publish;widen' {
            break
        }
        'phoenix;help;subscribe' {
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Print the overrides, config, last update, last error and history of a state file')
            break
        }
        'phoenix;help;subscribe;show' {
            break
        }
        'phoenix;help;redact' {
            break
        }
        'phoenix;help;telemetrist' {
            break
        }
        'phoenix;help;export' {
            break
        }
        'phoenix;help;propose' {
            break
        }
        'phoenix;help;telemetry' {
            [CompletionResult]::new('query', 'query', [CompletionResultType]::ParameterValue, 'Show stored records, newest first')
            break
        }
        'phoenix;help;telemetry;query' {
            break
        }
        'phoenix;help;config' {
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Print every setting, its value (secrets masked) and its source')
            break
        }
        'phoenix;help;config;show' {
            break
        }
        'phoenix;help;agents' {
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Print the agent token of an ORCH (sent in its hello and on its heartbeats)')
            break
        }
        'phoenix;help;agents;token' {
            break
        }
        'phoenix;help;completions' {
            break
        }
        'phoenix;help;man' {
            break
        }
        'phoenix;help;spawn-agent' {
            break
        }
        'phoenix;help;evolve-playbook' {
            [CompletionResult]::new('approve', 'approve', [CompletionResultType]::ParameterValue, 'Approve a pull request''s current head commit (local forge)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show a pull request: state, CI of its head, approvals')
            break
        }
        'phoenix;help;evolve-playbook;approve' {
            break
        }
        'phoenix;help;evolve-playbook;status' {
            break
        }
        'phoenix;help;bench' {
            [CompletionResult]::new('ingest', 'ingest', [CompletionResultType]::ParameterValue, 'Ingest throughput against this machine''s HTTP and storage ceilings, and /analyze latency')
            [CompletionResult]::new('query', 'query', [CompletionResultType]::ParameterValue, 'Filtered GET /telemetry latency over a store filled with millions of events, and bytes per event')
            [CompletionResult]::new('dashboard', 'dashboard', [CompletionResultType]::ParameterValue, 'Web dashboard: every page''s latency over a store filled with millions of events, and the CPU an open live page costs')
            [CompletionResult]::new('fanout', 'fanout', [CompletionResultType]::ParameterValue, 'WebSocket fan-out: N subscribers, publish → applied-ack latency, distributor memory per subscriber')
            [CompletionResult]::new('pii', 'pii', [CompletionResultType]::ParameterValue, 'PII redaction: precision, recall and F2 per entity type on a generated corpus, and MB/s')
            [CompletionResult]::new('otlp', 'otlp', [CompletionResultType]::ParameterValue, 'OTLP/HTTP protobuf span ingest next to the NDJSON batch and /health rates of the same collector')
            [CompletionResult]::new('abuse', 'abuse', [CompletionResultType]::ParameterValue, 'Abuse: SIGTERM with slow clients, slowloris, a WebSocket ping flood and gzip bombs against child servers')
            break
        }
        'phoenix;help;bench;ingest' {
            break
        }
        'phoenix;help;bench;query' {
            break
        }
        'phoenix;help;bench;dashboard' {
            break
        }
        'phoenix;help;bench;fanout' {
            break
        }
        'phoenix;help;bench;pii' {
            break
        }
        'phoenix;help;bench;otlp' {
            break
        }
        'phoenix;help;bench;abuse' {
            break
        }
        'phoenix;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
