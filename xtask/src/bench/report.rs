//! docs/benchmarks.md: each benchmark owns one `## Heading` section and replaces it with its
//! latest table, leaving the other benchmarks' sections as they are.

use std::path::Path;

use anyhow::Context as _;

/// Replaces (or appends) the section `## heading` of docs/benchmarks.md with `body`.
pub fn replace_section(root: &Path, heading: &str, body: &str) -> anyhow::Result<()> {
    let path = root.join("docs/benchmarks.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nEach section is written by `cargo xtask bench NAME` on the machine named \
         in it; rerun the command to refresh it.\n"
            .to_owned()
    });
    let marker = format!("## {heading}\n");
    let machine = machine_line();
    let section = format!("{marker}\n{machine}\n\n{}\n", body.trim_end());
    let updated = match existing.find(&marker) {
        Some(start) => {
            let after = start + marker.len();
            let end = existing[after..]
                .find("\n## ")
                .map(|offset| after + offset + 1)
                .unwrap_or(existing.len());
            // A blank line before the next section's heading.
            let rest = &existing[end..];
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{}{gap}{}", &existing[..start], section, rest)
        }
        None => format!(
            "{}\n{}",
            existing.trim_end_matches('\n').to_owned() + "\n",
            section
        ),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote the table to {} (## {heading})", path.display());
    Ok(())
}

/// Where and when the figures were measured.
fn machine_line() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "Measured {date} on {cpus} CPUs, Linux {}, lab of network namespaces over veth and a bridge.",
        kernel.trim()
    )
}

/// Where `cargo xtask build --release` put the binaries a benchmark runs.
pub fn release_dir(root: &Path) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release")
}

/// Fails, naming what `cargo xtask setup` installs, when a peer or tool is missing.
pub fn require_tools(tools: &[&str], installs: &str) -> anyhow::Result<()> {
    for tool in tools {
        if !Path::new(tool).is_file() {
            anyhow::bail!("{tool} is missing: `cargo xtask setup` installs {installs}");
        }
    }
    Ok(())
}
