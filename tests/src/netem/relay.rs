//! The I/O edge of the emulator: a UDP relay on loopback that puts one [`Link`] per direction on
//! the media path of two WebRTC clients, and the [`MediaBackend`] wrapper that routes a client
//! through it.
//!
//! How the path is forced through the relay (no TURN, no root): each client gathers one host
//! candidate on 127.0.0.1. The relay has two front sockets, `front_a` and `front_b`. Side A's
//! advertised candidate is rewritten to `front_a`, B's to `front_b` (the relay learns each real
//! address from the candidate it rewrites). B sends to what it believes is A, `front_a`; the relay
//! runs the packet through the B→A link and sends it to A's real address *from `front_b`*, so A
//! sees it come from B's advertised address. Symmetrically for A's packets. Every other candidate
//! (a second host candidate, TCP, server-reflexive) is dropped, so no path bypasses the relay.
//!
//! A peer that cannot be wrapped (a browser) still works if only our side is: with
//! [`Relay::media_with_plain_peer`] our side hides the peer's candidates from its ICE agent, so
//! the peer's checks, sent to our advertised front, are the only way in; the relay learns the
//! peer's address from the first of them and our side learns the peer as the other front
//! (a peer-reflexive candidate).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_core::client::media::{IceConfig, MediaBackend, MediaSession, PeerCommand, PeerEvent};
use televisit_core::frame::{EncodedFrame, FrameKind};
use televisit_core::protocol::{IceCandidate, Role};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

use super::link::{Link, LinkConfig, PacketRecord};

/// One end of the emulated path: A (the doctor in the tests) or B (the patient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The first client (the doctor, by convention).
    A,
    /// The second client (the patient, by convention).
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// The two directions of the emulated link.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// What A sends to B crosses this link.
    pub a_to_b: LinkConfig,
    /// What B sends to A crosses this link.
    pub b_to_a: LinkConfig,
}

impl RelayConfig {
    /// The same link both ways (the B→A direction draws from another seed).
    pub fn symmetric(config: LinkConfig) -> RelayConfig {
        let b_to_a = LinkConfig { seed: config.seed.wrapping_add(1), ..config.clone() };
        RelayConfig { a_to_b: config, b_to_a }
    }
}

/// What the relay saw in one direction.
#[derive(Debug, Clone)]
pub struct DirectionReport {
    /// The link's configuration.
    pub config: LinkConfig,
    /// Every packet offered to the link, times from the schedule's start.
    pub records: Vec<PacketRecord>,
    /// Packets that arrived before the relay knew where to send them (dropped).
    pub undeliverable: u64,
}

/// A running relay; dropping it stops it.
pub struct Relay {
    shared: Arc<Shared>,
    fronts: [SocketAddr; 2],
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    audio: Mutex<AudioClock>,
}

struct State {
    /// The clients' real addresses, by side.
    real: [Option<SocketAddr>; 2],
    /// Links toward each side: `links[0]` carries B→A, `links[1]` A→B.
    links: [Link<Vec<u8>>; 2],
    undeliverable: [u64; 2],
    origin: Instant,
}

impl Relay {
    /// Binds the two front sockets on 127.0.0.1 and starts relaying (needs a tokio runtime).
    pub async fn start(config: RelayConfig) -> std::io::Result<Relay> {
        let now = Instant::now();
        let sockets = [
            Arc::new(UdpSocket::bind("127.0.0.1:0").await?),
            Arc::new(UdpSocket::bind("127.0.0.1:0").await?),
        ];
        let fronts = [sockets[0].local_addr()?, sockets[1].local_addr()?];
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                real: [None, None],
                links: [Link::new(config.b_to_a, now), Link::new(config.a_to_b, now)],
                undeliverable: [0, 0],
                origin: now,
            }),
            wake: Notify::new(),
            audio: Mutex::default(),
        });
        let mut tasks = Vec::new();
        for side in [Side::A, Side::B] {
            // Packets at side's front come from the other side and go toward `side`.
            let (socket, shared) = (Arc::clone(&sockets[side.index()]), Arc::clone(&shared));
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                    let mut state = shared.state.lock().unwrap();
                    // The sender is the other side; a peer whose candidates we don't rewrite is
                    // known from its first packet.
                    state.real[side.other().index()].get_or_insert(from);
                    state.links[side.index()].push_datagram(Instant::now(), buf[..len].to_vec());
                    drop(state);
                    shared.wake.notify_one();
                }
            }));
        }
        tasks.push(tokio::spawn(forward(Arc::clone(&shared), sockets)));
        Ok(Relay { shared, fronts, tasks })
    }

    /// The address the relay advertises as `side`'s.
    pub fn front(&self, side: Side) -> SocketAddr {
        self.fronts[side.index()]
    }

    /// Starts both links' schedules (and the reports' clock) again now, e.g. when the call connects.
    pub fn restart_schedule(&self) {
        let now = Instant::now();
        let mut state = self.shared.state.lock().unwrap();
        state.origin = now;
        for link in &mut state.links {
            link.restart_schedule(now);
        }
    }

    /// When the schedules started.
    pub fn origin(&self) -> Instant {
        self.shared.state.lock().unwrap().origin
    }

    /// What crossed (or did not cross) toward `to` so far.
    pub fn report(&self, to: Side) -> DirectionReport {
        let state = self.shared.state.lock().unwrap();
        let link = &state.links[to.index()];
        DirectionReport {
            config: link.config().clone(),
            records: link.records().to_vec(),
            undeliverable: state.undeliverable[to.index()],
        }
    }

    /// Delays of the audio frames `to` received from the other side: from the sender's
    /// `SendFrame` to the receiver's depacketized frame (pacer, link and jitter buffer), in order.
    pub fn audio_delays(&self, to: Side) -> Vec<(Instant, Duration)> {
        self.shared.audio.lock().unwrap().delays[to.index()].clone()
    }

    /// `inner` (a WebRTC backend gathering one UDP host candidate on 127.0.0.1) with its media
    /// routed through this relay as `side`.
    pub fn media(&self, side: Side, inner: Arc<dyn MediaBackend>) -> Arc<RelayedMedia> {
        let shared = Arc::clone(&self.shared);
        Arc::new(RelayedMedia { inner, side, front: self.front(side), shared, hide_peer_candidates: false })
    }

    /// Like [`Relay::media`], for a call whose peer is not routed through [`Relay::media`] (a
    /// browser, another app): the peer's candidates are hidden from `inner`, so it reaches the
    /// peer only through the relay.
    pub fn media_with_plain_peer(&self, side: Side, inner: Arc<dyn MediaBackend>) -> Arc<RelayedMedia> {
        let shared = Arc::clone(&self.shared);
        Arc::new(RelayedMedia { inner, side, front: self.front(side), shared, hide_peer_candidates: true })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sends what the links deliver, sleeping until the next packet is due or one arrives.
async fn forward(shared: Arc<Shared>, sockets: [Arc<UdpSocket>; 2]) {
    loop {
        let mut out = Vec::new();
        let next = {
            let mut state = shared.state.lock().unwrap();
            let now = Instant::now();
            for to in [Side::A, Side::B] {
                while let Some(delivered) = state.links[to.index()].poll(now) {
                    match state.real[to.index()] {
                        Some(addr) => out.push((to, addr, delivered.packet)),
                        None => state.undeliverable[to.index()] += 1,
                    }
                }
            }
            state.links.iter().filter_map(Link::next_timeout).min()
        };
        for (to, addr, packet) in out {
            // Sent from the other side's front, the address `to` knows its peer by.
            let _ = sockets[to.other().index()].send_to(&packet, addr).await;
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Audio frames sent and not yet matched, by sender, and the measured delays, by receiver.
#[derive(Default)]
struct AudioClock {
    sent: [VecDeque<(u64, Instant)>; 2],
    delays: [Vec<(Instant, Duration)>; 2],
}

impl AudioClock {
    fn sent(&mut self, from: Side, frame: &EncodedFrame) {
        let queue = &mut self.sent[from.index()];
        queue.push_back((digest(&frame.data), Instant::now()));
        if queue.len() > 5_000 {
            queue.pop_front();
        }
    }

    /// Frames arrive in order, so the first unmatched frame with the same content is this one
    /// (the frames before it were lost).
    fn received(&mut self, to: Side, frame: &EncodedFrame) {
        let now = Instant::now();
        let queue = &mut self.sent[to.other().index()];
        let hash = digest(&frame.data);
        if let Some(i) = queue.iter().position(|(h, _)| *h == hash) {
            let (_, sent_at) = queue.drain(..=i).next_back().expect("at least one");
            self.delays[to.index()].push((now, now - sent_at));
        }
    }
}

fn digest(data: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut hasher);
    hasher.finish()
}

/// A [`MediaBackend`] whose sessions advertise the relay's front instead of their own address
/// (see the module's documentation). Commands pass unchanged (but for the peer's candidates with
/// [`Relay::media_with_plain_peer`]); it also times audio frames for [`Relay::audio_delays`].
pub struct RelayedMedia {
    inner: Arc<dyn MediaBackend>,
    side: Side,
    front: SocketAddr,
    shared: Arc<Shared>,
    hide_peer_candidates: bool,
}

struct RelayedSession {
    inner: Box<dyn MediaSession>,
    side: Side,
    shared: Arc<Shared>,
    hide_peer_candidates: bool,
}

impl MediaBackend for RelayedMedia {
    fn create_session(
        &self,
        ice: IceConfig,
        role: Role,
        clock_origin: Instant,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Box<dyn MediaSession> {
        let (inner_events, mut from_inner) = mpsc::unbounded_channel();
        let inner = self.inner.create_session(ice, role, clock_origin, inner_events);
        let (side, front, shared) = (self.side, self.front, Arc::clone(&self.shared));
        tokio::spawn(async move {
            while let Some(event) = from_inner.recv().await {
                let event = match event {
                    PeerEvent::LocalCandidate(candidate) => {
                        match rewrite_candidate(&candidate, front, side, &shared) {
                            Some(candidate) => PeerEvent::LocalCandidate(candidate),
                            None => continue,
                        }
                    }
                    PeerEvent::LocalOffer(sdp) => {
                        PeerEvent::LocalOffer(rewrite_sdp(&sdp, front, side, &shared))
                    }
                    PeerEvent::LocalAnswer(sdp) => {
                        PeerEvent::LocalAnswer(rewrite_sdp(&sdp, front, side, &shared))
                    }
                    PeerEvent::Frame(frame) if frame.kind == FrameKind::Audio => {
                        shared.audio.lock().unwrap().received(side, &frame);
                        PeerEvent::Frame(frame)
                    }
                    other => other,
                };
                if events.send(event).is_err() {
                    break;
                }
            }
        });
        let hide_peer_candidates = self.hide_peer_candidates;
        Box::new(RelayedSession { inner, side, shared: Arc::clone(&self.shared), hide_peer_candidates })
    }
}

impl MediaSession for RelayedSession {
    fn command(&mut self, command: PeerCommand) {
        let command = match command {
            PeerCommand::SendFrame(frame) if frame.kind == FrameKind::Audio => {
                self.shared.audio.lock().unwrap().sent(self.side, &frame);
                PeerCommand::SendFrame(frame)
            }
            PeerCommand::AddRemoteCandidate(c) if self.hide_peer_candidates && !c.candidate.is_empty() => {
                return
            }
            PeerCommand::AcceptOffer(sdp) if self.hide_peer_candidates => {
                PeerCommand::AcceptOffer(strip_candidates(&sdp))
            }
            PeerCommand::AcceptAnswer(sdp) if self.hide_peer_candidates => {
                PeerCommand::AcceptAnswer(strip_candidates(&sdp))
            }
            other => other,
        };
        self.inner.command(command);
    }
}

/// The SDP without its `a=candidate` lines.
fn strip_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n').filter(|line| !line.starts_with("a=candidate:")).collect()
}

/// The candidate with the relay's front as its address, registering the real one; `None` for a
/// candidate that must not be advertised (anything but a UDP host candidate). The end-of-candidates
/// marker passes.
fn rewrite_candidate(
    candidate: &IceCandidate,
    front: SocketAddr,
    side: Side,
    shared: &Shared,
) -> Option<IceCandidate> {
    if candidate.candidate.is_empty() {
        return Some(candidate.clone());
    }
    let (line, real) = rewrite_candidate_line(&candidate.candidate, front)?;
    shared.state.lock().unwrap().real[side.index()] = Some(real);
    Some(IceCandidate { candidate: line, ..candidate.clone() })
}

/// The SDP with its `a=candidate` lines rewritten like trickled ones (or dropped), registering the
/// real address found.
fn rewrite_sdp(sdp: &str, front: SocketAddr, side: Side, shared: &Shared) -> String {
    let (sdp, real) = rewrite_sdp_candidates(sdp, front);
    if let Some(real) = real {
        shared.state.lock().unwrap().real[side.index()] = Some(real);
    }
    sdp
}

/// The SDP with its UDP host candidates' address set to `front` and its other candidates removed,
/// and the real address of the last one rewritten.
pub fn rewrite_sdp_candidates(sdp: &str, front: SocketAddr) -> (String, Option<SocketAddr>) {
    let (mut out, mut real) = (String::with_capacity(sdp.len()), None);
    for line in sdp.split_inclusive('\n') {
        match line.trim_end().strip_prefix("a=") {
            Some(attribute) if attribute.starts_with("candidate:") => {
                if let Some((rewritten, address)) = rewrite_candidate_line(attribute, front) {
                    real = Some(address);
                    out.push_str(&format!("a={rewritten}\r\n"));
                }
            }
            _ => out.push_str(line),
        }
    }
    (out, real)
}

/// `candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...`:
/// for a UDP host candidate, the line with `front` as address and port, and the real address.
pub fn rewrite_candidate_line(line: &str, front: SocketAddr) -> Option<(String, SocketAddr)> {
    let mut fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    if fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") || fields[6] != "typ" || fields[7] != "host"
    {
        return None;
    }
    let real = SocketAddr::new(fields[4].parse().ok()?, fields[5].parse().ok()?);
    fields[4] = front.ip().to_string();
    fields[5] = front.port().to_string();
    Some((fields.join(" "), real))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_udp_candidates_get_the_front_address_and_others_are_dropped() {
        let front: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let host = "candidate:1 1 udp 2130706431 127.0.0.1 54321 typ host generation 0";
        let (line, real) = rewrite_candidate_line(host, front).unwrap();
        assert_eq!(line, "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host generation 0");
        assert_eq!(real, "127.0.0.1:54321".parse::<SocketAddr>().unwrap());
        for other in [
            "candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
            "candidate:3 1 udp 1694498815 203.0.113.5 61000 typ srflx raddr 0.0.0.0 rport 0",
            "candidate:garbage",
        ] {
            assert_eq!(rewrite_candidate_line(other, front), None, "{other}");
        }
    }

    #[test]
    fn candidates_inside_an_sdp_are_rewritten_or_removed_and_the_rest_kept() {
        let front: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 54321 typ host\r\n\
                   a=candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active\r\n\
                   a=end-of-candidates\r\n";
        let (rewritten, real) = rewrite_sdp_candidates(sdp, front);
        assert_eq!(
            rewritten,
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
             a=end-of-candidates\r\n"
        );
        assert_eq!(real, Some("127.0.0.1:54321".parse().unwrap()));
        assert_eq!(
            strip_candidates(sdp),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=end-of-candidates\r\n"
        );
    }
}
