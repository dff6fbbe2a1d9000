//! The network namespace harness itself: a process inside a namespace reaches the root namespace
//! over a [`Link`], and the firewalls drop what they say and nothing else. The root end listens
//! (this process); the namespace end sends with bash's `/dev/udp` and `/dev/tcp`.

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::time::Duration;

use televisit_tests::netns::{self, Link, Netns};

/// Runs `script` with bash inside `netns`; returns whether it succeeded.
fn bash(netns: &Netns, script: &str) -> bool {
    netns.command("bash").args(["-c", script]).output().unwrap().status.success()
}

fn udp_listener(ip: IpAddr) -> (UdpSocket, u16) {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

fn received(socket: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 64];
    socket.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}

fn tcp_reaches(netns: &Netns, ip: IpAddr, port: u16) -> bool {
    bash(netns, &format!("timeout 2 bash -c 'echo hi > /dev/tcp/{ip}/{port}'"))
}

#[test]
fn block_udp_drops_udp_except_to_the_given_port_and_lets_tcp_pass() {
    if netns::skip() {
        return;
    }
    let client = Netns::new("client");
    let link = Link::new(None, Some(&client));
    let ip = IpAddr::V4(link.a.ip);
    let (blocked, blocked_port) = udp_listener(ip);
    let (allowed, allowed_port) = udp_listener(ip);
    let tcp = TcpListener::bind((ip, 0)).unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();

    // Before the firewall both UDP ports get their datagram.
    assert!(bash(
        &client,
        &format!("echo one > /dev/udp/{ip}/{blocked_port}; echo two > /dev/udp/{ip}/{allowed_port}")
    ));
    assert_eq!((received(&blocked).as_deref(), received(&allowed).as_deref()), (Some("one"), Some("two")));

    link.b.block_udp(Some(allowed_port));
    assert!(bash(
        &client,
        &format!("echo three > /dev/udp/{ip}/{blocked_port}; echo four > /dev/udp/{ip}/{allowed_port}")
    ));
    assert_eq!(received(&blocked), None, "UDP to other ports is dropped");
    assert_eq!(received(&allowed).as_deref(), Some("four"), "UDP to the excepted port passes");
    assert!(link.b.dropped() >= 1, "the drop is counted");
    assert!(tcp_reaches(&client, ip, tcp_port), "TCP passes");
}

#[test]
fn allow_only_tcp_to_drops_udp_and_tcp_to_other_ports() {
    if netns::skip() {
        return;
    }
    let client = Netns::new("client");
    let link = Link::new(None, Some(&client));
    let ip = IpAddr::V4(link.a.ip);
    let (udp, udp_port) = udp_listener(ip);
    let (open, other) = (TcpListener::bind((ip, 0)).unwrap(), TcpListener::bind((ip, 0)).unwrap());
    let (open_port, other_port) = (open.local_addr().unwrap().port(), other.local_addr().unwrap().port());

    link.b.allow_only_tcp_to(&[open_port]);
    assert!(bash(&client, &format!("echo five > /dev/udp/{ip}/{udp_port}")));
    assert_eq!(received(&udp), None, "no UDP at all");
    assert!(tcp_reaches(&client, ip, open_port), "TCP to the allowed port passes");
    assert!(!tcp_reaches(&client, ip, other_port), "TCP to another port is dropped");
}

#[test]
fn namespaces_and_root_interfaces_are_removed_on_drop() {
    if netns::skip() {
        return;
    }
    let client = Netns::new("gone");
    let name = client.name().to_owned();
    let link = Link::new(None, Some(&client));
    let root_if = link.a.ifname.clone();
    drop(link);
    drop(client);
    let namespaces = String::from_utf8_lossy(
        &std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout,
    )
    .into_owned();
    assert!(!namespaces.contains(&name), "{namespaces}");
    let links = String::from_utf8_lossy(
        &std::process::Command::new("ip").args(["-o", "link"]).output().unwrap().stdout,
    )
    .into_owned();
    assert!(!links.contains(&root_if), "{links}");
}
