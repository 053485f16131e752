//! The `--exec` hook: a shell command run after each applied update so the real agent can
//! reload. It gets the new state JSON on stdin and the state file's path in
//! `PHOENIX_STATE_FILE`; its output goes to stderr so it never mixes with ours on stdout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::core::updates::UpdateEnvelope;

/// Runs `command` with `sh -c`; says why it failed, if it did. Killed after `timeout`.
pub async fn run_hook(
    command: &str,
    state_file: &Path,
    state_json: &[u8],
    update: &UpdateEnvelope,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("PHOENIX_STATE_FILE", state_file)
        .env("PHOENIX_UPDATE_ID", &update.update_id)
        .env("PHOENIX_UPDATE_TYPE", update.update_type.as_str())
        .env("PHOENIX_UPDATE_SEQ", update.seq.to_string())
        .stdin(Stdio::piped())
        .stdout(stdout_to_stderr())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `sh -c {command}`: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = state_json.to_vec();
    // Written concurrently with the wait: a hook that does not read stdin must not block us,
    // and one that does must not deadlock on a full pipe.
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| format!("waiting for the hook: {e}"))?,
        Err(_) => {
            let _ = child.kill().await;
            feeder.abort();
            return Err(format!(
                "the hook did not finish within {}",
                humantime::format_duration(timeout)
            ));
        }
    };
    feeder.abort();
    if status.success() {
        Ok(())
    } else {
        Err(format!("the hook exited with {status}"))
    }
}

#[cfg(unix)]
fn stdout_to_stderr() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    }
}

#[cfg(not(unix))]
fn stdout_to_stderr() -> Stdio {
    Stdio::null()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shared::tier::Tier;
    use crate::core::updates::UpdateType;

    fn update() -> UpdateEnvelope {
        UpdateEnvelope {
            update_id: "u9".into(),
            seq: 9,
            ts_unix: 0,
            target_orch: None,
            target_agent_prefix: None,
            cascade: true,
            update_type: UpdateType::Notice,
            tier_required: Tier::Free,
            payload: serde_json::json!({"message": "m"}),
            rollout_percent: None,
        }
    }

    #[tokio::test]
    async fn the_hook_sees_the_state_and_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = format!(
            "cat > {0}; echo \"$PHOENIX_STATE_FILE $PHOENIX_UPDATE_ID $PHOENIX_UPDATE_TYPE $PHOENIX_UPDATE_SEQ\" >> {0}",
            out.display()
        );
        run_hook(
            &cmd,
            Path::new("/s.json"),
            b"{\"a\":1}\n",
            &update(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"a\":1}\n/s.json u9 notice 9\n"
        );
    }

    #[tokio::test]
    async fn failures_and_hangs_are_reported() {
        let err = run_hook(
            "exit 3",
            Path::new("/s"),
            b"{}",
            &update(),
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
        assert!(err.contains("exit status: 3"), "{err}");
        // Ignoring a large stdin does not block.
        let big = vec![b' '; 1 << 20];
        run_hook(
            "true",
            Path::new("/s"),
            &big,
            &update(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let err = run_hook(
            "exec sleep 30",
            Path::new("/s"),
            b"{}",
            &update(),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
