//! `cargo xtask package`: the Debian package target/debian/tandem_VERSION_ARCH.deb.
//!
//! The package tree is written here file by file and packed by `dpkg-deb --build`, not by
//! cargo-deb: cargo-deb is not in Debian 12, and `cargo install cargo-deb` would add minutes
//! of compiling to every fresh CI machine, while dpkg-deb, dpkg-shlibdeps (Depends on the
//! shared libraries the binary links) and lintian (the check) are Debian's own tools. What the
//! tree holds comes from the repository (dist/, examples/lb1.toml, docs/) and from the built
//! binary itself (`tandem man`, `tandem completions SHELL`), so nothing is written twice. The
//! maintainer scripts create the `tandem` user and never enable or start the daemon: the
//! conffile is the reference pair's example, which would claim its VIP. tests/tests/package.rs
//! installs the result and purges it again.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _};

use crate::{run_checked, tandem_binary, workspace_root};

const MAINTAINER: &str = "Tandem maintainers <maintainers@users.noreply.r-seed-0d5e30b4.example>";

/// The `tandem` user's account, needed at postinst time; any of Debian's sysusers providers.
const SYSUSERS_DEPENDS: &str = "systemd | systemd-standalone-sysusers | systemd-sysusers";

/// Builds the .deb from the release binary (or, for `cargo xtask test`, from the debug binary
/// its earlier steps built: the tree, scripts and checks are the same, without a release
/// build's minutes). Returns the package's path.
pub fn build(release: bool) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let binary = tandem_binary(release);
    ensure!(
        binary.is_file(),
        "{} is missing: build it first",
        binary.display()
    );
    let version = binary_version(&binary)?;
    let arch = command_output(Command::new("dpkg").arg("--print-architecture"))?;
    let name = format!("tandem_{version}_{arch}");
    let out_dir = root.join("target/debian");
    let tree = out_dir.join(&name);
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }

    // The binary, stripped as dh_strip does (the release profile keeps line tables).
    let sbin = install_file(&tree, "usr/sbin/tandem", &fs::read(&binary)?, 0o755)?;
    run_checked(
        Command::new("strip")
            .args([
                "--remove-section=.comment",
                "--remove-section=.note",
                "--strip-unneeded",
            ])
            .arg(&sbin),
    )?;
    let dist = root.join("dist");
    install_file(
        &tree,
        "usr/lib/systemd/system/tandem.service",
        &fs::read(dist.join("tandem.service"))?,
        0o644,
    )?;
    install_file(
        &tree,
        "usr/lib/sysusers.d/tandem.conf",
        &fs::read(dist.join("tandem.sysusers"))?,
        0o644,
    )?;
    install_file(
        &tree,
        "usr/lib/tandem/tandem-release-vips",
        &fs::read(dist.join("tandem-release-vips"))?,
        0o755,
    )?;
    let example = fs::read_to_string(root.join("examples/lb1.toml"))?;
    install_file(
        &tree,
        "etc/tandem/tandem.toml",
        conffile(&example)?.as_bytes(),
        0o644,
    )?;

    // From the binary: the man page and the completions know every subcommand it has.
    let man = command_bytes(Command::new(&binary).arg("man"))?;
    install_file(&tree, "usr/share/man/man8/tandem.8.gz", &gzip(&man)?, 0o644)?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/tandem"),
        ("zsh", "usr/share/zsh/vendor-completions/_tandem"),
        ("fish", "usr/share/fish/vendor_completions.d/tandem.fish"),
    ] {
        let script = command_bytes(Command::new(&binary).args(["completions", shell]))?;
        install_file(&tree, path, &script, 0o644)?;
    }

    let doc = "usr/share/doc/tandem";
    let guide = fs::read(root.join("docs/operator-guide.md"))?;
    install_file(
        &tree,
        &format!("{doc}/operator-guide.md.gz"),
        &gzip(&guide)?,
        0o644,
    )?;
    install_file(
        &tree,
        &format!("{doc}/copyright"),
        COPYRIGHT.as_bytes(),
        0o644,
    )?;
    let date =
        command_output(
            Command::new("git")
                .current_dir(&root)
                .args(["log", "-1", "--format=%cD"]),
        )
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned());
    install_file(
        &tree,
        &format!("{doc}/changelog.gz"),
        &gzip(changelog(&version, &date).as_bytes())?,
        0o644,
    )?;

    // Control area.
    let depends = format!(
        "{}, iproute2, {SYSUSERS_DEPENDS}",
        shlibs_depends(&tree, &sbin)?
    );
    let size_kib = tree_size(&tree)?.div_ceil(1024);
    install_file(
        &tree,
        "DEBIAN/control",
        control(&version, &arch, &depends, size_kib).as_bytes(),
        0o644,
    )?;
    install_file(
        &tree,
        "DEBIAN/conffiles",
        b"/etc/tandem/tandem.toml\n",
        0o644,
    )?;
    install_file(&tree, "DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    install_file(&tree, "DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    install_file(&tree, "DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    let sums = md5sums(&tree)?;
    install_file(&tree, "DEBIAN/md5sums", sums.as_bytes(), 0o644)?;

    let deb = out_dir.join(format!("{name}.deb"));
    run_checked(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&tree)
            .arg(&deb),
    )
    .context("packing the tree with dpkg-deb")?;
    println!("xtask package: wrote {}", deb.display());
    Ok(deb)
}

/// `tandem --version` says "tandem 0.1.0": the package's version is the binary's.
fn binary_version(binary: &Path) -> anyhow::Result<String> {
    let said = command_output(Command::new(binary).arg("--version"))?;
    let version = said
        .strip_prefix("tandem ")
        .with_context(|| format!("`tandem --version` said {said:?}"))?;
    ensure!(
        !version.is_empty()
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+~".contains(c)),
        "{version:?} is not a Debian version"
    );
    Ok(version.to_owned())
}

/// The conffile: the reference pair's lb1 with what an operator must change before starting.
fn conffile(example: &str) -> anyhow::Result<String> {
    const POINTER: &str = "# Check it with: tandem check --config examples/lb1.toml\n";
    let Some(body) = example.split_once(POINTER).map(|(a, b)| format!("{a}{b}")) else {
        bail!("examples/lb1.toml no longer has the line {POINTER:?} that the conffile replaces");
    };
    Ok(format!("{CONFFILE_HEADER}#\n{body}"))
}

const CONFFILE_HEADER: &str = "\
# /etc/tandem/tandem.toml: this node's Tandem configuration. dpkg keeps your changes on
# upgrade (it asks before replacing an edited file).
#
# As installed it is the reference pair's lb1, below; the package neither enables nor starts
# tandem.service, since this file would claim the example's virtual address. Set at least
# [node] name and interface, the [[vrrp]] virtual_router_id, priority and virtual_ipaddress,
# and each [[service]]'s listen and backends, then:
#     tandem check                      # each error as FILE:LINE:COL: message; exit 1
#     systemctl enable --now tandem
# Coming from Pound and keepalived? `tandem import --pound /etc/pound/pound.cfg
# --keepalived /etc/keepalived/keepalived.conf --output /etc/tandem/tandem.toml` writes this
# file from theirs. Every key: /usr/share/doc/tandem/operator-guide.md.gz; commands: tandem(8).
";

fn control(version: &str, arch: &str, depends: &str, size_kib: u64) -> String {
    format!(
        "\
Package: tandem
Version: {version}
Architecture: {arch}
Maintainer: {MAINTAINER}
Installed-Size: {size_kib}
Depends: {depends}
Suggests: bird2
Section: net
Priority: optional
Description: high-availability load balancer: L7 proxy, VRRP and XDP in one daemon
 Tandem does on each node of a pair what the classic Debian setup needed
 Pound and keepalived for: an HTTP reverse proxy with health checks and
 session affinity, and a virtual IP address that VRRP moves to the healthy
 node with the highest priority. An XDP program forwards L4 services in the
 kernel, with a userspace relay where XDP is not available.
 .
 The systemd unit runs the daemon as the unprivileged user tandem with only
 the capabilities it needs; it is not enabled on installation. Active-active
 [bgp] VIPs need bird2.
"
    )
}

fn changelog(version: &str, date: &str) -> String {
    format!(
        "tandem ({version}) unstable; urgency=medium\n\n  \
         * Built from the Tandem source tree by `cargo xtask package`.\n\n \
         -- {MAINTAINER}  {date}\n"
    )
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tandem

Files: *
Copyright: 2026 The Tandem developers
License: MIT or Apache-2.0

License: Apache-2.0
 On Debian systems the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy of this
 software and associated documentation files (the \"Software\"), to deal in the Software
 without restriction, including without limitation the rights to use, copy, modify, merge,
 publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
 to whom the Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all copies or
 substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
 INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
 PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
 FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
 OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
 DEALINGS IN THE SOFTWARE.
";

/// Creates the user and tells a running systemd about the unit; never enables or starts it
/// (the conffile is an example). An upgrade restarts a daemon that was running, as
/// debhelper's scripts do, so the node runs the new binary.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    systemd-sysusers tandem.conf
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then
            deb-systemd-invoke try-restart tandem.service >/dev/null || true
        fi
    fi
fi
exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop tandem.service >/dev/null || true
fi
exit 0
"#;

/// Purge also removes what the unit left behind: the operator's `systemctl enable` link and
/// the logs directory (LogsDirectory=). The `tandem` user stays, as Debian leaves system
/// users: files it owned elsewhere would otherwise pass to the next account given its uid.
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ]; then
    if command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper purge tandem.service >/dev/null || true
    fi
    rm -f /etc/systemd/system/multi-user.target.wants/tandem.service
    rm -rf /var/log/tandem
fi
exit 0
"#;

/// Writes `contents` at `relative` under `tree` with `mode`, creating its directories 0755.
fn install_file(
    tree: &Path,
    relative: &str,
    contents: &[u8],
    mode: u32,
) -> anyhow::Result<PathBuf> {
    let path = tree.join(relative);
    let mut dir = path.parent().map(Path::to_owned);
    fs::create_dir_all(path.parent().unwrap_or(tree))
        .with_context(|| format!("creating the directory of {}", path.display()))?;
    while let Some(d) = dir {
        if !d.starts_with(tree) {
            break;
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        dir = d.parent().map(Path::to_owned);
    }
    fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(path)
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the gzip writer panicked"))??;
    ensure!(output.status.success(), "gzip failed ({})", output.status);
    Ok(output.stdout)
}

/// Depends for the shared libraries the binary links (libc6, libgcc-s1), as dpkg-shlibdeps
/// computes them for debhelper's ${shlibs:Depends}; it wants a debian/control to read.
fn shlibs_depends(tree: &Path, binary: &Path) -> anyhow::Result<String> {
    let work = tree.with_extension("shlibs");
    fs::create_dir_all(work.join("debian"))?;
    fs::write(
        work.join("debian/control"),
        "Source: tandem\n\nPackage: tandem\nArchitecture: any\n",
    )?;
    // It finds the package's root by its DEBIAN directory.
    fs::create_dir_all(tree.join("DEBIAN"))?;
    let said = command_output(
        Command::new("dpkg-shlibdeps")
            .current_dir(&work)
            .arg("-O")
            .arg(binary),
    );
    fs::remove_dir_all(&work)?;
    let said = said.context("dpkg-shlibdeps (Debian's dpkg-dev; `cargo xtask setup`)")?;
    said.lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .with_context(|| format!("no shlibs:Depends in dpkg-shlibdeps' output {said:?}"))
}

/// Every regular file outside DEBIAN/, relative to `tree`, sorted.
fn files(tree: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, tree: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if path != tree.join("DEBIAN") {
                    walk(&path, tree, out)?;
                }
            } else {
                out.push(path.strip_prefix(tree)?.to_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(tree, tree, &mut out)?;
    out.sort();
    Ok(out)
}

fn tree_size(tree: &Path) -> anyhow::Result<u64> {
    files(tree)?
        .iter()
        .map(|file| Ok(fs::metadata(tree.join(file))?.len()))
        .sum()
}

/// DEBIAN/md5sums, as dh_md5sums writes it (conffiles excluded: dpkg tracks them itself).
fn md5sums(tree: &Path) -> anyhow::Result<String> {
    let files: Vec<PathBuf> = files(tree)?
        .into_iter()
        .filter(|file| !file.starts_with("etc"))
        .collect();
    command_output(Command::new("md5sum").current_dir(tree).args(&files)).map(|s| s + "\n")
}

fn command_bytes(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !output.status.success() {
        bail!("{shown} failed ({})", output.status);
    }
    Ok(output.stdout)
}

fn command_output(cmd: &mut Command) -> anyhow::Result<String> {
    let bytes = command_bytes(cmd)?;
    Ok(String::from_utf8(bytes)?.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conffile is the example with the operator's header, and an edit of the example
    /// that drops the line the header replaces is caught rather than shipped twice.
    #[test]
    fn the_conffile_is_the_lb1_example_under_an_operators_header() {
        let example = fs::read_to_string(workspace_root().join("examples/lb1.toml")).unwrap();
        let installed = conffile(&example).unwrap();
        assert!(installed.starts_with("# /etc/tandem/tandem.toml"));
        assert!(installed.contains("systemctl enable --now tandem"));
        assert!(!installed.contains("examples/lb1.toml"));
        let tail = example.lines().last().unwrap();
        assert!(installed.trim_end().ends_with(tail));
        assert!(conffile(&example.replace("# Check it with", "# See")).is_err());
    }
}
