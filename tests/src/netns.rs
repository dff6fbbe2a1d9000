//! Network namespaces for tests of real network paths on one machine: namespaces joined by veth
//! pairs with addresses, processes run inside a namespace, and firewalls that drop UDP.
//!
//! Everything is named uniquely (process id and a counter), so tests can run in parallel, and torn
//! down on drop. Addresses come from 198.18.0.0/15 (RFC 2544, set aside for benchmarking), one
//! /24 per link. Nothing is forwarded: the root namespace never routes between namespaces, so a
//! namespace reaches only what it is linked to (and, through its default route, the addresses
//! of the other end, as hosts accept packets for any of their own addresses).
//!
//! Dropping packets uses `tc`: an HTB qdisc on an interface's egress whose default class passes,
//! and a class whose queue holds zero packets, into which u32 filters put what is to be dropped
//! (this kernel has no tc actions, so `action drop` is not available).
//!
//! Needs root (CAP_NET_ADMIN); [`unavailable`] says why not and tests skip.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why namespaces cannot be made here (not root, no `ip`/`tc`), or `None` when they can.
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
    if uid != Some("0") {
        return Some("network namespace tests need root (CAP_NET_ADMIN)".into());
    }
    for tool in ["ip", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("network namespace tests need `{tool}` (iproute2)"));
        }
    }
    None
}

/// Returns `true` (after printing why) when the calling test must skip.
pub fn skip() -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
        None => false,
    }
}

fn unique() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command; panics with its output if it fails.
fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A network namespace, deleted on drop (with the interfaces in it).
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace with its loopback up; `tag` makes its name readable (`tv-<pid>-<n>-<tag>`).
    pub fn new(tag: &str) -> Netns {
        let name = format!("tv-{}-{}-{tag}", std::process::id(), unique());
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `ip <args>` in this namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `tc <args>` in this namespace.
    pub fn tc(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("tc", &all)
    }

    /// Sends everything not on a linked subnet to `via` (the other end of a [`Link`]).
    pub fn default_route(&self, via: Ipv4Addr) {
        self.ip(&["route", "add", "default", "via", &via.to_string()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// One end of a [`Link`]: an interface with an address, in a namespace or in the root namespace.
#[derive(Debug, Clone)]
pub struct End {
    /// The namespace's name; `None`: the root namespace.
    pub netns: Option<String>,
    /// The interface.
    pub ifname: String,
    /// Its address (a /24).
    pub ip: Ipv4Addr,
}

impl End {
    fn tc(&self, args: &[&str]) {
        let mut all = Vec::new();
        if let Some(netns) = &self.netns {
            all.extend_from_slice(&["-n", netns.as_str()]);
        }
        all.extend_from_slice(args);
        run("tc", &all);
    }

    /// Drops packets leaving through this end: every UDP datagram, except those to `except_port`.
    /// TCP passes.
    pub fn block_udp(&self, except_port: Option<u16>) {
        self.install_drop_classes();
        let mut prio = 1;
        if let Some(port) = except_port {
            let port = port.to_string();
            self.filter(
                prio,
                &["match", "ip", "protocol", "17", "0xff", "match", "ip", "dport", &port, "0xffff"],
                "1:10",
            );
            prio += 1;
        }
        self.filter(prio, &["match", "ip", "protocol", "17", "0xff"], "1:20");
    }

    /// Drops every packet leaving through this end except TCP to one of `ports` (a firewall that
    /// lets only, say, HTTPS out); TCP replies from this end's own listeners on them pass too.
    pub fn allow_only_tcp_to(&self, ports: &[u16]) {
        self.install_drop_classes();
        let mut prio = 1;
        for port in ports {
            let port = port.to_string();
            for direction in ["dport", "sport"] {
                self.filter(
                    prio,
                    &["match", "ip", "protocol", "6", "0xff", "match", "ip", direction, &port, "0xffff"],
                    "1:10",
                );
                prio += 1;
            }
        }
        self.filter(prio, &["match", "ip", "protocol", "0", "0x00"], "1:20");
    }

    fn install_drop_classes(&self) {
        let dev = self.ifname.as_str();
        self.tc(&[
            "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10", "r2q", "100000",
        ]);
        self.tc(&["class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"]);
        self.tc(&[
            "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb", "rate", "8bit", "ceil",
            "8bit",
        ]);
        // A queue of zero packets: everything classified here is dropped.
        self.tc(&["qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:", "pfifo", "limit", "0"]);
    }

    fn filter(&self, prio: u32, matches: &[&str], flowid: &str) {
        let prio = prio.to_string();
        let mut args = vec![
            "filter",
            "add",
            "dev",
            &self.ifname,
            "parent",
            "1:",
            "protocol",
            "ip",
            "prio",
            &prio,
            "u32",
        ];
        args.extend_from_slice(matches);
        args.extend_from_slice(&["flowid", flowid]);
        self.tc(&args);
    }

    /// Packets dropped by this end's firewall so far.
    pub fn dropped(&self) -> u64 {
        let mut args = Vec::new();
        if let Some(netns) = &self.netns {
            args.extend_from_slice(&["-n", netns.as_str()]);
        }
        args.extend_from_slice(&["-s", "qdisc", "show", "dev", &self.ifname]);
        let out = String::from_utf8_lossy(&run("tc", &args).stdout).into_owned();
        // The zero-length pfifo's line is followed by "Sent … (dropped N, …)".
        out.split("qdisc pfifo 20:")
            .nth(1)
            .and_then(|rest| rest.split("dropped ").nth(1))
            .and_then(|n| n.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// A veth pair between two namespaces (`None`: the root namespace), both ends up with an address
/// in a fresh /24 (`.1` on `a`, `.2` on `b`). The root end is deleted on drop; an end inside a
/// namespace goes with the namespace.
pub struct Link {
    /// The first end (`.1`).
    pub a: End,
    /// The second end (`.2`).
    pub b: End,
}

impl Link {
    /// Links `a` and `b`.
    pub fn new(a: Option<&Netns>, b: Option<&Netns>) -> Link {
        let n = unique();
        let base = format!("tv{:x}x{n}", std::process::id());
        let subnet = free_subnet();
        let mut ends = Vec::new();
        for (i, (netns, side)) in [(a, 'a'), (b, 'b')].into_iter().enumerate() {
            ends.push(End {
                netns: netns.map(|ns| ns.name().to_owned()),
                ifname: format!("{base}{side}"),
                ip: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], i as u8 + 1),
            });
        }
        let (ea, eb) = (&ends[0], &ends[1]);
        let mut add = vec!["link", "add", &ea.ifname];
        if let Some(ns) = &ea.netns {
            add.extend_from_slice(&["netns", ns]);
        }
        add.extend_from_slice(&["type", "veth", "peer", "name", &eb.ifname]);
        if let Some(ns) = &eb.netns {
            add.extend_from_slice(&["netns", ns]);
        }
        run("ip", &add);
        for end in [ea, eb] {
            let mut prefix = Vec::new();
            if let Some(ns) = &end.netns {
                prefix.extend_from_slice(&["-n", ns.as_str()]);
            }
            let cidr = format!("{}/24", end.ip);
            run("ip", &[&prefix[..], &["addr", "add", &cidr, "dev", &end.ifname]].concat());
            run("ip", &[&prefix[..], &["link", "set", &end.ifname, "up"]].concat());
        }
        Link { a: ends.remove(0), b: ends.remove(0) }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for end in [&self.a, &self.b] {
            if end.netns.is_none() {
                let _ = Command::new("ip").args(["link", "del", &end.ifname]).output();
            }
        }
    }
}

/// A /24 of 198.18.0.0/15 that no root-namespace interface uses (other tests' links included).
fn free_subnet() -> [u8; 3] {
    let used = String::from_utf8_lossy(&run("ip", &["-4", "-o", "addr"]).stdout).into_owned();
    let start = std::process::id().wrapping_mul(31).wrapping_add(unique().wrapping_mul(7));
    (0..512u32)
        .map(|i| {
            let k = (start + i) % 512;
            [198, 18 + (k / 256) as u8, (k % 256) as u8]
        })
        .find(|s| !used.contains(&format!(" {}.{}.{}.", s[0], s[1], s[2])))
        .expect("a free /24 in 198.18.0.0/15")
}
