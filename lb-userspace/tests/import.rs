//! `tandem import` as an operator runs it on the classic tutorial's files: the output is the
//! checked-in golden file, `tandem check` accepts it, what was not translated is on stderr with
//! FILE:LINE, and the exit status says whether anything needs a hand.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLASSIC_MAPS: [&str; 4] = [
    "--map",
    "http1.example.com=198.18.0.102",
    "--map",
    "http2.example.com=198.18.0.103",
];

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/import/testdata")
}

/// Runs `tandem` in the test data directory, so messages name the files as the user typed them.
fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .current_dir(testdata())
        .args(args)
        .output()
        .expect("run tandem")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-import-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn import_of_the_classic_files_gives_the_golden_output_which_tandem_check_accepts() {
    let dir = scratch_dir("classic");
    for node in ["lb1", "lb2"] {
        let keepalived = format!("keepalived-{node}.conf");
        let mut args = vec![
            "import",
            "--pound",
            "pound.cfg",
            "--keepalived",
            &keepalived,
            "--node",
            node,
        ];
        args.extend(CLASSIC_MAPS);
        let output = tandem(&args);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(0),
            "nothing needs the operator's decision: {stderr}"
        );
        let golden =
            std::fs::read_to_string(testdata().join(format!("{node}.toml"))).expect("golden file");
        assert_eq!(text(&output.stdout), golden, "{node}");
        assert!(
            stderr.contains("pound.cfg:6: note: User \"www-data\": not needed")
                && stderr.contains("pound.cfg:7: note: Group \"www-data\": not needed"),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "{keepalived}:9: note: state MASTER: no equivalent"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("does not pass"), "{stderr}");

        // The same through --output, then validated by `tandem check`.
        let file = dir.join(format!("{node}.toml"));
        let file = file.to_str().expect("utf-8");
        let mut args = args.clone();
        args.extend(["--output", file]);
        let output = tandem(&args);
        assert_eq!(output.status.code(), Some(0));
        assert!(output.stdout.is_empty(), "the config went to the file");
        assert_eq!(std::fs::read_to_string(file).expect("output"), golden);
        let check = tandem(&["check", "--config", file]);
        assert!(check.status.success(), "{}", text(&check.stderr));
        assert!(
            text(&check.stdout).contains(&format!(
                "ok (node {node}, 1 VRRP instance(s), 1 service(s))"
            )),
            "{}",
            text(&check.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_takes_the_classic_pound_cfg_as_it_is_and_keeps_host_names_for_the_node() {
    let output = tandem(&["import", "--pound", "pound.cfg", "--node", "lb1"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "pound.cfg:28: note: Address http1.example.com: http1.example.com is written as a \
             host name"
        ) && stderr.contains("--map http1.example.com=ADDR or --hosts FILE"),
        "{stderr}"
    );
    assert!(!stderr.contains("does not pass"), "{stderr}");
    assert!(text(&output.stdout)
        .contains("backends = [\"http1.example.com:80\", \"http2.example.com:80\"]"));
}

#[test]
fn import_exits_0_when_a_file_translates_completely() {
    let dir = scratch_dir("complete");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "198.18.0.102 http1.example.com\n198.18.0.103 http2.example.com\n",
    )
    .expect("hosts");
    let pound = dir.join("pound.cfg");
    let classic = std::fs::read_to_string(testdata().join("pound.cfg")).expect("pound.cfg");
    // The classic file without its User and Group lines.
    let without_user: String = classic
        .lines()
        .filter(|line| !line.starts_with("User") && !line.starts_with("Group"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&pound, without_user).expect("pound.cfg");
    let keepalived = testdata().join("keepalived-lb1.conf");
    let output = tandem(&[
        "import",
        "--pound",
        pound.to_str().expect("utf-8"),
        "--keepalived",
        keepalived.to_str().expect("utf-8"),
        "--hosts",
        hosts.to_str().expect("utf-8"),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("not translated"), "{stderr}");
    // No --node and no router_id: named after the interface, and a note says so.
    assert!(text(&output.stdout).contains("name = \"eth0\""));
    assert!(stderr.contains("pass --node NAME"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_exits_1_on_syntax_errors_with_file_and_line() {
    let dir = scratch_dir("syntax");
    let pound = dir.join("broken.cfg");
    std::fs::write(&pound, "Service\n  BackEnd\n    Port 80\nEnd\n").expect("write");
    let path = pound.to_str().expect("utf-8");
    let output = tandem(&["import", "--pound", path]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr).trim_end(),
        format!("{path}:1: Service is never closed: add an End after its last line")
    );
    assert!(output.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_help_documents_the_exit_status_and_bad_maps_are_refused() {
    let output = tandem(&["import", "--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    assert!(
        help.contains("Exit status:") && help.contains("2  something was listed"),
        "{help}"
    );

    let output = tandem(&[
        "import",
        "--pound",
        "pound.cfg",
        "--map",
        "http1.example.com",
    ]);
    assert_eq!(output.status.code(), Some(2), "clap's usage error");
    assert!(
        text(&output.stderr).contains("NAME=ADDR"),
        "{}",
        text(&output.stderr)
    );

    let output = tandem(&["import"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "needs --pound or --keepalived"
    );
}
