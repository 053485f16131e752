//! Per-installation secret key files (the orch-hash key, the vault key): 32 random bytes as
//! hex, created once with 0600 permissions and read ever after.

use std::io::Write;
use std::path::Path;

/// The text of the key file at `path`, creating it with a fresh random key when missing.
///
/// Creation writes a temp file, fsyncs it and hard-links it into place: the link fails if
/// another process created the key meanwhile, and then both use that one.
pub fn read_or_create(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let key: [u8; 32] = rand::random();
    let text = format!("{}\n", hex::encode(key));
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
    drop(f);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Make the new directory entry durable too.
            if let Some(d) = dir.and_then(|d| std::fs::File::open(d).ok()) {
                let _ = d.sync_all();
            }
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.key");
        let first = read_or_create(&path).unwrap();
        assert_eq!(first.trim().len(), 64);
        assert_eq!(read_or_create(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
