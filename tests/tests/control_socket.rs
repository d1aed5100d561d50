//! Who may talk to a running node: the control socket is mode 0660 even when the daemon was
//! started under umask 000; a user outside its group cannot connect (and is told why); a member
//! of the group who is not root nor the daemon's user may read `tandem status` but `reload`,
//! `drain` and `enable` are refused (SO_PEERCRED), with nothing changed on the node.
//!
//! The daemon runs as root here, and this machine has no `tandem` group, so the socket's group
//! is root's (gid 0); the other users are `nobody` run through `setpriv`.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use tandem_lab::pair::{wait_until, TandemNode};
use tandem_lab::{tandem_binary, Lab, LB1};

const NOBODY: &str = "65534";

/// `tandem ARGS --socket SOCKET` as `nobody`, in group 0 when `in_group`; (success, output).
fn tandem_as_nobody(in_group: bool, socket: &std::path::Path, args: &[&str]) -> (bool, String) {
    let groups = if in_group { "0" } else { NOBODY };
    let output = Command::new("setpriv")
        .args([
            "--reuid", NOBODY, "--regid", NOBODY, "--groups", groups, "--",
        ])
        .arg(tandem_binary().expect("built tandem"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("setpriv (util-linux) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn only_root_and_the_daemons_user_may_change_the_node_whatever_the_umask() {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let config = format!(
        "{}\n[[service]]\nname = \"web\"\nlisten = \"{}:8080\"\nbackends = [\"198.18.0.21:80\"]\n",
        TandemNode::node_section(&lab, lb1),
        lb1.ip
    );
    // The daemon inherits the most permissive umask there is.
    // SAFETY: umask(2) cannot fail; this test binary runs this one test.
    let before = unsafe { libc::umask(0) };
    let node = TandemNode::start(&lab, lb1, &config);
    // SAFETY: as above.
    unsafe { libc::umask(before) };
    let node = node.expect("start");
    let socket = node.socket.clone();
    wait_until(Duration::from_secs(10), "the control socket", || {
        node.status().is_ok()
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", node.log_text()));

    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    let (ok, said) = tandem_as_nobody(false, &socket, &["status"]);
    assert!(!ok, "a stranger read the status: {said}");
    assert!(
        said.contains("Permission denied") && said.contains("group"),
        "{said}"
    );

    let (ok, said) = tandem_as_nobody(true, &socket, &["status"]);
    assert!(ok, "a member of the group cannot read the status: {said}");
    assert!(said.contains("web"), "{said}");

    for args in [&["reload"][..], &["drain", "web", "198.18.0.21:80"]] {
        let (ok, said) = tandem_as_nobody(true, &socket, args);
        assert!(!ok, "{args:?} was taken from uid 65534: {said}");
        assert!(said.contains("only root or the daemon's user"), "{said}");
    }
    let status = node.status().expect("status as root");
    assert_eq!(
        status["services"][0]["backends"][0]["drained"], false,
        "{status:#}"
    );
    assert!(!node.log_text().contains("reloaded"), "{}", node.log_text());
}
