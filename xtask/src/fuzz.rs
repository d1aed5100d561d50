//! `cargo xtask fuzz`: runs every fuzz target (lb-userspace/fuzz) for a while each; `cargo
//! xtask test` runs it last, for CI.
//!
//! cargo-fuzz builds with rustc flags that only nightly accepts (`-Zsanitizer=address`,
//! sanitizer coverage). `RUSTC_BOOTSTRAP=1` lets the stable toolchain accept them, so the
//! project needs no nightly toolchain. cargo-fuzz itself is installed on first use. Each target
//! starts from the seeds committed in fuzz/seeds/TARGET and grows its own corpus in
//! fuzz/corpus/TARGET (ignored by git); a crash leaves its input in fuzz/artifacts/TARGET.
//!
//! All targets are built by one `cargo fuzz build`, then each binary is run directly (what
//! `cargo fuzz run` does after a build of its own): a cargo invocation per target would
//! compile lb-userspace again each time whenever its build script asks to be rerun (it does
//! while the XDP object it looks for has not been built).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::{cargo, run_checked, workspace_root};

/// Every fuzz target, by its name in lb-userspace/fuzz/Cargo.toml.
const TARGETS: &[&str] = &[
    "vrrp_parse",
    "arp_parse",
    "request_head",
    "config_toml",
    "import_pound",
    "import_keepalived",
    "affinity",
];
/// Installed when `cargo fuzz` is missing; pinned so a fresh CI machine gets the flags this
/// module was written against.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run(seconds: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let fuzz_dir = root.join("lb-userspace/fuzz");
    // Apart from the main build: every crate is compiled with other flags here.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fuzz");
    let triple = host_triple()?;
    let mut build = cargo();
    build
        .current_dir(root.join("lb-userspace"))
        .args(["fuzz", "build", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--target", &triple])
        .env("RUSTC_BOOTSTRAP", "1");
    run_checked(&mut build).context("building the fuzz targets")?;
    println!(
        "xtask fuzz: built {} targets in {:.0}s",
        TARGETS.len(),
        started.elapsed().as_secs_f64()
    );
    let binaries = target_dir.join(&triple).join("release");
    let mut summary = Vec::new();
    for target in TARGETS {
        let runs = run_target(&fuzz_dir, &binaries.join(target), target, seconds)?;
        summary.push(format!("{target}: {runs} runs"));
    }
    println!(
        "\nxtask fuzz: no crash in {seconds} s per target ({:.0}s in all). {}",
        started.elapsed().as_secs_f64(),
        summary.join("; ")
    );
    Ok(())
}

/// Runs one target's libFuzzer binary for `seconds` from its corpus and seeds, as `cargo fuzz
/// run` would; returns the number of runs.
fn run_target(
    fuzz_dir: &Path,
    binary: &Path,
    target: &str,
    seconds: u64,
) -> anyhow::Result<String> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // What cargo-fuzz sets: the sanitizer's ODR check misfires on Rust's duplicated symbols.
    let mut asan_options = std::env::var("ASAN_OPTIONS").unwrap_or_default();
    if !asan_options.is_empty() {
        asan_options.push(':');
    }
    asan_options.push_str("detect_odr_violation=0");
    let mut cmd = Command::new(binary);
    let mut artifact_prefix = std::ffi::OsString::from("-artifact_prefix=");
    // libFuzzer glues the file name straight onto the prefix.
    artifact_prefix.push(&artifacts);
    artifact_prefix.push("/");
    cmd.arg(artifact_prefix)
        .arg(format!("-max_total_time={seconds}"))
        // No line per newly covered function: the log is CI's (see `progress`).
        .arg("-print_funcs=0")
        .arg(&corpus)
        .arg(fuzz_dir.join("seeds").join(target))
        .env("ASAN_OPTIONS", asan_options);
    run_reporting_runs(&mut cmd).with_context(|| {
        format!(
            "fuzz target {target} failed; the crashing input is saved under {} (run it again \
             with `cargo fuzz run --fuzz-dir lb-userspace/fuzz {target} FILE`)",
            artifacts.display()
        )
    })
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
        println!(
            "xtask fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute and a half)"
        );
        run_checked(cargo().args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]))
        .context("installing cargo-fuzz")?;
    }
    Ok(())
}

/// The target triple rustc builds for by default, where cargo-fuzz puts the binaries.
fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// Runs libFuzzer, passing its output through but for its progress (see [`Progress`]), and
/// returns the number of runs from its last line ("Done 1234 runs in 60 second(s)"), or "?"
/// when it printed none.
fn run_reporting_runs(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut runs = String::from("?");
    let mut progress = Progress::default();
    if let Some(stderr) = child.stderr.take() {
        // Split by hand: a crash report may quote the input, which need not be UTF-8.
        for line in BufReader::new(stderr).split(b'\n') {
            let line = line.context("reading libFuzzer's output")?;
            let line = String::from_utf8_lossy(&line);
            if !progress.is_progress(&line) {
                eprintln!("{line}");
            }
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

/// libFuzzer's progress output, left out of the log: a line per input that covers something new
/// (thousands a minute per target) and the dictionary it recommends at the end. What it says
/// at the start and the end of a run, and any crash report, still go through.
#[derive(Default)]
struct Progress {
    in_dictionary: bool,
}

impl Progress {
    fn is_progress(&mut self, line: &str) -> bool {
        if line.starts_with("###### Recommended dictionary.") {
            self.in_dictionary = true;
        }
        if self.in_dictionary {
            self.in_dictionary = !line.starts_with("###### End of recommended dictionary.");
            return true;
        }
        // "#1234\tNEW    cov: ...", also REDUCE, pulse and RELOAD.
        line.strip_prefix('#')
            .and_then(|rest| rest.split_once('\t'))
            .is_some_and(|(count, what)| {
                count.bytes().all(|b| b.is_ascii_digit())
                    && ["NEW", "REDUCE", "pulse", "RELOAD"]
                        .iter()
                        .any(|word| what.starts_with(word))
            })
    }
}
