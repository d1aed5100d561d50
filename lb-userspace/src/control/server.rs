//! The daemon's side of the control socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Reply;

/// Longest command line accepted; commands are single words with a few arguments.
const MAX_COMMAND: usize = 4096;
/// A client that does not send its command in this time is disconnected.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers one command (its words); the daemon decides what each means.
pub type Handler = Arc<dyn Fn(Vec<String>) -> BoxFuture<'static, Reply> + Send + Sync>;

/// Binds the socket at `path` (replacing a stale one) and serves until `shutdown`; removes the
/// socket file on the way out.
pub async fn serve(
    path: &Path,
    handler: Handler,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {} for the control socket", parent.display()))?;
    }
    if path.exists() {
        // A live daemon would answer; a stale file from a killed one would block the bind.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another tandem daemon answers on {}; stop it, or give this node its own \
                 [node] control_socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale control socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    let path: PathBuf = path.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        tokio::spawn(async move {
                            if let Err(err) = answer(stream, handler).await {
                                debug!("control connection: {err:#}");
                            }
                        });
                    }
                    Err(err) => {
                        warn!("control socket accept: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn answer(stream: UnixStream, handler: Handler) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_COMMAND as u64);
    tokio::time::timeout(COMMAND_TIMEOUT, reader.read_line(&mut line))
        .await
        .context("no command within the timeout")??;
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let reply = if words.is_empty() {
        Reply::Error {
            message: "empty command; try `status`".to_owned(),
        }
    } else {
        handler(words).await
    };
    let mut text = serde_json::to_vec(&reply)?;
    text.push(b'\n');
    write.write_all(&text).await?;
    write.shutdown().await?;
    Ok(())
}
