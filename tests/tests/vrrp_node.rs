//! One Tandem node's VRRP as an operator sees it through `tandem status`: it becomes master
//! alone, counts every malformed advert under its reason without being disturbed by it (and
//! every forged one from a host that is not its unicast peer, or not in its `allowed_sources`
//! with multicast adverts), and a failing track script with weight 0 puts it in Fault (VIP
//! released, notify script called with keepalived's arguments) until the script succeeds again.

use std::net::Ipv4Addr;
use std::time::Duration;

use tandem::vrrp::wire::{Advert, ChecksumMode, Version, MULTICAST_GROUP};
use tandem_lab::pair::{holders, wait_until, TandemNode, VrrpSettings};
use tandem_lab::{Host, Lab, CLIENT, LB1, LB2, VIP};

fn fast_settings() -> VrrpSettings {
    let mut settings = VrrpSettings::new(3, 101);
    settings.advert_interval = Duration::from_millis(100);
    settings
}

fn instance_status(node: &TandemNode) -> serde_json::Value {
    let status = node
        .status()
        .unwrap_or_else(|err| panic!("{err:#}\n{}", node.log_text()));
    status["vrrp"][0].clone()
}

/// Sends `payload` as IP protocol 112 from `host` to `to` with IP TTL `ttl`; to a multicast
/// group, out of the host's segment interface (as a peer's adverts go to 224.0.0.18).
fn send_vrrp(host: &Host, to: Ipv4Addr, ttl: u32, payload: Vec<u8>) {
    let source = host.ip;
    host.in_netns(move || {
        // SAFETY: plain socket(2)/setsockopt(2)/sendto(2)/close(2) on a descriptor we own, with
        // buffers that outlive the calls.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 112);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let ttl = ttl as libc::c_int;
            let set = |option: libc::c_int, value: *const libc::c_void, len: usize| {
                let done = libc::setsockopt(fd, libc::IPPROTO_IP, option, value, len as u32);
                assert!(done == 0, "setsockopt: {}", std::io::Error::last_os_error());
            };
            let int = std::mem::size_of::<libc::c_int>();
            set(libc::IP_TTL, (&ttl as *const libc::c_int).cast(), int);
            if to.is_multicast() {
                // The multicast TTL is separate from IP_TTL (and 1 by default).
                set(
                    libc::IP_MULTICAST_TTL,
                    (&ttl as *const libc::c_int).cast(),
                    int,
                );
                let interface = libc::in_addr {
                    s_addr: u32::from_ne_bytes(source.octets()),
                };
                set(
                    libc::IP_MULTICAST_IF,
                    (&interface as *const libc::in_addr).cast(),
                    std::mem::size_of::<libc::in_addr>(),
                );
            }
            let mut target: libc::sockaddr_in = std::mem::zeroed();
            target.sin_family = libc::AF_INET as u16;
            target.sin_addr.s_addr = u32::from_ne_bytes(to.octets());
            let sent = libc::sendto(
                fd,
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&target as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            assert!(sent >= 0, "sendto: {}", std::io::Error::last_os_error());
            libc::close(fd);
        }
    })
    .expect("send from the client");
}

#[test]
fn lone_node_becomes_master_and_status_shows_priority_master_and_adverts() {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let config = TandemNode::vrrp_config(&lab, lb1, &fast_settings());
    let node = TandemNode::start(&lab, lb1, &config).expect("start");
    wait_until(Duration::from_secs(5), "lb1 to hold the VIP", || {
        holders(&lab, VIP) == vec![LB1.to_owned()]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", node.log_text()));
    std::thread::sleep(Duration::from_millis(300));
    let status = instance_status(&node);
    assert_eq!(status["state"], "master");
    assert_eq!(status["configured_priority"], 101);
    assert_eq!(status["effective_priority"], 101);
    assert_eq!(status["master"], "198.18.0.100");
    assert!(
        status["adverts_sent"].as_u64().unwrap_or(0) >= 2,
        "{status}"
    );
    assert_eq!(
        status["transitions"], 2,
        "initialize -> backup -> master: {status}"
    );

    let text = std::process::Command::new(tandem_lab::tandem_binary().expect("binary"))
        .args(["status", "--socket"])
        .arg(&node.socket)
        .output()
        .expect("tandem status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("VI_1") && text.contains("MASTER"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when piped: {text}");
}

#[test]
fn malformed_adverts_are_dropped_counted_by_reason_and_change_nothing() {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let config = TandemNode::vrrp_config(&lab, lb1, &fast_settings());
    let node = TandemNode::start(&lab, lb1, &config).expect("start");
    wait_until(Duration::from_secs(5), "lb1 to hold the VIP", || {
        holders(&lab, VIP) == vec![LB1.to_owned()]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", node.log_text()));

    let client = lab.host(CLIENT);
    let lb1_address = lb1.ip;
    // A higher priority than lb1's: had any of these been accepted, lb1 would step down.
    let advert = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 200,
        interval: Duration::from_millis(100),
        addresses: vec![VIP.into()],
        password: None,
    };
    let valid = advert.emit(client.ip, lb1_address, ChecksumMode::WithPseudoHeader);
    for _ in 0..3 {
        // Sent with TTL 64: could have come from off the segment.
        send_vrrp(client, lb1_address, 64, valid.clone());
    }
    let mut bad_checksum = valid.clone();
    bad_checksum[6] ^= 0xff;
    for _ in 0..2 {
        send_vrrp(client, lb1_address, 255, bad_checksum.clone());
    }
    // Shorter than the VRRP header.
    send_vrrp(client, lb1_address, 255, valid[..6].to_vec());
    let v2 = Advert {
        version: Version::V2,
        interval: Duration::from_secs(1),
        ..advert.clone()
    }
    .emit(client.ip, lb1_address, ChecksumMode::WithPseudoHeader);
    send_vrrp(client, lb1_address, 255, v2);

    let expected = serde_json::json!({
        "ttl_not_255": 3,
        "bad_checksum": 2,
        "bad_length": 1,
        "version_mismatch": 1,
    });
    let mut status = serde_json::Value::Null;
    let counted = wait_until(Duration::from_secs(3), "the drops to be counted", || {
        status = instance_status(&node);
        status["drops"] == expected
    });
    assert!(counted.is_ok(), "drops: {}", status["drops"]);
    assert_eq!(
        status["state"], "master",
        "nothing malformed moves the master"
    );
    assert_eq!(status["adverts_received"], 0, "{status}");
    assert_eq!(holders(&lab, VIP), vec![LB1.to_owned()]);
}

#[test]
fn forged_adverts_from_a_host_that_is_not_the_unicast_peer_are_dropped_and_counted() {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let lb2 = lab.host(LB2);
    // lb1 takes adverts from lb2 only (which is not running, so lb1 becomes master).
    let config = TandemNode::vrrp_config(&lab, lb1, &fast_settings()).replacen(
        "[[vrrp]]\n",
        &format!("[[vrrp]]\nunicast_peer = [\"{}\"]\n", lb2.ip),
        1,
    );
    let node = TandemNode::start(&lab, lb1, &config).expect("start");
    wait_until(Duration::from_secs(5), "lb1 to hold the VIP", || {
        holders(&lab, VIP) == vec![LB1.to_owned()]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", node.log_text()));

    // The client forges well-formed adverts with the highest priority, sent to lb1 as a peer
    // would send them: had one been taken, lb1 would have stepped down at once.
    let client = lab.host(CLIENT);
    let forged = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 255,
        interval: Duration::from_millis(100),
        addresses: vec![VIP.into()],
        password: None,
    }
    .emit(client.ip, lb1.ip, ChecksumMode::WithPseudoHeader);
    for _ in 0..4 {
        send_vrrp(client, lb1.ip, 255, forged.clone());
    }

    let mut status = serde_json::Value::Null;
    let counted = wait_until(
        Duration::from_secs(3),
        "the forged adverts to be counted",
        || {
            status = instance_status(&node);
            status["drops"] == serde_json::json!({ "unknown_source": 4 })
        },
    );
    assert!(counted.is_ok(), "drops: {}", status["drops"]);
    assert_eq!(
        status["state"], "master",
        "a forged advert does not move the master"
    );
    assert_eq!(status["adverts_received"], 0, "{status}");
    assert_eq!(holders(&lab, VIP), vec![LB1.to_owned()]);
}

/// With multicast adverts, `allowed_sources` is what keeps a host on the segment from taking
/// the VIP: lb1 takes adverts from lb2 (a Tandem node with a lower priority) and none from the
/// client, whose forged highest-priority adverts to 224.0.0.18 are counted as
/// `unknown_source`.
#[test]
fn with_multicast_forged_adverts_from_a_host_not_in_allowed_sources_are_dropped_and_counted() {
    let lab = Lab::new().expect("lab");
    let (lb1, lb2) = (lab.host(LB1), lab.host(LB2));
    let mut low = fast_settings();
    low.priority = 100;
    let node2 =
        TandemNode::start(&lab, lb2, &TandemNode::vrrp_config(&lab, lb2, &low)).expect("start lb2");
    wait_until(Duration::from_secs(5), "lb2 to hold the VIP", || {
        holders(&lab, VIP) == vec![LB2.to_owned()]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", node2.log_text()));
    // lb1 joins while lb2 is master: it hears lb2's adverts, then takes over (it preempts).
    let config = TandemNode::vrrp_config(&lab, lb1, &fast_settings()).replacen(
        "[[vrrp]]\n",
        &format!("[[vrrp]]\nallowed_sources = [\"{}\"]\n", lb2.ip),
        1,
    );
    assert!(
        !config.contains("unicast_peer"),
        "multicast adverts: {config}"
    );
    let node1 = TandemNode::start(&lab, lb1, &config).expect("start lb1");
    let both = || format!("{}\n----\n{}", node1.log_text(), node2.log_text());
    wait_until(Duration::from_secs(5), "lb1 to hold the VIP alone", || {
        holders(&lab, VIP) == vec![LB1.to_owned()]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", both()));
    let before = instance_status(&node1);
    assert!(
        before["adverts_received"].as_u64().unwrap_or(0) > 0
            && before["drops"] == serde_json::json!({}),
        "lb2's adverts are received normally: {before:#}\n{}",
        both()
    );

    // The client forges well-formed adverts with the highest priority and sends them where
    // every advert goes: had one been taken, lb1 would have stepped down at once.
    let client = lab.host(CLIENT);
    let forged = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 255,
        interval: Duration::from_millis(100),
        addresses: vec![VIP.into()],
        password: None,
    }
    .emit(client.ip, MULTICAST_GROUP, ChecksumMode::WithPseudoHeader);
    for _ in 0..4 {
        send_vrrp(client, MULTICAST_GROUP, 255, forged.clone());
    }

    let mut status = serde_json::Value::Null;
    let counted = wait_until(
        Duration::from_secs(3),
        "the forged adverts to be counted",
        || {
            status = instance_status(&node1);
            status["drops"] == serde_json::json!({ "unknown_source": 4 })
        },
    );
    assert!(counted.is_ok(), "{status:#}\n{}", both());
    assert_eq!(
        status["state"], "master",
        "a forged advert does not move the master"
    );
    assert_eq!(
        status["adverts_received"], before["adverts_received"],
        "none of the forged adverts is received: {status:#}"
    );
    // Not even for a moment: a master that heard priority 255 would have stepped down, and
    // come back once the forger fell silent.
    assert_eq!(
        status["transitions"], before["transitions"],
        "lb1 stayed master throughout: {status:#}"
    );
    assert_eq!(holders(&lab, VIP), vec![LB1.to_owned()]);
}

#[test]
fn failing_weight_0_track_script_means_fault_and_notify_hears_every_transition() {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let healthy = lab.work_dir().join("healthy");
    std::fs::write(&healthy, "").expect("flag file");
    let notified = lab.work_dir().join("notified");
    let notify = lab.work_dir().join("notify.sh");
    std::fs::write(
        &notify,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", notified.display()),
    )
    .expect("notify script");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&notify)
        .status()
        .expect("chmod");
    let config = format!(
        "{}notify = \"{}\"\ntrack = [{{ script = \"test -e {}\", interval = \"100ms\", weight = 0, rise = 1, fall = 1 }}]\n",
        TandemNode::vrrp_config(&lab, lb1, &fast_settings()),
        notify.display(),
        healthy.display()
    );
    let node = TandemNode::start(&lab, lb1, &config).expect("start");
    let on_vip = |expected: &[&str]| {
        wait_until(Duration::from_secs(5), "the VIP holders", || {
            holders(&lab, VIP) == expected.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        })
        .unwrap_or_else(|err| panic!("{err:#}\n{}", node.log_text()));
    };
    on_vip(&[LB1]);

    std::fs::remove_file(&healthy).expect("remove the flag");
    on_vip(&[]);
    assert_eq!(instance_status(&node)["state"], "fault");

    std::fs::write(&healthy, "").expect("flag file");
    on_vip(&[LB1]);
    let lines = wait_until(Duration::from_secs(3), "five notifications", || {
        std::fs::read_to_string(&notified)
            .map(|text| text.lines().count() >= 5)
            .unwrap_or(false)
    });
    let text = std::fs::read_to_string(&notified).unwrap_or_default();
    assert!(lines.is_ok(), "notify got: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            "INSTANCE VI_1 BACKUP 101",
            "INSTANCE VI_1 MASTER 101",
            "INSTANCE VI_1 FAULT 101",
            "INSTANCE VI_1 BACKUP 101",
            "INSTANCE VI_1 MASTER 101",
        ],
        "{}",
        node.log_text()
    );
}

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the node's stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// A master with nothing to track sends its adverts and otherwise sleeps. (It once spun a
/// core: its select loop kept polling the closed tracker channel, ready at once every time.)
#[test]
fn an_idle_master_without_trackers_does_not_spin() {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let config = TandemNode::vrrp_config(&lab, lb1, &VrrpSettings::new(3, 101));
    let node = TandemNode::start(&lab, lb1, &config).expect("start");
    wait_until(Duration::from_secs(10), "lb1 to hold the VIP", || {
        holders(&lab, VIP) == vec![LB1.to_owned()]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", node.log_text()));
    let before = cpu_time(node.process.pid());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_time(node.process.pid()) - before;
    // A busy loop uses the whole 3 s; adverts, probes and timers use a few milliseconds.
    assert!(
        used < Duration::from_millis(500),
        "the idle node used {used:?} of CPU in 3 s"
    );
}

#[test]
fn a_panic_in_any_task_ends_the_daemon_and_the_release_step_frees_its_vip() {
    use std::os::unix::process::ExitStatusExt as _;
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let config = TandemNode::vrrp_config(&lab, lb1, &fast_settings());
    let fault = [("TANDEM_FAULT_INJECTION", "panic-in-task=3")];
    let mut node = TandemNode::start_with_env(&lab, lb1, &config, &fault).expect("start");
    wait_until(Duration::from_secs(3), "lb1 to hold the VIP", || {
        holders(&lab, VIP) == vec![LB1.to_owned()]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", node.log_text()));
    // The task panics 3 s after the start: the whole process goes, not just the task.
    let exit = node
        .process
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|err| {
            panic!(
                "the daemon outlived its panic: {err:#}\n{}",
                node.log_text()
            )
        });
    assert_eq!(exit.signal(), Some(libc::SIGABRT), "{exit:?}");
    assert!(node.log_text().contains("panicked"), "{}", node.log_text());
    // A crash leaves the VIP behind; the unit's release step (ExecStopPost) takes it away.
    assert_eq!(holders(&lab, VIP), vec![LB1.to_owned()]);
    node.release_step(&lab).expect("release step");
    assert!(holders(&lab, VIP).is_empty(), "{:?}", holders(&lab, VIP));
}

#[test]
fn a_vip_that_cannot_be_added_sends_the_instance_to_fault_and_the_peer_takes_over_until_it_can() {
    let lab = Lab::new().expect("lab");
    let (lb1, lb2) = (lab.host(LB1), lab.host(LB2));
    let mut high = fast_settings();
    high.priority = 150;
    let fault = [("TANDEM_FAULT_INJECTION", "vip-add-fails=1")];
    let config = TandemNode::vrrp_config(&lab, lb1, &high);
    let node1 = TandemNode::start_with_env(&lab, lb1, &config, &fault).expect("start lb1");
    let node2 = TandemNode::start(
        &lab,
        lb2,
        &TandemNode::vrrp_config(&lab, lb2, &fast_settings()),
    )
    .expect("start lb2");
    // lb1 wins the election, cannot add the VIP, goes to Fault with a priority-0 advert: lb2
    // takes the VIP at once (not after its master-down time of 3 adverts and more).
    wait_until(
        Duration::from_secs(5),
        "lb1 in Fault and lb2 holding the VIP",
        || {
            let in_fault = node1
                .status()
                .is_ok_and(|status| status["vrrp"][0]["state"] == "fault");
            in_fault && holders(&lab, VIP) == vec![LB2.to_owned()]
        },
    )
    .unwrap_or_else(|err| panic!("{err:#}\n{}\n{}", node1.log_text(), node2.log_text()));
    let status = instance_status(&node1);
    assert!(
        status["fault"]
            .as_str()
            .unwrap_or_default()
            .contains("adding virtual address"),
        "{status}"
    );
    // 5 s later lb1 tries again, succeeds, and takes the VIP back (it preempts).
    wait_until(Duration::from_secs(10), "lb1 to hold the VIP alone", || {
        holders(&lab, VIP) == vec![LB1.to_owned()]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", node1.log_text()));
    assert_eq!(instance_status(&node1)["state"], "master");
    assert!(instance_status(&node1).get("fault").is_none());
}
