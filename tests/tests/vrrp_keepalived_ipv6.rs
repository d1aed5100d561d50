//! VRRP version 3 over IPv6 (RFC 5798) against the real thing: Tandem paired with Debian's
//! keepalived in an IPv6 instance (`vrrp_version 3`, VIP 2001:2::99), each way round. They
//! elect the higher priority; a crashed master is taken over within 3 x advert + skew; a
//! stopped one (priority-0 advert) within the skew time; the returning master preempts; and
//! after every move the client's neighbour entry for the VIP names the holder's MAC (the new
//! master's unsolicited neighbour advertisements moved it). A forged advert with hop limit 254
//! and a malformed one are dropped and counted.
//!
//! The lab is dual-stack ([`Lab::dual_stack`]): 2001:2::/64, RFC 5180's benchmarking range,
//! beside the hosts' link-local addresses, which the adverts come from.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use tandem::vrrp::wire::{Advert, ChecksumMode, Version, MULTICAST_GROUP_V6};
use tandem_lab::pair::{
    holders, neighbour_mac, wait_for_sole_holder, wait_until, Keepalived, TandemNode, VrrpSettings,
};
use tandem_lab::{Host, Lab, CLIENT, LB1, LB2, VIP6};
const ADVERT: Duration = Duration::from_secs(1);
/// Generous bound for an election at 1 s adverts: master down interval 3.6 s plus start-up.
const CONVERGE: Duration = Duration::from_secs(12);
/// What seeing a takeover costs on top of the protocol's time: one poll of every lab host's
/// addresses (an `ip` per host) and the 50 ms between polls, on a busy machine.
const OBSERVED_WITHIN: Duration = Duration::from_millis(500);

fn ipv6_lab() -> Lab {
    Lab::dual_stack().expect("dual-stack lab")
}

fn settings(priority: u8) -> VrrpSettings {
    VrrpSettings::new(3, priority).with_vip(VIP6)
}

/// The skew time of a backup with `priority` at 1 s adverts (RFC 5798 §6.1).
fn skew(priority: u8) -> Duration {
    ADVERT.mul_f64(f64::from(256 - u32::from(priority)) / 256.0)
}

/// `host`'s IPv6 link-local address: where its adverts come from.
fn link_local(host: &Host) -> Ipv6Addr {
    let json = host
        .run(
            "ip",
            &[
                "-json",
                "-6",
                "addr",
                "show",
                "dev",
                &host.iface,
                "scope",
                "link",
            ],
        )
        .expect("ip addr");
    let links: serde_json::Value = serde_json::from_str(&json).expect("ip -json");
    // `ip` lists an empty object for each address of another scope.
    links[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|address| address["local"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no link-local address on {}: {json}", host.name))
}

fn converged(lab: &Lab, host: &str, logs: impl Fn() -> String) -> Duration {
    wait_for_sole_holder(lab, host, VIP6, CONVERGE).unwrap_or_else(|err| {
        panic!(
            "{err:#}: holders {:?}, client's neighbour entry {:?}\n{}",
            holders(lab, VIP6),
            neighbour_mac(lab.host(CLIENT), VIP6),
            logs()
        )
    })
}

/// Tandem on lb1 (101) and keepalived on lb2 (100). Tandem wins and shows the IPv6 instance in
/// `tandem status`; stopped, it hands over with a priority-0 advert (keepalived takes over in
/// its skew time, not its master-down time); back, it preempts; crashed (SIGKILL, then the
/// unit's release step removes its VIP), keepalived takes over within 3 x advert + skew.
#[test]
fn tandem_master_and_keepalived_backup_over_ipv6_stop_preempt_and_crash() {
    let lab = ipv6_lab();
    let keepalived =
        Keepalived::start(&lab, lab.host(LB2), &settings(100)).expect("start keepalived");
    let lb1 = lab.host(LB1);
    let config = TandemNode::vrrp_config(&lab, lb1, &settings(101));
    let mut tandem = TandemNode::start(&lab, lb1, &config).expect("start tandem");
    let logs =
        |tandem: &TandemNode| format!("{}\n----\n{}", tandem.log_text(), keepalived.log_text());
    converged(&lab, LB1, || logs(&tandem));
    let status = tandem.status().expect("status");
    let instance = &status["vrrp"][0];
    assert_eq!(
        instance["virtual_ipaddress"],
        serde_json::json!([VIP6.to_string()]),
        "{instance:#}"
    );
    assert_eq!(instance["version"], 3, "{instance:#}");
    assert_eq!(
        instance["master"],
        link_local(lb1).to_string(),
        "{instance:#}"
    );
    let text = std::process::Command::new(tandem_lab::tandem_binary().expect("binary"))
        .args(["status", "--socket"])
        .arg(&tandem.socket)
        .output()
        .expect("tandem status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("2001:2::99"),
        "tandem status shows the VIP: {text}"
    );

    // Graceful stop: the priority-0 advert hands over after keepalived's skew time.
    let stopped = Instant::now();
    tandem
        .process
        .terminate(Duration::from_secs(5))
        .expect("tandem stops on SIGTERM");
    wait_until(CONVERGE, "keepalived to take the VIP", || {
        holders(&lab, VIP6) == [LB2]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", logs(&tandem)));
    let handover = stopped.elapsed();
    assert!(
        handover < ADVERT * 3,
        "a stopped master is taken over in the skew time ({:?}), not the master-down time: \
         took {handover:?}\n{}",
        skew(100),
        logs(&tandem)
    );
    converged(&lab, LB2, || logs(&tandem));

    // Back: Tandem preempts, having heard keepalived's adverts and dropped none.
    let mut tandem = TandemNode::start(&lab, lb1, &config).expect("restart tandem");
    converged(&lab, LB1, || logs(&tandem));
    let instance = tandem.status().expect("status")["vrrp"][0].clone();
    assert!(
        instance["adverts_received"].as_u64().unwrap_or(0) > 0
            && instance["drops"] == serde_json::json!({}),
        "the returning master hears keepalived's adverts and drops none: {instance:#}\n{}",
        logs(&tandem)
    );

    // Crash: nothing says goodbye; keepalived's master-down timer runs out.
    let crashed = Instant::now();
    tandem.crash_under_systemd(&lab).expect("crash tandem");
    assert!(
        !holders(&lab, VIP6).contains(&LB1.to_owned()),
        "the release step removed the IPv6 VIP"
    );
    wait_until(CONVERGE, "keepalived to take the VIP", || {
        holders(&lab, VIP6) == [LB2]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", logs(&tandem)));
    let takeover = crashed.elapsed();
    let bound = ADVERT * 3 + skew(100) + OBSERVED_WITHIN;
    assert!(
        takeover <= bound,
        "a crashed master is taken over within 3 x advert + skew: took {takeover:?}, bound \
         {bound:?}\n{}",
        logs(&tandem)
    );
    converged(&lab, LB2, || logs(&tandem));
    eprintln!("stop handover {handover:?}, crash takeover {takeover:?}");
    if std::env::var_os("TANDEM_TEST_SHOW_LOGS").is_some() {
        eprintln!("{}", logs(&tandem));
    }
}

/// keepalived on lb1 (101) and Tandem on lb2 (100). keepalived wins; crashed, Tandem takes
/// over within 3 x advert + skew and announces the VIP; back, keepalived preempts and Tandem
/// gives the VIP up; stopped (priority 0), Tandem takes over in its skew time.
#[test]
fn keepalived_master_and_tandem_backup_over_ipv6_crash_preempt_and_stop() {
    let lab = ipv6_lab();
    let lb2 = lab.host(LB2);
    let config = TandemNode::vrrp_config(&lab, lb2, &settings(100));
    let tandem = TandemNode::start(&lab, lb2, &config).expect("start tandem");
    let mut keepalived =
        Keepalived::start(&lab, lab.host(LB1), &settings(101)).expect("start keepalived");
    let logs =
        |keepalived: &Keepalived| format!("{}\n----\n{}", tandem.log_text(), keepalived.log_text());
    converged(&lab, LB1, || logs(&keepalived));

    let crashed = Instant::now();
    keepalived.crash();
    wait_until(CONVERGE, "Tandem to take the VIP", || {
        holders(&lab, VIP6).contains(&LB2.to_owned())
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", logs(&keepalived)));
    let takeover = crashed.elapsed();
    let bound = ADVERT * 3 + skew(100) + OBSERVED_WITHIN;
    assert!(
        takeover <= bound,
        "Tandem takes over a crashed master within 3 x advert + skew: took {takeover:?}, \
         bound {bound:?}\n{}",
        logs(&keepalived)
    );
    // keepalived has no release step: its VIP stays on lb1 after a crash. Removed by hand,
    // as an operator (or a reboot) would; the client already follows Tandem's announcements.
    let _ = lab.host(LB1).run(
        "ip",
        &["-6", "addr", "del", &format!("{VIP6}/128"), "dev", "eth0"],
    );
    converged(&lab, LB2, || logs(&keepalived));
    let instance = tandem.status().expect("status")["vrrp"][0].clone();
    assert_eq!(instance["state"], "master", "{instance:#}");

    let mut keepalived =
        Keepalived::start(&lab, lab.host(LB1), &settings(101)).expect("restart keepalived");
    converged(&lab, LB1, || logs(&keepalived));
    let instance = tandem.status().expect("status")["vrrp"][0].clone();
    assert_eq!(instance["state"], "backup", "{instance:#}");
    assert_eq!(
        instance["master"],
        link_local(lab.host(LB1)).to_string(),
        "Tandem names keepalived's link-local address as the master: {instance:#}"
    );

    let stopped = Instant::now();
    keepalived
        .process
        .terminate(Duration::from_secs(5))
        .expect("keepalived stops on SIGTERM");
    wait_until(CONVERGE, "Tandem to take the VIP", || {
        holders(&lab, VIP6) == [LB2]
    })
    .unwrap_or_else(|err| panic!("{err:#}\n{}", logs(&keepalived)));
    let handover = stopped.elapsed();
    assert!(
        handover < ADVERT * 3,
        "Tandem takes over a stopped master in its skew time ({:?}): took {handover:?}\n{}",
        skew(100),
        logs(&keepalived)
    );
    converged(&lab, LB2, || logs(&keepalived));
    let instance = tandem.status().expect("status")["vrrp"][0].clone();
    assert_eq!(
        instance["drops"],
        serde_json::json!({}),
        "nothing keepalived sent was dropped: {instance:#}"
    );
    eprintln!("crash takeover {takeover:?}, stop handover {handover:?}");
}

/// Sends `payload` as an IPv6 VRRP packet from `host` to ff02::12 with `hop_limit`; the kernel
/// picks the link-local source (the checksum must have been computed with it).
fn send_vrrp6(host: &Host, hop_limit: i32, payload: Vec<u8>) {
    let iface = std::ffi::CString::new(host.iface.clone()).expect("interface name");
    host.in_netns(move || {
        // SAFETY: plain socket(2)/setsockopt(2)/sendto(2)/close(2) on a descriptor we own,
        // with buffers that outlive the calls.
        unsafe {
            let index = libc::if_nametoindex(iface.as_ptr());
            assert!(index != 0, "if_nametoindex");
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, 112);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let set = |option: libc::c_int, value: libc::c_int| {
                let done = libc::setsockopt(
                    fd,
                    libc::IPPROTO_IPV6,
                    option,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
                assert!(done == 0, "setsockopt: {}", std::io::Error::last_os_error());
            };
            set(libc::IPV6_MULTICAST_HOPS, hop_limit);
            set(libc::IPV6_MULTICAST_IF, index as libc::c_int);
            let mut to: libc::sockaddr_in6 = std::mem::zeroed();
            to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            to.sin6_addr.s6_addr = MULTICAST_GROUP_V6.octets();
            to.sin6_scope_id = index;
            let sent = libc::sendto(
                fd,
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&to as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            );
            assert!(sent >= 0, "sendto: {}", std::io::Error::last_os_error());
            libc::close(fd);
        }
    })
    .expect("in the host's namespace");
}

/// A priority-255 advert with hop limit 254 (it could have come from off the link) and one
/// with a wrong checksum reach a Tandem master: both are dropped and counted by reason, and it
/// stays master.
#[test]
fn ipv6_adverts_with_hop_limit_254_or_a_bad_checksum_are_dropped_and_counted() {
    let lab = ipv6_lab();
    let lb1 = lab.host(LB1);
    let config = TandemNode::vrrp_config(&lab, lb1, &settings(101));
    let tandem = TandemNode::start(&lab, lb1, &config).expect("start tandem");
    converged(&lab, LB1, || tandem.log_text());

    let client = lab.host(CLIENT);
    let source = link_local(client);
    let forged = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 255,
        interval: ADVERT,
        addresses: vec![IpAddr::V6(VIP6)],
        password: None,
    };
    let valid = forged.emit(source, MULTICAST_GROUP_V6, ChecksumMode::default());
    let mut bad_checksum = valid.clone();
    bad_checksum[6] ^= 0xff;
    for _ in 0..3 {
        send_vrrp6(client, 254, valid.clone());
        send_vrrp6(client, 255, bad_checksum.clone());
    }
    let mut instance = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(5),
        "both kinds of drop to be counted",
        || {
            instance = tandem
                .status()
                .map(|status| status["vrrp"][0].clone())
                .unwrap_or_default();
            instance["drops"]["ttl_not_255"] == 3 && instance["drops"]["bad_checksum"] == 3
        },
    )
    .unwrap_or_else(|err| panic!("{err:#}: {instance:#}\n{}", tandem.log_text()));
    assert_eq!(instance["state"], "master", "{instance:#}");
    assert_eq!(instance["adverts_received"], 0, "{instance:#}");
    assert_eq!(holders(&lab, VIP6), [LB1]);
}
