//! The `phoenix` binary: parse, set up logging, run the command, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use phoenix::cli::Cli;
use phoenix::cmd;

// The collector allocates per request and per record on every worker thread; mimalloc's
// thread-local free lists measured faster than glibc malloc under `phoenix bench ingest`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(cmd::report_usage_error(&e)),
    };
    let json = cli.global.json;
    cmd::init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cmd::exit::FAILED);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // A bare broken pipe (no context added) comes from writing our output after its
        // reader went away (`| head`): nothing to report. Network failures carry context.
        Err(err)
            if err.chain().count() == 1
                && err
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::from(141)
        }
        Err(err) => {
            // Causes can quote a server: shown, never interpreted by the terminal.
            let shown =
                |e: &dyn std::fmt::Display| phoenix::output::printable(&e.to_string()).into_owned();
            eprintln!("error: {}", shown(&err));
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {}", shown(cause));
            }
            if json && !phoenix::output::document_printed() {
                println!("{}", cmd::error_document(&err));
            }
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}

/// `phoenix analyze | head -5`: once the reader has gone, `println!` panics with a broken
/// pipe. That is not an error of ours: exit quietly, as a SIGPIPE-killed tool would (141).
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") && message.contains("failed printing to stdout") {
            std::process::exit(141);
        }
        default(info);
    }));
}
