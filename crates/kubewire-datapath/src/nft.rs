//! nftables transactions: a script given to `nft -f -`, which the kernel commits as one batch, so
//! packets see the old ruleset or the new one, never a mix. Each caller owns its own table and
//! renders the script; this only runs it in the calling thread's network namespace.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(std::io::Error),
    #[error("nft -f - failed: {0}")]
    Failed(String),
}

/// Runs `nft -f -` with `script` from the calling thread (so in its network namespace).
pub fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(script.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
