//! The Debian package as an operator gets it: installed with apt on this machine, used, purged.
//!
//! The package is built by xtask (`cargo xtask test` builds it from the debug binary, then
//! runs these tests with TANDEM_DEB set to it), so the tests are ignored by a plain
//! `cargo test`. They install into the real root file system, as root: the machine must not
//! have a `tandem` package of its own (the test refuses rather than replace it), and two runs
//! must not share a machine at the same time. A guard
//! purges the package however the test ends, and removes the `tandem` user if this test's
//! install created it (the package itself keeps the user on purge, as Debian does).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deb() -> PathBuf {
    let path = PathBuf::from(
        std::env::var_os("TANDEM_DEB")
            .expect("TANDEM_DEB: the .deb to test (cargo xtask test sets it)"),
    );
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|error| panic!("starting {program}: {error}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// apt-get waits for the dpkg lock (another apt on the machine) instead of failing at once.
fn apt_get(args: &[&str]) -> Output {
    let mut all = vec!["-y", "-q", "-o", "DPkg::Lock::Timeout=300"];
    all.extend_from_slice(args);
    run("apt-get", &all)
}

fn package_installed() -> bool {
    let output = run("dpkg-query", &["-W", "-f", "${db:Status-Abbrev}", "tandem"]);
    output.status.success() && String::from_utf8_lossy(&output.stdout).starts_with("ii")
}

fn package_known_to_dpkg() -> bool {
    run("dpkg-query", &["-W", "-f", "${db:Status-Abbrev}", "tandem"])
        .status
        .success()
}

fn user_exists() -> bool {
    run("getent", &["passwd", "tandem"]).status.success()
}

/// Purges the package on drop (test passed, failed or panicked), and the user it created.
struct Installed {
    remove_user: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let purge = apt_get(&["purge", "tandem"]);
        if !purge.status.success() {
            eprintln!("apt-get purge tandem: {}", text(&purge));
        }
        if self.remove_user && user_exists() {
            let _ = run("userdel", &["tandem"]);
        }
    }
}

/// Processes whose program is the installed binary.
fn processes_running(binary: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(exe) = std::fs::read_link(entry.path().join("exe")) {
            if exe == binary {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[test]
#[ignore = "needs the .deb: cargo xtask test builds it and runs this"]
fn the_installed_package_runs_checks_its_conffile_and_purges_without_a_trace() {
    let deb = deb();
    assert!(
        !package_known_to_dpkg(),
        "this machine already has a tandem package; the test would replace it"
    );
    let contents = text(&run("dpkg-deb", &["--contents", deb.to_str().unwrap()]));
    let guard = Installed {
        remove_user: !user_exists(),
    };

    // apt, as an operator installs a downloaded .deb: it also proves Depends resolve here.
    let install = apt_get(&["install", "--no-install-recommends", deb.to_str().unwrap()]);
    assert!(
        install.status.success(),
        "apt-get install: {}",
        text(&install)
    );
    assert!(
        package_installed(),
        "dpkg does not list tandem as installed"
    );

    let version = run("/usr/sbin/tandem", &["--version"]);
    let file_name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let said = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let version_number = said.strip_prefix("tandem ").unwrap_or_default();
    assert!(
        version.status.success()
            && !version_number.is_empty()
            && file_name.starts_with(&format!("tandem_{version_number}_")),
        "tandem --version: {said:?} for {file_name}"
    );

    // The conffile passes the daemon's own check, and dpkg tracks it as a conffile.
    let check = run(
        "/usr/sbin/tandem",
        &["check", "--config", "/etc/tandem/tandem.toml"],
    );
    assert!(
        check.status.success() && text(&check).contains("ok (node lb1"),
        "tandem check: {}",
        text(&check)
    );
    let conffiles = text(&run("dpkg-query", &["-W", "-f", "${Conffiles}", "tandem"]));
    assert!(
        conffiles.contains("/etc/tandem/tandem.toml"),
        "conffiles: {conffiles}"
    );

    // man finds tandem(8) in section 8 where man-db looks, with the subcommands in it.
    let man_path = run("man", &["-w", "8", "tandem"]);
    assert_eq!(
        String::from_utf8_lossy(&man_path.stdout).trim(),
        "/usr/share/man/man8/tandem.8.gz",
        "man -w 8 tandem: {}",
        text(&man_path)
    );
    let page = text(&run("zcat", &["/usr/share/man/man8/tandem.8.gz"]));
    for command in [
        "tandem run",
        "tandem check",
        "tandem xdp attach",
        "tandem import",
    ] {
        assert!(
            page.contains(&format!(".SS \"{command}\"")),
            "{command} in tandem(8)"
        );
    }

    // bash loads the completion where bash-completion looks for it, and it offers commands.
    let completion = "/usr/share/bash-completion/completions/tandem";
    let bash = run(
        "bash",
        &[
            "-c",
            &format!(
                "source {completion} && COMP_WORDS=(tandem ch) COMP_CWORD=1 && _tandem tandem ch tandem \
                 && echo \"${{COMPREPLY[@]}}\""
            ),
        ],
    );
    assert!(
        bash.status.success() && String::from_utf8_lossy(&bash.stdout).trim() == "check",
        "completing `tandem ch`: {}",
        text(&bash)
    );
    for path in [
        "/usr/share/zsh/vendor-completions/_tandem",
        "/usr/share/fish/vendor_completions.d/tandem.fish",
        "/usr/share/doc/tandem/operator-guide.md.gz",
        "/usr/lib/systemd/system/tandem.service",
        "/usr/lib/tandem/tandem-release-vips",
    ] {
        assert!(Path::new(path).is_file(), "{path} is not installed");
    }

    // Installing created the daemon's user but started nothing and enabled nothing.
    assert!(user_exists(), "postinst did not create the user tandem");
    let running = processes_running(Path::new("/usr/sbin/tandem"));
    assert!(
        running.is_empty(),
        "tandem runs after install: pids {running:?}"
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/tandem.service").exists(),
        "the install enabled tandem.service"
    );

    // Purge: nothing of the package is left, the conffile and its directory included.
    let purge = apt_get(&["purge", "tandem"]);
    assert!(purge.status.success(), "apt-get purge: {}", text(&purge));
    assert!(
        !package_known_to_dpkg(),
        "dpkg still knows tandem after purge"
    );
    let left: Vec<&str> = contents
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|path| path.trim_start_matches('.'))
        .filter(|path| path.contains("tandem") && Path::new(path).exists())
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert!(!Path::new("/etc/tandem").exists(), "/etc/tandem is left");
    drop(guard);
}

#[test]
#[ignore = "needs the .deb: cargo xtask test builds it and runs this"]
fn the_package_has_no_lintian_errors() {
    let deb = deb();
    let lintian = run(
        "lintian",
        &["--fail-on", "error", "--allow-root", deb.to_str().unwrap()],
    );
    assert!(lintian.status.success(), "lintian: {}", text(&lintian));
}
