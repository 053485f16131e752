//! {{name}}: {{description_comment}}
//!
//! Reads its input from the command line (or stdin when there is none), answers with the
//! generated behaviour, and reports its boot and exit to the telemetrist.

#![forbid(unsafe_code)]

mod generated;
mod template_agent;

use std::io::Read;
use std::time::Instant;

fn main() {
    let started = Instant::now();
    template_agent::log_telemetry("agent_boot", "info", &[("template_version", "{{template_version}}")]);

    let args: Vec<String> = std::env::args().skip(1).collect();
    let input = if args.is_empty() {
        let mut text = String::new();
        let _ = std::io::stdin().read_to_string(&mut text);
        text
    } else {
        args.join(" ")
    };
    let output = generated::run(&input);
    println!("{output}");

    let elapsed = started.elapsed().as_millis().to_string();
    template_agent::log_telemetry("agent_exit", "info", &[("duration_ms", &elapsed)]);
}
