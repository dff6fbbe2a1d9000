//! A network switch mid-call, in network namespaces (needs root): the patient has two interfaces,
//! "wifi" and "cell", each linked to the server's (root) namespace, and its default route over
//! wifi. Mid-call the wifi link goes down and cell comes up; the patient's client is told its
//! network changed (`network_changed()`, through `call-join --network-changes-on-stdin`), reopens
//! signaling (the WebSocket's TCP connection went with wifi), restarts ICE over cell, and media
//! comes back. The doctor sits in its own namespace; the root namespace forwards nothing, so the
//! call goes through the embedded TURN server. The doctor restarts ICE too once its connection
//! fails, and the two restarts may cross: perfect negotiation settles it (`protocol/src/protocol.md`).
//!
//! "Media back" is when each side decodes the other's first picture and first audio frame after
//! the gap (`call-join` prints `event: picture|audio decoded again after a gap of N ms`), the
//! latest of the four, counted from `network_changed()` (cell is usable from that moment here).
//! Used by the `network_switch` test (a bound) and the `turn` benchmark (the figures).
//!
//! With `SWITCH_STDERR_DIR=<dir>` and `TELEVISIT_LOG=televisit_core=debug`, each `call-join`'s
//! log goes to `<dir>/doctor.err` and `<dir>/patient.err`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::netns::{Link, Netns};
use crate::turn_lab::Lab;

/// What one switch measured.
#[derive(Debug, Clone)]
pub struct SwitchOutcome {
    /// From wifi going down until the doctor's stats showed media stalled.
    pub stalled_after: Duration,
    /// When each side decoded the other's first picture and audio over cell, from
    /// `network_changed()`.
    pub resumed: [(&'static str, Duration); 4],
}

impl SwitchOutcome {
    /// Media back both ways: the latest of [`SwitchOutcome::resumed`].
    pub fn media_back(&self) -> Duration {
        self.resumed.iter().map(|(_, after)| *after).max().expect("four")
    }

    /// Audio back both ways.
    pub fn audio_back(&self) -> Duration {
        self.resumed
            .iter()
            .filter(|(what, _)| what.starts_with("audio"))
            .map(|(_, after)| *after)
            .max()
            .expect("two")
    }
}

/// One call through the lab whose patient switches from wifi to cell once media flows; `Err`
/// (with both clients' output) if media does not flow before, or is not back within `within`
/// after. `call_join` is the `call-join` binary.
pub async fn wifi_to_cell(call_join: &str, within: Duration) -> Result<SwitchOutcome, String> {
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
    let mut patient = Watched::spawn(call_join, &lab.patient, "patient", &visit.patient_link, 60);
    let doctor = Watched::spawn(call_join, &lab.doctor, "doctor", &visit.doctor_link, 60);

    // Media flows both ways: each side decodes the other's audio and camera.
    let start = Instant::now();
    // Past the first seconds (a couple of seconds of audio and pictures).
    let settled = Counts { video_decoded: 20, audio_decoded: 80 };
    for (side, watched) in [("doctor", &doctor), ("patient", &patient)] {
        let at = watched.media_back(start, settled, Duration::from_secs(30));
        if at.is_none() {
            let log = watched.log(start);
            return Err(format!("the {side} decodes the other's audio and camera before the switch:\n{log}"));
        }
    }

    // Wifi goes down (its route with it); media stops.
    lab.patient.ip(&["link", "set", &wifi.b.ifname, "down"]);
    lab.patient.ip(&["link", "set", &cell.b.ifname, "up"]);
    lab.patient.ip(&["route", "add", "default", "via", &cell.a.ip.to_string()]);
    let down_at = Instant::now();
    // Media stops: a stats line that shows (almost) no new audio since the one before.
    let mut last: Option<Counts> = None;
    loop {
        let (at, counts) = doctor.stats_after(down_at, Duration::from_secs(3)).ok_or("no stats lines")?;
        if last.is_some_and(|l| counts.audio_decoded <= l.audio_decoded + 5) {
            break;
        }
        last = Some(counts);
        if at - down_at >= Duration::from_secs(10) {
            return Err(format!("media kept flowing without wifi: {counts:?}"));
        }
    }
    let stalled_after = down_at.elapsed();

    // The client learns its network changed; media comes back over cell, both ways.
    let bases = (doctor.latest(), patient.latest());
    let changed_at = Instant::now();
    writeln!(patient.child.stdin.as_mut().unwrap(), "network-changed").unwrap();
    let at_doctor = doctor.media_back(changed_at, bases.0, within);
    let at_patient = patient.media_back(changed_at, bases.1, within);
    if at_doctor.is_none() || at_patient.is_none() {
        return Err(format!(
            "media back within {within:?} of the network change: at the doctor {:?}, at the patient {:?}\nthe doctor (times from the change):\n{}\nthe patient:\n{}",
            at_doctor.map(|at| at - changed_at),
            at_patient.map(|at| at - changed_at),
            doctor.log(changed_at),
            patient.log(changed_at),
        ));
    }
    // When each side decoded the other's first picture and audio over cell (the lines that
    // end the gap), for the figure; the stats lines above only confirm they keep coming.
    let resumed = |watched: &Watched, what: &str| {
        let seen = watched.seen.borrow();
        let line = format!("event: {what} decoded again after a gap");
        let at = seen
            .iter()
            .find(|(at, l)| *at >= changed_at && l.starts_with(&line))
            .map(|(at, _)| *at - changed_at);
        at.ok_or_else(|| format!("a '{line}' line after the change:\n{}", watched.log(changed_at)))
    };
    let resumed = [
        ("picture at the doctor", resumed(&doctor, "picture")?),
        ("audio at the doctor", resumed(&doctor, "audio")?),
        ("picture at the patient", resumed(&patient, "picture")?),
        ("audio at the patient", resumed(&patient, "audio")?),
    ];
    drop(server);
    Ok(SwitchOutcome { stalled_after, resumed })
}

/// What a `call-join` stats line counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    video_decoded: u64,
    audio_decoded: u64,
}

impl Counts {
    /// `stats: video frames received N, decoded N at WxH (…), audio frames received N, decoded N, …`
    fn parse(line: &str) -> Option<Counts> {
        let (video, audio) = line.split_once("audio frames received ")?;
        let decoded = |part: &str| part.split(", decoded ").nth(1)?.split([' ', ',']).next()?.parse().ok();
        Some(Counts { video_decoded: decoded(video)?, audio_decoded: decoded(audio)? })
    }

    /// Both audio and camera pictures decoded since `base` (a few of each, not a straggler).
    fn flowing_since(&self, base: Counts) -> bool {
        self.audio_decoded >= base.audio_decoded + 20 && self.video_decoded >= base.video_decoded + 5
    }
}

/// A `call-join` whose output lines arrive, time-stamped, on a channel.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    /// Every line read so far, for a failure's message.
    seen: std::cell::RefCell<Vec<(Instant, String)>>,
}

impl Watched {
    fn spawn(call_join: &str, netns: &Netns, name: &str, link: &str, seconds: u64) -> Watched {
        let mut child = netns
            .command(call_join)
            .args([link, "--seconds", &seconds.to_string(), "--network-changes-on-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match std::env::var("SWITCH_STDERR_DIR") {
                Ok(dir) => Stdio::from(std::fs::File::create(format!("{dir}/{name}.err")).unwrap()),
                Err(_) => Stdio::null(),
            })
            .spawn()
            .expect("call-join starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Watched { child, lines, seen: Default::default() }
    }

    /// The counts of the next stats line printed after `after`, within `timeout`.
    fn stats_after(&self, after: Instant, timeout: Duration) -> Option<(Instant, Counts)> {
        let deadline = Instant::now() + timeout;
        while let Ok((at, line)) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.borrow_mut().push((at, line.clone()));
            if at < after || !line.starts_with("stats:") {
                continue;
            }
            return Some((at, Counts::parse(&line).unwrap_or_else(|| panic!("a stats line: {line}"))));
        }
        None
    }

    /// When a stats line after `after` first shows audio and pictures decoded since `base`, if
    /// within `timeout`.
    fn media_back(&self, after: Instant, base: Counts, timeout: Duration) -> Option<Instant> {
        let deadline = after + timeout;
        while let Some((at, counts)) =
            self.stats_after(after, deadline.saturating_duration_since(Instant::now()))
        {
            if counts.flowing_since(base) {
                return Some(at);
            }
        }
        None
    }

    /// The counts of the last stats line received so far (or of the next one).
    fn latest(&self) -> Counts {
        let mut latest = None;
        while let Ok((at, line)) = self.lines.try_recv() {
            self.seen.borrow_mut().push((at, line.clone()));
            latest = Counts::parse(&line).or(latest);
        }
        latest
            .or_else(|| self.stats_after(Instant::now(), Duration::from_secs(2)).map(|(_, c)| c))
            .expect("a stats line")
    }
}

impl Watched {
    /// The lines read so far, each with its time from `origin` (for a failure's message).
    fn log(&self, origin: Instant) -> String {
        let offset = |at: Instant| match at.checked_duration_since(origin) {
            Some(after) => format!("+{:.3}s", after.as_secs_f64()),
            None => format!("-{:.3}s", (origin - at).as_secs_f64()),
        };
        let seen = self.seen.borrow();
        seen.iter().map(|(at, l)| format!("{} {l}", offset(*at))).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
