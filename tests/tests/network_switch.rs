//! A network switch mid-call, in network namespaces: the patient has two interfaces, "wifi" and
//! "cell", each linked to the server's (root) namespace, and its default route over wifi. Mid-call
//! the wifi link goes down and cell comes up; the patient's client is told its network changed (`network_changed()`,
//! through `call-join --network-changes-on-stdin`), restarts ICE over cell, and media comes back.
//! The doctor sits in its own namespace; the root namespace forwards nothing, so the call goes
//! through the embedded TURN server.
//!
//! Measured (5 runs, `--ignored`): media back 3 s and 35 s after `network_changed()` in two runs, not
//! within 45 s in three (the calls ran 80 s). The restart offer goes out on the signaling
//! WebSocket, whose TCP connection went with wifi yet still counts as open (`network_changed()`
//! reopens signaling only when it is already closed), so it goes through only if and when the dead
//! connection is noticed. Hence `#[ignore]`: it runs with `-- --ignored` until signaling is
//! reopened on a network change, then it should run in `scripts/test` with a bound of seconds.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use televisit_tests::netns::{self, Link, Netns};
use televisit_tests::turn_lab::Lab;

/// A `call-join` whose output lines arrive, time-stamped, on a channel.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Watched {
    fn spawn(netns: &Netns, link: &str, seconds: u64) -> Watched {
        let mut child = netns
            .command(env!("CARGO_BIN_EXE_call-join"))
            .args([link, "--seconds", &seconds.to_string(), "--network-changes-on-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("call-join starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Watched { child, lines }
    }

    /// The next `audio frames received N` of a stats line printed after `after`, within `timeout`.
    fn audio_received_after(&self, after: Instant, timeout: Duration) -> Option<(Instant, u64)> {
        let deadline = Instant::now() + timeout;
        while let Ok((at, line)) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if at < after || !line.starts_with("stats:") {
                continue;
            }
            let count = line.split("audio frames received ").nth(1)?.split(',').next()?.parse().ok()?;
            return Some((at, count));
        }
        None
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "flaky until a network change reopens signaling: see the module doc"]
async fn the_patients_wifi_goes_down_mid_call_and_media_comes_back_over_cell() {
    if netns::skip() {
        return;
    }
    // The doctor and server as in the TURN lab; the patient's own link of the lab is left unused
    // (no route through it) and replaced by wifi and cell.
    let lab = Lab::new(true);
    let wifi = Link::new(None, Some(&lab.patient));
    let cell = Link::new(None, Some(&lab.patient));
    lab.patient.ip(&["route", "del", "default"]);
    lab.patient.ip(&["link", "set", &lab.to_patient.b.ifname, "down"]);
    lab.patient.ip(&["route", "add", "default", "via", &wifi.a.ip.to_string(), "metric", "10"]);
    // Cell is idle (down) until wifi goes: the client gathers nothing on it before the switch.
    lab.patient.ip(&["link", "set", &cell.b.ifname, "down"]);
    let turn = lab.embedded_turn();
    let server = lab
        .server(|c| {
            c.turn_secret = Some("switch-test-secret".into());
            c.embedded_turn = Some(turn);
        })
        .await;
    let visit = server.started_visit().await;
    let mut patient = Watched::spawn(&lab.patient, &visit.patient_link, 80);
    let doctor = Watched::spawn(&lab.doctor, &visit.doctor_link, 80);

    // Media flows: the doctor hears the patient.
    let start = Instant::now();
    let (_, flowing) =
        doctor.audio_received_after(start + Duration::from_secs(4), Duration::from_secs(20)).expect("stats");
    assert!(flowing >= 50, "the doctor heard the patient before the switch: {flowing} frames");

    // Wifi goes down (its route with it); media stops.
    lab.patient.ip(&["link", "set", &wifi.b.ifname, "down"]);
    lab.patient.ip(&["link", "set", &cell.b.ifname, "up"]);
    lab.patient.ip(&["route", "add", "default", "via", &cell.a.ip.to_string()]);
    let down_at = Instant::now();
    // Media stops: two stats lines in a row that show (almost) no new audio.
    let (mut last, mut stalled) = (0, None);
    while let Some((at, count)) = doctor.audio_received_after(down_at, Duration::from_secs(3)) {
        if last > 0 && count <= last + 5 {
            stalled = Some(count);
            break;
        }
        last = count;
        assert!(at - down_at < Duration::from_secs(10), "media kept flowing without wifi: {count} frames");
    }
    let b = stalled.expect("stats lines");
    println!("wifi down: audio at the doctor stalled at {b} frames after {:?}", down_at.elapsed());

    // The client learns its network changed; media comes back over cell.
    let changed_at = Instant::now();
    writeln!(patient.child.stdin.as_mut().unwrap(), "network-changed").unwrap();
    let mut back = None;
    while let Some((at, count)) = doctor.audio_received_after(changed_at, Duration::from_secs(45)) {
        if count > b + 20 {
            back = Some(at);
            break;
        }
    }
    let patient_lines: Vec<String> = patient
        .lines
        .try_iter()
        .map(|(at, l)| format!("{:?} {l}", at.saturating_duration_since(changed_at)))
        .collect();
    let back = back.unwrap_or_else(|| {
        panic!(
            "media came back within 45 s of the network change; the patient after it:\n{}",
            patient_lines.join("\n")
        )
    });
    // Without `network_changed()` media comes back only after ~50 s (the ICE failure's own
    // restart), so this bound tells the two apart.
    assert!(back - changed_at <= Duration::from_secs(45), "media back only after {:?}", back - changed_at);
    println!(
        "network switch wifi → cell: media back at the doctor {:?} after network_changed() (stats lines, 1 s resolution)",
        back - changed_at
    );
    drop(server);
}
