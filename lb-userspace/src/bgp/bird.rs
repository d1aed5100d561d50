//! BIRD 2 as Tandem drives it: the config Tandem writes for it, and a client of its control
//! socket (the protocol `birdc` speaks).
//!
//! Each VIP is a static protocol of its own (`vip_0`, `vip_1`, ...) holding one host route,
//! written `disabled yes`: announcing a VIP is `enable vip_N` on the control socket, and
//! withdrawing it `disable vip_N`, which flushes the route and sends the withdrawal to every
//! peer at once. Nothing else is reconfigured while BIRD runs, so a command cannot leave BIRD
//! half-reconfigured. Each peer is a BGP protocol (`peer_0`, ...) exporting only the `vip_*`
//! routes and importing nothing: the node takes no routes from the network.
//!
//! Control socket replies are lines "CODE-text" (more follows), "CODE text" (the last) and
//! " text" (a continuation of the previous code). Codes 0xxx end a command that worked, 8xxx
//! and 9xxx one that failed (run-time and syntax errors), 1xxx and 2xxx are table rows and
//! headers.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use crate::config::Bgp;

/// How long one control command may take before the socket counts as stuck.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The static protocol that carries VIP number `index` of `[bgp] vips`.
pub fn vip_protocol(index: usize) -> String {
    format!("vip_{index}")
}

/// The BGP protocol of peer number `index` of `[bgp] peers`.
pub fn peer_protocol(index: usize) -> String {
    format!("peer_{index}")
}

/// BIRD's config for `bgp`. Every VIP starts withdrawn (`disabled yes`): a node announces
/// nothing until it has checked that it can serve.
pub fn render_config(bgp: &Bgp) -> String {
    let mut text = String::new();
    // Written by Tandem at every start; an edit by hand would be lost.
    let _ = writeln!(
        text,
        "# Written by tandem from its [bgp] section at start; edits here are lost.\n\
         log stderr {{ info, remote, warning, error, auth, fatal, bug }};\n\
         router id {};\n\
         # Interfaces: BGP needs to know which neighbours are directly connected.\n\
         protocol device {{ scan time 10; }}\n",
        bgp.router_id
    );
    for (index, vip) in bgp.vips.iter().enumerate() {
        let (channel, length) = match vip {
            IpAddr::V4(_) => ("ipv4", 32),
            IpAddr::V6(_) => ("ipv6", 128),
        };
        let _ = writeln!(
            text,
            "protocol static {} {{\n  disabled yes;\n  {channel};\n  route {vip}/{length} blackhole;\n}}\n",
            vip_protocol(index)
        );
    }
    for (index, peer) in bgp.peers.iter().enumerate() {
        let hold = peer.hold_time.as_secs();
        // RFC 4271's suggestion: a keepalive every third of the hold time.
        let keepalive = (hold / 3).max(1);
        let _ = writeln!(
            text,
            "protocol bgp {} {{\n  local as {};\n  neighbor {} port {} as {};",
            peer_protocol(index),
            bgp.local_as,
            peer.address,
            peer.port,
            peer.remote_as
        );
        let _ = writeln!(
            text,
            "  hold time {hold};\n  keepalive time {keepalive};\n  \
             # A node that comes back reconnects within seconds, not BIRD's default minutes.\n  \
             connect delay time 1;\n  connect retry time 5;\n  error wait time 1, 30;\n  \
             # Without graceful restart the routers drop a dead node's routes at once rather\n  \
             # than keep them stale for the restart time.\n  \
             graceful restart off;"
        );
        if let Some(password) = &peer.password {
            let _ = writeln!(text, "  password \"{password}\";");
        }
        let channel = if peer.address.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        };
        // iBGP keeps the next hop as it is unless told; the router must send to this node.
        let next_hop = if peer.remote_as == bgp.local_as {
            " next hop self;"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "  {channel} {{ import none; export where proto ~ \"vip_*\";{next_hop} }};\n}}\n"
        );
    }
    text
}

/// One BGP protocol's line of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolLine {
    pub name: String,
    pub proto: String,
    /// "up", "start", "down", "flush".
    pub state: String,
    /// For BGP: "Established", "Idle", "Connect", "Active", "OpenSent", ..., and after it the
    /// last error if any ("Active  Socket: Connection refused").
    pub info: String,
}

/// The protocol rows of a `show protocols` answer (its 1002 lines and their continuations).
pub fn parse_protocols(reply: &[Line]) -> Vec<ProtocolLine> {
    reply
        .iter()
        .filter(|line| line.code == 1002)
        .filter_map(|line| {
            let mut words = line.text.split_whitespace();
            let name = words.next()?.to_owned();
            let proto = words.next()?.to_owned();
            let _table = words.next()?;
            let state = words.next()?.to_owned();
            let _since = words.next();
            Some(ProtocolLine {
                name,
                proto,
                state,
                info: words.collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// One line of a reply, with the code it belongs to (a continuation line gets the code of
/// the line it continues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub code: u16,
    pub text: String,
}

/// Where a reply line stands: more follows, or it ends the reply.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    More(Line),
    Last(Line),
}

fn parse_line(raw: &str, previous: Option<u16>) -> anyhow::Result<Parsed> {
    let raw = raw.trim_end_matches('\n');
    if let Some(text) = raw.strip_prefix(' ') {
        let code = previous.ok_or_else(|| anyhow!("BIRD sent a continuation first: {raw:?}"))?;
        return Ok(Parsed::More(Line {
            code,
            text: text.to_owned(),
        }));
    }
    let (code, rest) = raw
        .split_at_checked(4)
        .filter(|(code, _)| code.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| anyhow!("not a BIRD reply line: {raw:?}"))?;
    let code: u16 = code.parse().context("reply code")?;
    let (last, text) = match rest.as_bytes().first() {
        Some(b'-') => (false, &rest[1..]),
        Some(b' ') => (true, &rest[1..]),
        None => (true, ""),
        Some(_) => bail!("not a BIRD reply line: {raw:?}"),
    };
    let line = Line {
        code,
        text: text.to_owned(),
    };
    Ok(if last {
        Parsed::Last(line)
    } else {
        Parsed::More(line)
    })
}

/// A connection to BIRD's control socket.
pub struct Control {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Control {
    /// Connects and reads the greeting ("0001 BIRD 2.0.12 ready.").
    pub async fn connect(socket: &Path) -> anyhow::Result<Control> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to BIRD's control socket {}", socket.display()))?;
        let (read, writer) = stream.into_split();
        let mut control = Control {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = control.read_reply().await?;
        if greeting.last().map(|line| line.code) != Some(1) {
            bail!("BIRD's control socket did not greet as BIRD does: {greeting:?}");
        }
        Ok(control)
    }

    /// Runs `command`; the reply's lines, or an error with BIRD's message when it failed.
    pub async fn command(&mut self, command: &str) -> anyhow::Result<Vec<Line>> {
        let exchange = async {
            self.writer
                .write_all(format!("{command}\n").as_bytes())
                .await?;
            self.read_reply().await
        };
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("BIRD did not answer `{command}` within {COMMAND_TIMEOUT:?}"))?
            .with_context(|| format!("BIRD command `{command}`"))?;
        match reply.last() {
            Some(last) if last.code >= 8000 => {
                bail!("BIRD refused `{command}`: {} ({})", last.text, last.code)
            }
            _ => Ok(reply),
        }
    }

    async fn read_reply(&mut self) -> anyhow::Result<Vec<Line>> {
        let mut lines = Vec::new();
        let mut raw = String::new();
        loop {
            raw.clear();
            if self.reader.read_line(&mut raw).await? == 0 {
                bail!("BIRD closed its control socket");
            }
            match parse_line(&raw, lines.last().map(|line: &Line| line.code))? {
                Parsed::More(line) => lines.push(line),
                Parsed::Last(line) => {
                    lines.push(line);
                    return Ok(lines);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BgpPeer;

    fn reply(text: &str) -> Vec<Line> {
        let mut lines = Vec::new();
        for raw in text.lines() {
            match parse_line(raw, lines.last().map(|line: &Line| line.code)).unwrap() {
                Parsed::More(line) | Parsed::Last(line) => lines.push(line),
            }
        }
        lines
    }

    #[test]
    fn show_protocols_as_bird_2_answers_it_gives_each_session_state() {
        // Captured from BIRD 2.0.12.
        let lines = reply(
            "2002-Name       Proto      Table      State  Since         Info\n\
             1002-device1    Device     ---        up     22:33:06.781  \n \
             vip_0      Static     master4    down   22:33:06.781  \n \
             peer_0     BGP        ---        start  22:33:06.781  Active        Socket: Connection refused\n \
             peer_1     BGP        ---        up     22:33:09.002  Established   \n\
             0000 ",
        );
        let protocols = parse_protocols(&lines);
        let bgp: Vec<_> = protocols
            .iter()
            .filter(|p| p.proto == "BGP")
            .map(|p| (p.name.as_str(), p.state.as_str(), p.info.as_str()))
            .collect();
        assert_eq!(
            bgp,
            [
                ("peer_0", "start", "Active Socket: Connection refused"),
                ("peer_1", "up", "Established"),
            ]
        );
        assert_eq!(protocols[1].name, "vip_0");
        assert_eq!(protocols[1].state, "down");
    }

    #[test]
    fn reply_lines_end_at_the_first_code_followed_by_a_space() {
        assert_eq!(
            parse_line("0011-vip_0: enabled\n", None).unwrap(),
            Parsed::More(Line {
                code: 11,
                text: "vip_0: enabled".into()
            })
        );
        assert_eq!(
            parse_line("0000 \n", Some(11)).unwrap(),
            Parsed::Last(Line {
                code: 0,
                text: String::new()
            })
        );
        assert!(parse_line(" orphan", None).is_err());
        assert!(parse_line("BIRD?", None).is_err());
    }

    #[test]
    fn the_config_announces_only_the_vip_routes_and_starts_with_them_withdrawn() {
        let bgp = Bgp {
            local_as: 65001,
            router_id: "198.18.0.100".parse().unwrap(),
            peers: vec![
                BgpPeer {
                    address: "198.18.0.1".parse().unwrap(),
                    remote_as: 65000,
                    port: 179,
                    password: Some("s3cret".into()),
                    hold_time: Duration::from_secs(3),
                },
                BgpPeer {
                    address: "2001:2::1".parse().unwrap(),
                    remote_as: 65001,
                    port: 1179,
                    password: None,
                    hold_time: Duration::from_secs(9),
                },
            ],
            vips: vec![
                "198.18.2.99".parse().unwrap(),
                "2001:2::99".parse().unwrap(),
            ],
            hold_time: Duration::from_secs(9),
        };
        let text = render_config(&bgp);
        for expected in [
            "router id 198.18.0.100;",
            "protocol static vip_0 {\n  disabled yes;\n  ipv4;\n  route 198.18.2.99/32 blackhole;",
            "protocol static vip_1 {\n  disabled yes;\n  ipv6;\n  route 2001:2::99/128 blackhole;",
            "protocol bgp peer_0 {\n  local as 65001;\n  neighbor 198.18.0.1 port 179 as 65000;",
            "  hold time 3;\n  keepalive time 1;",
            "  password \"s3cret\";",
            "  ipv4 { import none; export where proto ~ \"vip_*\"; };",
            "neighbor 2001:2::1 port 1179 as 65001;",
            "  ipv6 { import none; export where proto ~ \"vip_*\"; next hop self; };",
            "graceful restart off;",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
