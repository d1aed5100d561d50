//! The man page tandem(8), rendered from the CLI's own clap definition (`tandem man`).
//!
//! clap_mangen writes one page per command (tandem(1), tandem-run(1), ...); an operator of a
//! daemon expects one page in section 8 that has everything, as keepalived(8) does. So the
//! page is assembled here from clap_mangen's sections: the top-level name, synopsis,
//! description and options, then a COMMANDS section with, for every visible subcommand at any
//! depth (`tandem xdp attach` included), its synopsis, description and options, and the files
//! and documents an installed node has. Nothing is written by hand twice: a new subcommand or
//! option appears here as it appears in `--help`. What lives elsewhere: the CLI itself
//! (src/main.rs) and where the page is installed (xtask's `package`).

use std::io::Write as _;

use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// The lines roff's writer puts before every rendered piece; the page needs them once.
const APOSTROPHE_PREAMBLE: [&str; 2] = [r".ie \n(.g .ds Aq \(aq", ".el .ds Aq '"];

/// Renders tandem(8) for `command`, the binary's complete clap definition.
pub fn render(command: clap::Command) -> Vec<u8> {
    let mut command = command.disable_help_subcommand(true);
    // Gives every subcommand its full name ("tandem xdp attach") for the synopses.
    command.build();
    let man = Man::new(command.clone())
        .section("8")
        .manual("System Administration");
    let mut page = Vec::new();
    append(&mut page, |w| man.render_title(w));
    append(&mut page, |w| man.render_name_section(w));
    append(&mut page, |w| man.render_synopsis_section(w));
    append(&mut page, |w| man.render_description_section(w));
    append(&mut page, |w| man.render_options_section(w));

    append(&mut page, |w| {
        Roff::new().control("SH", ["COMMANDS"]).to_writer(w)
    });
    for sub in leaf_commands(&command) {
        let sub_man = Man::new(sub.clone());
        let name = sub.get_bin_name().unwrap_or(sub.get_name());
        append(&mut page, |w| {
            Roff::new().control("SS", [name]).to_writer(w)
        });
        // The subcommand's pieces, each without its own .SH heading: inside COMMANDS they
        // are paragraphs of the subsection.
        for render in [
            Man::render_synopsis_section,
            Man::render_description_section,
            Man::render_options_section,
        ] {
            append(&mut page, |w| Roff::new().control("PP", []).to_writer(w));
            let mut out = Vec::new();
            let _ = render(&sub_man, &mut out);
            page.extend(without_headings(&without_preamble(&out)));
        }
        if let Some(after) = sub.get_after_long_help().or(sub.get_after_help()) {
            // Lists and examples: kept as written, not filled into a paragraph.
            let mut verbatim = Roff::new();
            verbatim.control("PP", []).control("nf", []);
            for line in after.to_string().lines() {
                verbatim.text([roman(line)]);
            }
            verbatim.control("fi", []);
            append(&mut page, |w| verbatim.to_writer(w));
        }
    }

    let mut files = Roff::new();
    files.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/tandem/tandem.toml",
            "The node's configuration, which run and check read by default.",
        ),
        (
            "/run/tandem/tandem.sock",
            "The control socket that status, reload, drain and enable talk to.",
        ),
        (
            "/run/tandem/tandem.vips",
            "The virtual addresses the daemon holds; tandem.service's stop step removes them.",
        ),
        (
            "/sys/fs/bpf/tandem",
            "The XDP program's pinned maps, read by tandem maps.",
        ),
    ] {
        files
            .control("TP", [])
            .text([bold(path)])
            .text([roman(what)]);
    }
    files.control("SH", ["SEE ALSO"]);
    files.text([roman(
        "The operator's guide, /usr/share/doc/tandem/operator-guide.md.gz; \
         systemctl(1), systemd-sysusers(8), keepalived(8), pound(8).",
    )]);
    append(&mut page, |w| files.to_writer(w));

    let mut out = APOSTROPHE_PREAMBLE.join("\n").into_bytes();
    out.push(b'\n');
    let _ = out.write_all(&page);
    out
}

/// Adds one rendered piece to the page, without roff's preamble (the page has it once).
fn append(page: &mut Vec<u8>, render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = render(&mut out);
    page.extend(without_preamble(&out));
}

/// Every visible command under `command` that does something itself, depth first in the
/// order of `--help` (`xdp` is a group: its `attach` and `detach` are listed instead).
fn leaf_commands(command: &clap::Command) -> Vec<&clap::Command> {
    let mut leaves = Vec::new();
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        if sub.has_subcommands() {
            leaves.extend(leaf_commands(sub));
        } else {
            leaves.push(sub);
        }
    }
    leaves
}

fn without_preamble(roff: &[u8]) -> Vec<u8> {
    filter_lines(roff, |line| !APOSTROPHE_PREAMBLE.contains(&line))
}

fn without_headings(roff: &[u8]) -> Vec<u8> {
    filter_lines(roff, |line| !line.starts_with(".SH"))
}

fn filter_lines(roff: &[u8], keep: impl Fn(&str) -> bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len());
    for line in text.lines().filter(|line| keep(line)) {
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}
