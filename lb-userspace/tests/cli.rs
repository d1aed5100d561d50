//! The `tandem` command as a user meets it: exit codes and messages of `check`, and the
//! one-line errors of `maps` and `xdp attach` when something is missing.

use std::path::Path;
use std::process::{Command, Output};

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .expect("run tandem")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn check_accepts_the_reference_pair_and_says_what_it_found() {
    for name in ["lb1.toml", "lb2.toml"] {
        let output = tandem(&["check", "--config", &example(name)]);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("ok (node lb"), "{said}");
        assert!(said.contains("1 VRRP instance(s), 2 service(s)"), "{said}");
    }
}

#[test]
fn check_rejects_a_bad_config_with_file_line_col_for_every_error() {
    let dir = std::env::temp_dir().join(format!("tandem-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n[[vrrp]]\nname = \"VI_1\"\nvirtual_router_id = 51\npriority = 300\nvirtual_ipaddress = [\"198.18.0.99\"]\nadvert_interval = 1\n",
    )
    .expect("write config");
    let output = tandem(&["check", "--config", file.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1), "a bad config exits 1");
    let lines: Vec<String> = stderr(&output).lines().map(str::to_owned).collect();
    let prefix = file.display().to_string();
    assert!(
        lines.contains(&format!(
            "{prefix}:8:12: priority = 300 is out of range (allowed: 1 to 255)"
        )),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{prefix}:10:19: ")) && l.contains("\"1s\"")),
        "{lines:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_reports_a_missing_file_without_a_location() {
    let output = tandem(&["check", "--config", "/nonexistent/tandem.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("/nonexistent/tandem.toml: "),
        "{}",
        stderr(&output)
    );
}

#[test]
fn maps_without_pins_says_how_to_load_the_program() {
    let output = tandem(&["maps", "--pin-dir", "/nonexistent/tandem-pins"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("no Tandem maps in /nonexistent/tandem-pins")
            && message.contains("build-and-load"),
        "{message}"
    );
}

#[test]
fn attaching_to_a_missing_interface_is_one_line_that_says_what_to_check() {
    let output = tandem(&[
        "xdp",
        "attach",
        "--iface",
        "tdm-nosuch0",
        "--pin-dir",
        "/nonexistent/tandem-pins",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("interface `tdm-nosuch0` does not exist") && message.contains("ip link"),
        "{message}"
    );
}

#[test]
fn attaching_with_a_pin_dir_off_bpffs_says_how_to_mount_one() {
    let dir = std::env::temp_dir().join(format!("tandem-not-bpffs-{}", std::process::id()));
    let output = tandem(&[
        "xdp",
        "attach",
        "--iface",
        "lo",
        "--pin-dir",
        dir.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("is not on a bpffs") && message.contains("mount -t bpf bpf /sys/fs/bpf"),
        "{message}"
    );
}
