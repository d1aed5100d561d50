//! dist/tandem.service as systemd reads it. There is no systemd as PID 1 on the machines the
//! tests run on, so the unit cannot be started here; `systemd-analyze verify` parses it as
//! systemd would (unknown keys, bad values, missing executables) and `systemd-analyze
//! security --offline` rates its sandboxing. The unit's program paths are pointed at the built
//! binary and the repository's script, as an install would put them. unprivileged.rs runs the
//! daemon with the unit's user model and capabilities.

use std::path::{Path, PathBuf};
use std::process::Command;

fn installed_copy(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(root.join("dist/tandem.service")).expect("the unit");
    let tandem = tandem_lab::tandem_binary().expect("built tandem");
    let release = root
        .join("dist/tandem-release-vips")
        .canonicalize()
        .expect("the release script");
    let unit = unit
        .replace("/usr/sbin/tandem", &tandem.display().to_string())
        .replace(
            "/usr/lib/tandem/tandem-release-vips",
            &release.display().to_string(),
        );
    let path = dir.join("tandem.service");
    std::fs::write(&path, unit).expect("write the unit copy");
    path
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_systemd_unit_verifies_and_keeps_its_sandbox() {
    let dir = std::env::temp_dir().join(format!("tandem-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unit = installed_copy(&dir);
    let (ok, said) = analyze(&["verify", "--man=no"], &unit);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    let (ok, said) = analyze(&["security", "--offline=yes", "--threshold=50"], &unit);
    let exposure = said
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for tandem.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|level| level.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("an exposure level in: {said}"));
    assert!(ok, "{said}");
    // Debian's own units for network daemons rate 9+ ("UNSAFE"); ours must stay well below
    // (2.4 with the system call filter, private devices, umask and memory limit; 4.4 before).
    let _ = std::fs::remove_dir_all(&dir);
    assert!(exposure <= 3.0, "exposure {exposure}: {said}");
}
