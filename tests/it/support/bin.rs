//! The real `phoenix` binary, isolated from the developer's configuration: a clean
//! environment, `home` as HOME, `home/data` as PHOENIX_HOME and `home/config` as
//! XDG_CONFIG_HOME, stdin closed.

use std::path::Path;
use std::process::{Command, Stdio};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

/// The binary as a blocking command.
pub fn phoenix(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("PHOENIX_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .current_dir(home)
        .stdin(Stdio::null());
    cmd
}

/// The binary as an async command, killed if the test drops it.
pub fn phoenix_async(home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::from(phoenix(home));
    cmd.kill_on_drop(true);
    cmd
}
