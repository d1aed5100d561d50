//! The daemon's side of the control socket.
//!
//! Who may use it: the socket is made mode 0660 whatever the umask (group `tandem` where that
//! group exists, else the daemon's own), so only the daemon's user and group can connect; and
//! the commands that change the node (`reload`, `drain`, `enable`) are taken only from root or
//! the daemon's own user, checked by the peer's credentials (SO_PEERCRED), so a member of the
//! group may read `tandem status` but not change anything.

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
/// The commands that change the node.
const MUTATING: &[&str] = &["reload", "drain", "enable"];
/// The socket file's mode: the daemon's user and group may connect, nobody else.
const SOCKET_MODE: u32 = 0o660;
/// The group the socket is given where it exists (dist/tandem.sysusers creates it).
const SOCKET_GROUP: &str = "tandem";

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
    restrict(path)?;
    let path: PathBuf = path.to_owned();
    Ok(tokio::spawn(async move {
        // A descriptor kept in reserve: when the process is out of them (a flood of client
        // connections), it is given up to accept the operator's `tandem status`, which would
        // otherwise fail just when it is needed most.
        let mut reserve = open_reserve();
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
                    Err(err) if err.raw_os_error() == Some(libc::EMFILE) && reserve.is_some() => {
                        drop(reserve.take());
                        if let Ok((stream, _)) = listener.accept().await {
                            if let Err(err) = answer(stream, handler.clone()).await {
                                debug!("control connection: {err:#}");
                            }
                        }
                        reserve = open_reserve();
                    }
                    Err(err) => {
                        if let Some(held) = crate::log_limit::allow("control-accept") {
                            warn!("control socket accept: {err}{}", crate::log_limit::held_back(held));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Mode 0660 and, where it exists, group `tandem`.
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("making the control socket {} mode 0660", path.display()))?;
    use std::os::unix::fs::MetadataExt as _;
    let current = std::fs::metadata(path).map(|meta| meta.gid()).ok();
    if let Some(gid) = group_id(SOCKET_GROUP).filter(|&gid| Some(gid) != current) {
        if let Err(err) = std::os::unix::fs::chown(path, None, Some(gid)) {
            warn!(
                "cannot give the control socket {} to group {SOCKET_GROUP}: {err}; only the \
                 daemon's own group can reach it",
                path.display()
            );
        }
    }
    Ok(())
}

fn group_id(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or null; only gr_gid is read, at
    // once. The daemon calls it once, at start-up, before any other thread reads groups.
    let group = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: non-null means a valid group entry.
    (!group.is_null()).then(|| unsafe { (*group).gr_gid })
}

/// Why the peer may not send `verb`, if it may not.
fn refused(verb: &str, peer_uid: Option<u32>) -> Option<String> {
    if !MUTATING.contains(&verb) {
        return None;
    }
    // SAFETY: geteuid cannot fail.
    let own = unsafe { libc::geteuid() };
    match peer_uid {
        Some(0) => None,
        Some(uid) if uid == own => None,
        Some(uid) => Some(format!(
            "`{verb}` changes the node: only root or the daemon's user (uid {own}) may send it, \
             and you are uid {uid}; run it with sudo"
        )),
        None => Some(format!(
            "`{verb}` changes the node, and the sender's credentials cannot be read"
        )),
    }
}

async fn answer(stream: UnixStream, handler: Handler) -> anyhow::Result<()> {
    let peer_uid = stream.peer_cred().ok().map(|cred| cred.uid());
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
    } else if let Some(message) = refused(&words[0], peer_uid) {
        if let Some(held) = crate::log_limit::allow("control-refused") {
            let held = crate::log_limit::held_back(held);
            warn!("control socket: refused `{}`: {message}{held}", words[0]);
        }
        Reply::Error { message }
    } else {
        handler(words).await
    };
    let mut text = serde_json::to_vec(&reply)?;
    text.push(b'\n');
    write.write_all(&text).await?;
    write.shutdown().await?;
    Ok(())
}
