//! `cargo xtask fuzz`: runs the packet parsers' fuzz targets (lb-userspace/fuzz) for a while each.
//!
//! cargo-fuzz builds with rustc flags that only nightly accepts (`-Zsanitizer=address`,
//! sanitizer coverage). `RUSTC_BOOTSTRAP=1` lets the stable toolchain accept them, so the
//! project needs no nightly toolchain. cargo-fuzz itself is installed on first use. Each target
//! starts from the seeds committed in fuzz/seeds/TARGET and grows its own corpus in
//! fuzz/corpus/TARGET (ignored by git); a crash leaves its input in fuzz/artifacts/TARGET.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::{cargo, run_checked, workspace_root};

/// Every fuzz target, by its name in lb-userspace/fuzz/Cargo.toml.
const TARGETS: &[&str] = &["vrrp_parse", "arp_parse"];

pub fn run(seconds: u64) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let fuzz_dir = root.join("lb-userspace/fuzz");
    // Apart from the main build: every crate is compiled with other flags here.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fuzz");
    let mut summary = Vec::new();
    for target in TARGETS {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let mut cmd = cargo();
        cmd.current_dir(root.join("lb-userspace"))
            .args(["fuzz", "run", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .arg("--target-dir")
            .arg(&target_dir)
            .arg(target)
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .env("RUSTC_BOOTSTRAP", "1");
        let runs = run_reporting_runs(&mut cmd).with_context(|| {
            format!(
                "fuzz target {target} failed; a crashing input is saved under {}",
                fuzz_dir.join("artifacts").join(target).display()
            )
        })?;
        summary.push(format!("{target}: {runs} runs in {seconds} s"));
    }
    println!("\nxtask fuzz: no crash. {}", summary.join("; "));
    Ok(())
}

/// Installs cargo-fuzz unless `cargo fuzz` already answers.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        println!("xtask fuzz: installing cargo-fuzz (about a minute)");
        run_checked(cargo().args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz")?;
    }
    Ok(())
}

/// Runs libFuzzer, passing its output through, and returns the number of runs from its last
/// line ("Done 1234 runs in 60 second(s)"), or "?" when it printed none.
fn run_reporting_runs(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut runs = String::from("?");
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading libFuzzer's output")?;
            eprintln!("{line}");
            if let Some(rest) = line.strip_prefix("Done ") {
                if let Some(count) = rest.split_whitespace().next() {
                    runs = count.to_owned();
                }
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(runs)
}
