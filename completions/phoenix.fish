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
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "ingest" -d 'Send telemetry events to the collector, from flags or NDJSON'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "analyze" -d 'Ask the collector for an insight over the latest telemetry'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "insights" -d 'List the insights the collector has stored'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "telemetry" -d 'Read stored telemetry'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "config" -d 'Inspect the effective configuration'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "completions" -d 'Generate shell completions'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "man" -d 'Generate man pages'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "bench" -d 'Measure Phoenix\'s throughput and latency on this machine'
complete -c phoenix -n "__fish_phoenix_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -f -a "collector" -d 'Run the Vital Pulse telemetry collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -f -a "all" -d 'Run every service in one process on the embedded SQLite default'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and not __fish_seen_subcommand_from collector all help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l bind -d 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l db -d 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l retention-days -d 'Delete telemetry older than this many days [default: keep everything]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l tls-cert -d 'Serve HTTPS with this PEM certificate chain (needs --tls-key)' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l tls-key -d 'Private key (PEM) for --tls-cert' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l insecure-no-auth -d 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from collector" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l bind -d 'Address to listen on [default: $TELEMETRIST_BIND or 127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l db -d 'SQLite database file [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l retention-days -d 'Delete telemetry older than this many days [default: keep everything]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l tls-cert -d 'Serve HTTPS with this PEM certificate chain (needs --tls-key)' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l tls-key -d 'Private key (PEM) for --tls-cert' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l insecure-no-auth -d 'Allow a non-loopback address without ingest tokens (anyone who can connect may write)'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from all" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "collector" -d 'Run the Vital Pulse telemetry collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "all" -d 'Run every service in one process on the embedded SQLite default'
complete -c phoenix -n "__fish_phoenix_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l kind -d 'Event kind (one event from flags), e.g. orch_heartbeat, skill_execution' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l level -d 'Level: trace, debug, info, notice, warn, error, critical, fatal' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l tag -d 'Tag (repeatable)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l payload -d 'Payload as a JSON document' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l orch-id -d 'Raw ORCH id (the collector stores only its keyed hash)' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l agent-path -d 'Agent path such as code-gen/rust' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l ts -d 'Event time in Unix seconds [default: the collector\'s clock]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -s f -l file -d 'NDJSON file of envelopes, one per line; `-` reads stdin' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l batch-size -d 'Records per request' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l retries -d 'Retries per request on 429, 5xx or an unreachable collector' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l url -d 'Collector base URL [default: $TELEMETRIST_URL or http://127.0.0.1:5002]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand ingest" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN]' -r
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
complete -c phoenix -n "__fish_phoenix_using_subcommand analyze" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN]' -r
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
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN]' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l ca-cert -d 'PEM certificate of a private CA to trust for HTTPS [default: $PHOENIX_CA_CERT]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l timeout -d 'Give up on one request after this long' -r
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l full -d 'Show every bullet and the statistics of each insight instead of one line each'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand insights" -s V -l version -d 'Print version'
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
complete -c phoenix -n "__fish_phoenix_using_subcommand telemetry; and __fish_seen_subcommand_from query" -l token -d 'Bearer token for a collector that requires one [default: $PHOENIX_INGEST_TOKEN]' -r
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
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest help" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest help" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest help" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest help" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest help" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest help" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest help" -f -a "ingest" -d 'Ingest throughput against this machine\'s HTTP and storage ceilings'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and not __fish_seen_subcommand_from ingest help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l config -d 'Config file [default: $PHOENIX_CONFIG, ./phoenix.toml, $XDG_CONFIG_HOME/phoenix/phoenix.toml]' -r -F
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -l json -d 'Print machine-readable JSON on stdout instead of tables'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -s v -l verbose -d 'More logging on stderr (-v info, -vv debug, -vvv trace); PHOENIX_LOG takes a filter'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -s q -l quiet -d 'Log only errors'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -s h -l help -d 'Print help'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from ingest" -s V -l version -d 'Print version'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "ingest" -d 'Ingest throughput against this machine\'s HTTP and storage ceilings'
complete -c phoenix -n "__fish_phoenix_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "serve" -d 'Run Phoenix\'s servers (the collector, or everything at once)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "ingest" -d 'Send telemetry events to the collector, from flags or NDJSON'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "analyze" -d 'Ask the collector for an insight over the latest telemetry'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "insights" -d 'List the insights the collector has stored'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "telemetry" -d 'Read stored telemetry'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "config" -d 'Inspect the effective configuration'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "completions" -d 'Generate shell completions'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "man" -d 'Generate man pages'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "bench" -d 'Measure Phoenix\'s throughput and latency on this machine'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and not __fish_seen_subcommand_from serve ingest analyze insights telemetry config completions man bench help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "collector" -d 'Run the Vital Pulse telemetry collector'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "all" -d 'Run every service in one process on the embedded SQLite default'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from telemetry" -f -a "query" -d 'Show stored records, newest first'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "show" -d 'Print every setting, its value (secrets masked) and its source'
complete -c phoenix -n "__fish_phoenix_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "ingest" -d 'Ingest throughput against this machine\'s HTTP and storage ceilings'
