//! Which frames of a received stream reach the app's decoder (sans-I/O: packets and frames in,
//! verdicts out). The crate's sample builder rebuilds frames from RTP packets, but it hands over
//! any frame it completes: after a loss it gave up on, the next delta frame still comes out, and a
//! decoder fed it predicts from a picture it never had. VP8 and H.264 decoders take such a frame
//! without an error and show a corrupt picture (seen through the link emulator after a drop-out:
//! pictures 133, 134, then one whose frame counter read 133 again). So, as
//! libwebrtc does for streams without frame dependency descriptors (its `RtpSeqNumOnlyRefFinder`),
//! a delta frame is decodable only if its first packet follows the previous frame's last packet;
//! after a break, delta frames are dropped and the peer asked for a keyframe until one comes. The
//! builder completes frames in sequence order, so a keyframe would wait behind the frames before it
//! that still miss packets: its first packet makes reassembly start over there instead
//! ([`PacketAction::StartOverHere`]). A
//! stream that starts without its keyframe (over a relay the crate drops the first packets, which
//! arrive before the track exists) asks for one at once too, but its frames are passed on: the chain
//! starts at a keyframe, and until then the app's decoder is the one waiting for it (the
//! `VideoSink` does).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back a frame may be, seconds of its RTP clock, and still be a late copy of one already
/// given (not the start of a new stream).
const LATE_FRAME_WINDOW_SECONDS: u32 = 10;

/// Lets each frame of a received stream through once, in order. After a drop-out the sample
/// builder can hand over again frames it already gave (rebuilt from retransmitted packets that came
/// after it moved on; seen through the link emulator as pictures 124–126 shown twice): a decoder fed
/// an old frame after newer ones breaks its references, and an app's listener would get repeats.
#[derive(Debug, Default)]
pub struct FrameOrder {
    /// The SSRC and RTP timestamp of the newest frame let through.
    newest: Option<(u32, u32)>,
}

impl FrameOrder {
    /// Whether the frame of `ssrc` with this RTP timestamp is new. A frame at or up to
    /// [`LATE_FRAME_WINDOW_SECONDS`] behind the newest is not; one further behind, or of another
    /// SSRC, starts over (the peer's stream restarted at a random timestamp).
    pub fn admits(&mut self, ssrc: u32, rtp_timestamp: u32, clock_rate: u32) -> bool {
        if let Some((newest_ssrc, newest)) = self.newest {
            let behind = newest.wrapping_sub(rtp_timestamp);
            if newest_ssrc == ssrc && behind < clock_rate.saturating_mul(LATE_FRAME_WINDOW_SECONDS) {
                return false;
            }
        }
        self.newest = Some((ssrc, rtp_timestamp));
        true
    }
}

/// Frames whose packets are remembered at most: more than the sample builder holds (128 packets
/// of video), so a frame it completes is always found.
const SPANS_KEPT: usize = 256;

/// What to do with a received video frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Hand it to the app; `false`: a frame it predicts from was lost, drop it.
    pub decode: bool,
    /// Ask the peer for a keyframe (PLI) now.
    pub ask_keyframe: bool,
}

/// What to do with a received video packet, before the sample builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketAction {
    /// Give it to the sample builder.
    Reassemble,
    /// The first packet of a keyframe, while frames before it are still incomplete: start the
    /// builder over at this packet (and the later ones already received). The keyframe makes
    /// those frames useless, and the builder, which completes frames in sequence order, would hold
    /// the keyframe behind them until it gave up on their missing packets (through the link
    /// emulator after a drop-out, 0.6–1.6 s of frozen picture with the keyframe already there).
    StartOverHere,
    /// A packet (late, or resent) of a frame before the keyframe jumped to: drop it, or the
    /// builder would wait again for the gap before it.
    TooLate,
}

/// The packets of one frame received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// The frame's RTP timestamp.
    timestamp: u32,
    /// Its lowest and highest sequence numbers received.
    first: u16,
    last: u16,
    /// Its packets received.
    packets: u16,
}

/// Padding-only packets remembered at most (a sender pads between frames to probe the link).
const PADDING_KEPT: usize = 256;

/// Whether each received video frame can be decoded, from the sequence numbers of its packets.
#[derive(Debug)]
pub struct FrameChain {
    /// The frames not handed over yet.
    spans: VecDeque<Span>,
    /// Sequence numbers of padding-only packets after the last frame judged: they carry no media,
    /// so a frame after them still follows (a sender without RTX pads on the media stream).
    padding: VecDeque<u16>,
    /// The last sequence number of the last frame judged.
    last_sequence: Option<u16>,
    /// A keyframe came: from it on, a frame is decodable only if none before it was lost.
    keyframe_seen: bool,
    /// A frame was lost since the last keyframe.
    broken: bool,
    /// When the peer was last asked for a keyframe during this break.
    asked_at: Option<Instant>,
    /// Least time between two keyframe requests.
    request_interval: Duration,
    /// The RTP timestamp and first sequence number of the keyframe last jumped to: packets of
    /// other frames numbered before it are too late.
    jumped_to: Option<(u32, u16)>,
}

/// Whether sequence number `a` comes after `b` (RFC 3550 wrap-around).
fn after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Whether RTP timestamp `a` is `b` or after it (wrap-around).
fn newer(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) < 0x8000_0000
}

impl FrameChain {
    /// A chain that asks for a keyframe at most once per `request_interval`.
    pub fn new(request_interval: Duration) -> FrameChain {
        FrameChain {
            spans: VecDeque::new(),
            padding: VecDeque::new(),
            last_sequence: None,
            keyframe_seen: false,
            broken: false,
            asked_at: None,
            request_interval,
            jumped_to: None,
        }
    }

    /// A packet of the stream arrived (before it goes to the sample builder): `padding`, it
    /// carries no payload; `starts_keyframe`, it is a keyframe's first packet
    /// ([`VideoCodec::starts_keyframe`](crate::frame::VideoCodec::starts_keyframe)).
    pub fn on_packet(
        &mut self,
        rtp_timestamp: u32,
        sequence: u16,
        padding: bool,
        starts_keyframe: bool,
    ) -> PacketAction {
        if let Some((keyframe, first)) = self.jumped_to {
            if after(first, sequence) {
                if rtp_timestamp != keyframe || padding {
                    return PacketAction::TooLate;
                }
                // The keyframe's own earlier packet, reordered (an H.264 keyframe's SPS, when the
                // IDR slice came first): the builder takes it back to it.
                self.jumped_to = Some((keyframe, sequence));
            } else if sequence.wrapping_sub(first) >= 0x4000 {
                self.jumped_to = None; // long past: before the comparison wraps
            }
        }
        if padding {
            if self.padding.len() == PADDING_KEPT {
                self.padding.pop_front();
            }
            self.padding.push_back(sequence);
            return PacketAction::Reassemble;
        }
        // Only at the frame's first packet: an H.264 keyframe's IDR slice follows its SPS.
        let frame_started =
            self.spans.iter().any(|span| span.timestamp == rtp_timestamp && after(sequence, span.first));
        if starts_keyframe && !frame_started && self.missing_before(rtp_timestamp, sequence) {
            self.spans.retain(|span| newer(span.timestamp, rtp_timestamp));
            self.padding.clear();
            self.last_sequence = Some(sequence.wrapping_sub(1));
            self.jumped_to = Some((rtp_timestamp, sequence));
            self.remember(rtp_timestamp, sequence);
            return PacketAction::StartOverHere;
        }
        self.remember(rtp_timestamp, sequence);
        PacketAction::Reassemble
    }

    /// Notes a media packet in its frame's span.
    fn remember(&mut self, rtp_timestamp: u32, sequence: u16) {
        if let Some(span) = self.spans.iter_mut().rev().find(|span| span.timestamp == rtp_timestamp) {
            if after(span.first, sequence) {
                span.first = sequence;
            }
            if after(sequence, span.last) {
                span.last = sequence;
            }
            span.packets = span.packets.saturating_add(1);
            return;
        }
        if self.spans.len() == SPANS_KEPT {
            self.spans.pop_front();
        }
        self.spans.push_back(Span { timestamp: rtp_timestamp, first: sequence, last: sequence, packets: 1 });
    }

    /// Whether a packet numbered between the last frame judged and `sequence` (the first packet of
    /// the frame with this timestamp) has not come. The sample builder hands a frame over only
    /// once the next one starts, so frames before a keyframe are still waiting at its first packet:
    /// only a missing packet makes them incomplete. (A packet received twice counts twice, and may
    /// hide a missing one: then the keyframe waits, as without this.)
    fn missing_before(&self, rtp_timestamp: u32, sequence: u16) -> bool {
        let earlier = || self.spans.iter().filter(|span| !newer(span.timestamp, rtp_timestamp));
        let from = match self.last_sequence {
            Some(last) => last.wrapping_add(1),
            None => {
                match earlier().map(|span| span.first).max_by_key(|&first| sequence.wrapping_sub(first)) {
                    Some(first) => first,
                    None => return false,
                }
            }
        };
        let expected = sequence.wrapping_sub(from);
        let within = |s: u16| s.wrapping_sub(from) < expected;
        let received: usize =
            earlier().filter(|span| within(span.first)).map(|span| usize::from(span.packets)).sum::<usize>()
                + self.padding.iter().filter(|&&s| within(s)).count();
        expected < 0x8000 && received < usize::from(expected)
    }

    /// The sample builder completed the frame with this RTP timestamp (let through by
    /// [`FrameOrder`]): whether it can be decoded.
    pub fn on_frame(&mut self, rtp_timestamp: u32, keyframe: bool, now: Instant) -> Verdict {
        let span = self
            .spans
            .iter()
            .find(|span| span.timestamp == rtp_timestamp)
            .map(|span| (span.first, span.last));
        // This frame's packets, and those of frames before it the builder gave up on, are done.
        self.spans.retain(|span| span.timestamp != rtp_timestamp && newer(span.timestamp, rtp_timestamp));
        let follows = match (span, self.last_sequence) {
            (Some((first, _)), Some(mut previous)) => {
                while self.padding.contains(&previous.wrapping_add(1)) {
                    previous = previous.wrapping_add(1);
                }
                first == previous.wrapping_add(1)
            }
            _ => false,
        };
        if let Some((_, last)) = span {
            self.last_sequence = Some(last);
            self.padding.retain(|&sequence| after(sequence, last));
        }
        if keyframe {
            self.keyframe_seen = true;
            self.broken = false;
            self.asked_at = None;
        } else if !follows {
            self.broken = true;
        }
        if !self.broken {
            return Verdict { decode: true, ask_keyframe: false };
        }
        let ask_keyframe = self.asked_at.is_none_or(|at| now.duration_since(at) >= self.request_interval);
        if ask_keyframe {
            self.asked_at = Some(now);
        }
        Verdict { decode: !self.keyframe_seen, ask_keyframe }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEO_CLOCK_RATE: u32 = 90_000;
    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn each_frame_is_let_through_once_and_in_order_across_wrap_and_stream_restarts() {
        let mut order = FrameOrder::default();
        let frame = 3000; // 30 fps at 90 kHz
        assert!(order.admits(1, 1_000, VIDEO_CLOCK_RATE));
        assert!(order.admits(1, 1_000 + frame, VIDEO_CLOCK_RATE));
        assert!(!order.admits(1, 1_000 + frame, VIDEO_CLOCK_RATE), "the same frame again");
        assert!(!order.admits(1, 1_000, VIDEO_CLOCK_RATE), "an older frame after a newer one");
        assert!(order.admits(1, 1_000 + 2 * frame, VIDEO_CLOCK_RATE));
        // Across the 32-bit wrap.
        let mut order = FrameOrder::default();
        assert!(order.admits(1, u32::MAX - 1_000, VIDEO_CLOCK_RATE));
        assert!(order.admits(1, 2_000, VIDEO_CLOCK_RATE), "just past the wrap is newer");
        assert!(!order.admits(1, u32::MAX - 1_000, VIDEO_CLOCK_RATE), "before the wrap is older");
        // A restarted stream: another SSRC, or a timestamp far behind, starts over.
        assert!(order.admits(2, 500, VIDEO_CLOCK_RATE));
        assert!(order.admits(2, 500 + frame, VIDEO_CLOCK_RATE));
        let far_back = (500 + frame).wrapping_sub(11 * VIDEO_CLOCK_RATE);
        assert!(order.admits(2, far_back, VIDEO_CLOCK_RATE), "11 s back");
    }

    /// A stream of frames of `packets` packets each, numbered on from `sequence`.
    struct Stream {
        chain: FrameChain,
        sequence: u16,
        timestamp: u32,
        now: Instant,
    }

    impl Stream {
        fn new(sequence: u16) -> Stream {
            Stream { chain: FrameChain::new(SECOND), sequence, timestamp: 90_000, now: Instant::now() }
        }

        /// The next frame, its packets arriving unless `lost`; its verdict if it was completed.
        fn frame(&mut self, packets: u16, keyframe: bool, lost: bool) -> Option<Verdict> {
            self.timestamp = self.timestamp.wrapping_add(3000);
            self.now += Duration::from_millis(33);
            for n in 0..packets {
                if !lost {
                    let action =
                        self.chain.on_packet(self.timestamp, self.sequence, false, keyframe && n == 0);
                    assert_eq!(action, PacketAction::Reassemble, "nothing before it is incomplete");
                }
                self.sequence = self.sequence.wrapping_add(1);
            }
            (!lost).then(|| self.chain.on_frame(self.timestamp, keyframe, self.now))
        }
    }

    const DECODE: Option<Verdict> = Some(Verdict { decode: true, ask_keyframe: false });
    const DECODE_AND_ASK: Option<Verdict> = Some(Verdict { decode: true, ask_keyframe: true });
    const DROP_AND_ASK: Option<Verdict> = Some(Verdict { decode: false, ask_keyframe: true });
    const DROP: Option<Verdict> = Some(Verdict { decode: false, ask_keyframe: false });

    #[test]
    fn after_a_lost_frame_delta_frames_are_dropped_until_a_keyframe_which_is_asked_for() {
        let mut stream = Stream::new(65_530); // the numbers wrap on the way
        assert_eq!(stream.frame(3, true, false), DECODE, "the first keyframe");
        assert_eq!(stream.frame(2, false, false), DECODE);
        assert_eq!(stream.frame(2, false, false), DECODE, "across the wrap");
        assert_eq!(stream.frame(2, false, true), None, "lost whole");
        assert_eq!(stream.frame(2, false, false), DROP_AND_ASK, "predicts from the lost one");
        assert_eq!(stream.frame(1, false, false), DROP, "follows, but the picture is still broken");
        assert_eq!(stream.frame(3, true, false), DECODE, "the keyframe mends it");
        assert_eq!(stream.frame(2, false, false), DECODE);
    }

    #[test]
    fn while_the_keyframe_does_not_come_it_is_asked_for_once_per_interval() {
        let mut stream = Stream::new(100);
        // A stream that starts without its keyframe: passed on (the app's decoder waits for the
        // keyframe), and the keyframe asked for at once and once a second.
        assert_eq!(stream.frame(1, false, false), DECODE_AND_ASK, "the first frame, a delta");
        for _ in 0..30 {
            assert_eq!(stream.frame(1, false, false), DECODE, "asked less than a second ago");
        }
        assert_eq!(stream.frame(1, false, false), DECODE_AND_ASK, "a second later");
        assert_eq!(stream.frame(1, true, false), DECODE, "the keyframe");
        // A break after it: dropped, and asked for the same way.
        stream.frame(1, false, true);
        assert_eq!(stream.frame(1, false, false), DROP_AND_ASK, "a new break asks at once");
        for _ in 0..30 {
            assert_eq!(stream.frame(1, false, false), DROP);
        }
        assert_eq!(stream.frame(1, false, false), DROP_AND_ASK, "a second later");
        assert_eq!(stream.frame(1, true, false), DECODE);
    }

    #[test]
    fn packets_out_of_order_and_frames_the_builder_gave_up_on_are_told_apart() {
        let mut chain = FrameChain::new(SECOND);
        let now = Instant::now();
        // A keyframe whose packets came 12, 10, 11 (reordered by the link, or 10 resent).
        for sequence in [12, 10, 11] {
            chain.on_packet(1_000, sequence, false, false);
        }
        assert_eq!(chain.on_frame(1_000, true, now), DECODE.unwrap());
        // The next frame's first packet came, its last never did: the builder gives up on it.
        chain.on_packet(4_000, 13, false, false);
        // The frame after it is complete, but follows 14, which never came.
        chain.on_packet(7_000, 15, false, false);
        chain.on_packet(7_000, 16, false, false);
        assert_eq!(chain.on_frame(7_000, false, now), DROP_AND_ASK.unwrap());
        assert!(chain.spans.is_empty(), "the given-up frame is forgotten");
        // A resent packet of a frame long gone is forgotten at the next frame.
        chain.on_packet(1_000, 11, false, false);
        chain.on_packet(10_000, 17, false, false);
        assert_eq!(chain.on_frame(10_000, true, now), DECODE.unwrap());
        assert!(chain.spans.is_empty());
    }

    #[test]
    fn padding_between_frames_does_not_break_the_chain_but_a_lost_padding_packet_does() {
        let mut chain = FrameChain::new(SECOND);
        let now = Instant::now();
        chain.on_packet(1_000, 1, false, false);
        assert_eq!(chain.on_frame(1_000, true, now), DECODE.unwrap());
        // Padding 2 and 3 (with the last frame's timestamp), then the next frame.
        chain.on_packet(1_000, 2, true, false);
        chain.on_packet(1_000, 3, true, false);
        chain.on_packet(4_000, 4, false, false);
        assert_eq!(chain.on_frame(4_000, false, now), DECODE.unwrap());
        assert!(chain.padding.is_empty(), "padding before the frame judged is forgotten");
        // Padding 5 came, 6 did not: it may have been media.
        chain.on_packet(4_000, 5, true, false);
        chain.on_packet(7_000, 7, false, false);
        assert_eq!(chain.on_frame(7_000, false, now), DROP_AND_ASK.unwrap());
    }

    #[test]
    fn a_keyframe_arriving_behind_incomplete_frames_is_jumped_to_and_their_late_packets_dropped() {
        let mut chain = FrameChain::new(SECOND);
        let now = Instant::now();
        chain.on_packet(1_000, 100, false, true);
        assert_eq!(chain.on_frame(1_000, true, now), DECODE.unwrap());
        // A drop-out: frame 4 000 lost its packet 102, frame 7 000 is whole but behind it.
        chain.on_packet(4_000, 101, false, false);
        chain.on_packet(7_000, 103, false, false);
        // The keyframe's second packet, reordered ahead of its first.
        assert_eq!(chain.on_packet(10_000, 105, false, false), PacketAction::Reassemble);
        assert_eq!(chain.on_packet(10_000, 104, false, true), PacketAction::StartOverHere);
        let keyframe = Span { timestamp: 10_000, first: 104, last: 105, packets: 2 };
        assert_eq!(chain.spans, VecDeque::from([keyframe]), "only the keyframe is waited for");
        // 102 resent, and padding numbered before the keyframe: too late, whatever their timestamp.
        assert_eq!(chain.on_packet(4_000, 102, false, false), PacketAction::TooLate);
        assert_eq!(chain.on_packet(7_000, 103, true, false), PacketAction::TooLate);
        assert_eq!(chain.on_frame(10_000, true, now), DECODE.unwrap());
        assert_eq!(chain.on_packet(13_000, 106, false, false), PacketAction::Reassemble);
        assert_eq!(
            chain.on_frame(13_000, false, now),
            DECODE.unwrap(),
            "the next frame follows the keyframe"
        );
        // A keyframe after whole frames goes through the builder as usual, though the frame just
        // before it is not handed over yet (the builder waits for the next frame's start).
        chain.on_packet(16_000, 107, false, false);
        chain.on_packet(16_000, 109, false, false);
        chain.on_packet(16_000, 108, false, false);
        chain.on_packet(16_000, 110, true, false);
        assert_eq!(chain.on_packet(19_000, 111, false, true), PacketAction::Reassemble);
        assert_eq!(chain.on_frame(16_000, false, now), DECODE.unwrap());
        assert_eq!(chain.on_frame(19_000, true, now), DECODE.unwrap());
        // Far on, the jump is forgotten before sequence numbers wrap around to it.
        for sequence in 112..(112 + 0x4000) {
            chain.on_packet(16_000, sequence, true, false);
        }
        assert_eq!(chain.jumped_to, None);
        assert_eq!(chain.on_packet(19_000, 0x9000, false, false), PacketAction::Reassemble);
    }

    #[test]
    fn an_h264_keyframe_is_jumped_to_at_its_first_packet_and_keeps_a_parameter_set_that_came_late() {
        let now = Instant::now();
        let mut chain = FrameChain::new(SECOND);
        chain.on_packet(1_000, 10, false, true);
        assert_eq!(chain.on_frame(1_000, true, now), DECODE.unwrap());
        chain.on_packet(4_000, 12, false, false); // 11 lost
                                                  // SPS and PPS (a STAP-A), then the IDR slice's first fragment: both start a keyframe.
        assert_eq!(chain.on_packet(7_000, 13, false, true), PacketAction::StartOverHere);
        assert_eq!(chain.on_packet(7_000, 14, false, true), PacketAction::Reassemble, "the same keyframe");
        assert_eq!(chain.on_frame(7_000, true, now), DECODE.unwrap());
        // Again, but the IDR slice overtakes the parameter sets: they still reach the builder.
        chain.on_packet(10_000, 16, false, false); // 15 lost
        assert_eq!(chain.on_packet(13_000, 18, false, true), PacketAction::StartOverHere);
        assert_eq!(chain.on_packet(13_000, 17, false, true), PacketAction::Reassemble, "its own SPS");
        assert_eq!(chain.on_packet(10_000, 15, false, false), PacketAction::TooLate);
        assert_eq!(chain.on_frame(13_000, true, now), DECODE.unwrap());
    }

    #[test]
    fn what_is_remembered_stays_bounded_when_no_frame_completes() {
        let mut chain = FrameChain::new(SECOND);
        for n in 0..10_000u32 {
            chain.on_packet(n * 3000, n as u16, false, false);
            chain.on_packet(n * 3000, n as u16, true, false);
        }
        assert_eq!(chain.spans.len(), SPANS_KEPT);
        assert_eq!(chain.padding.len(), PADDING_KEPT);
    }
}
