
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
            cand ingest 'Send telemetry events to the collector, from flags or NDJSON'
            cand analyze 'Ask the collector for an insight over the latest telemetry'
            cand insights 'List the insights the collector has stored'
            cand telemetry 'Read stored telemetry'
            cand config 'Inspect the effective configuration'
            cand completions 'Generate shell completions'
            cand man 'Generate man pages'
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
            cand all 'Run every service in one process on the embedded SQLite default'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;serve;collector'= {
            cand --bind 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]'
            cand --db 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]'
            cand --retention-days 'Delete telemetry older than this many days [default: keep everything]'
            cand --tls-cert 'Serve HTTPS with this PEM certificate chain (needs --tls-key)'
            cand --tls-key 'Private key (PEM) for --tls-cert'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --insecure-no-auth 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)'
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
            cand --db 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]'
            cand --retention-days 'Delete telemetry older than this many days [default: keep everything]'
            cand --tls-cert 'Serve HTTPS with this PEM certificate chain (needs --tls-key)'
            cand --tls-key 'Private key (PEM) for --tls-cert'
            cand --config 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]'
            cand --insecure-no-auth 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)'
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
            cand all 'Run every service in one process on the embedded SQLite default'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;serve;help;collector'= {
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
            cand --batch-size 'Records per request'
            cand --retries 'Retries per request on 429, 5xx or an unreachable collector'
            cand --url 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]'
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN]'
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
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN]'
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
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN]'
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
            cand --token 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN]'
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
            cand ingest 'Ingest throughput against this machine''s HTTP and storage ceilings'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;bench;ingest'= {
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
        &'phoenix;bench;help'= {
            cand ingest 'Ingest throughput against this machine''s HTTP and storage ceilings'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;bench;help;ingest'= {
        }
        &'phoenix;bench;help;help'= {
        }
        &'phoenix;help'= {
            cand serve 'Run Phoenix''s servers (the collector, or everything at once)'
            cand ingest 'Send telemetry events to the collector, from flags or NDJSON'
            cand analyze 'Ask the collector for an insight over the latest telemetry'
            cand insights 'List the insights the collector has stored'
            cand telemetry 'Read stored telemetry'
            cand config 'Inspect the effective configuration'
            cand completions 'Generate shell completions'
            cand man 'Generate man pages'
            cand bench 'Measure Phoenix''s throughput and latency on this machine'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'phoenix;help;serve'= {
            cand collector 'Run the Vital Pulse telemetry collector'
            cand all 'Run every service in one process on the embedded SQLite default'
        }
        &'phoenix;help;serve;collector'= {
        }
        &'phoenix;help;serve;all'= {
        }
        &'phoenix;help;ingest'= {
        }
        &'phoenix;help;analyze'= {
        }
        &'phoenix;help;insights'= {
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
        &'phoenix;help;completions'= {
        }
        &'phoenix;help;man'= {
        }
        &'phoenix;help;bench'= {
            cand ingest 'Ingest throughput against this machine''s HTTP and storage ceilings'
        }
        &'phoenix;help;bench;ingest'= {
        }
        &'phoenix;help;help'= {
        }
    ]
    $completions[$command]
}
