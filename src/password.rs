//! Reading a password from where the config says it is: inline, the first line of a file, or the
//! first line a program prints (an argument list, run without a shell). The value is never
//! logged; errors name the source only.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::child::{Caps, run_capture};
use crate::config::PasswordSource;
use crate::secret::Secret;

/// Longest password a file or command may yield.
const MAX_PASSWORD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("password: {0}")]
pub struct PasswordError(String);

/// Reads the password from its source. The value is never logged; errors name the source only.
pub async fn resolve(
    source: &PasswordSource,
    timeout: Duration,
) -> Result<Secret<String>, PasswordError> {
    match source {
        PasswordSource::Inline(p) => Ok(p.clone()),
        PasswordSource::File(path) => {
            // Checked on the open file: the one trust rule for a file holding a secret.
            let cannot =
                |e: std::io::Error| PasswordError(format!("cannot read {}: {e}", path.display()));
            let mut f = tokio::fs::File::open(path).await.map_err(cannot)?;
            let meta = f.metadata().await.map_err(cannot)?;
            crate::trust::secret_file("password file", path, &meta, true)
                .map_err(|e| PasswordError(e.to_string()))?;
            let mut text = Secret::new(Vec::new());
            (&mut f)
                .take(MAX_PASSWORD as u64 + 2)
                .read_to_end(text.expose_mut())
                .await
                .map_err(cannot)?;
            first_line(text.expose()).ok_or_else(|| {
                PasswordError(format!("{} is empty or not UTF-8 text", path.display()))
            })
        }
        PasswordSource::Command(argv) => {
            let err = |why: String| PasswordError(format!("password_command {:?}: {why}", argv[0]));
            // Its own process group, ended whole on timeout: `sh -c 'pass show x | head -1'`
            // leaves no `pass` or `gpg` behind. Its stderr is the user's to see.
            let caps = Caps {
                stdout: MAX_PASSWORD,
                stderr: None,
            };
            let ran = run_capture(argv, timeout, caps)
                .await
                .map_err(|e| err(e.to_string()))?;
            if !ran.status.success() {
                return Err(err(format!("it failed ({})", ran.status)));
            }
            first_line(ran.stdout.expose()).ok_or_else(|| err("it printed no password".into()))
        }
    }
}

fn first_line(bytes: &[u8]) -> Option<Secret<String>> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() || line.len() > MAX_PASSWORD {
        return None;
    }
    std::str::from_utf8(line)
        .ok()
        .map(|s| Secret::new(s.to_string()))
}
