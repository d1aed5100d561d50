//! The CLI's side of the control socket.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context as _};

use super::Reply;

/// Sends `command` to the daemon at `socket` and returns its answer's body.
pub fn request(socket: &Path, command: &str) -> anyhow::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).map_err(|err| {
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            return anyhow!(
                "cannot reach the tandem daemon at {}: {err}; the control socket is for root, \
                 the daemon's user and group `tandem`: use sudo, or join the group",
                socket.display()
            );
        }
        anyhow!(
            "cannot reach the tandem daemon at {}: {err}; is `tandem run` running on this node? \
             (pass --config to read the socket path from the node's config, or --socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the daemon's answer")?;
    let reply: Reply = serde_json::from_str(&line)
        .with_context(|| format!("the daemon's answer is not valid JSON: {line:?}"))?;
    match reply {
        Reply::Ok { body } => Ok(body),
        Reply::Error { message } => Err(anyhow!("{message}")),
    }
}
