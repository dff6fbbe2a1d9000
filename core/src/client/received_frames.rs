//! Which frames of a received stream reach the app's decoder (sans-I/O: packets and frames in,
//! verdicts out). The crate's sample builder rebuilds frames from RTP packets, but it hands over
//! any frame it completes: after a loss it gave up on, the next delta frame still comes out, and a
//! decoder fed it predicts from a picture it never had. VP8 and H.264 decoders take such a frame
//! without an error and show a corrupt picture (seen through the link emulator after a drop-out:
//! pictures 133, 134, then one whose frame counter read 133 again). So, as
//! libwebrtc does for streams without frame dependency descriptors (its `RtpSeqNumOnlyRefFinder`),
//! a delta frame is decodable only if its first packet follows the previous frame's last packet;
//! after a break, delta frames are dropped and the peer asked for a keyframe until one comes. A
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

/// Padding-only packets remembered at most (a sender pads between frames to probe the link).
const PADDING_KEPT: usize = 256;

/// Whether each received video frame can be decoded, from the sequence numbers of its packets.
#[derive(Debug)]
pub struct FrameChain {
    /// Per RTP timestamp of a frame not handed over yet: its lowest and highest sequence number.
    spans: VecDeque<(u32, u16, u16)>,
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
}

/// Whether sequence number `a` comes after `b` (RFC 3550 wrap-around).
fn after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
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
        }
    }

    /// A packet of the stream arrived (before it goes to the sample builder); `padding`: it
    /// carries no payload.
    pub fn on_packet(&mut self, rtp_timestamp: u32, sequence: u16, padding: bool) {
        if padding {
            if self.padding.len() == PADDING_KEPT {
                self.padding.pop_front();
            }
            self.padding.push_back(sequence);
            return;
        }
        if let Some((_, first, last)) = self.spans.iter_mut().rev().find(|(ts, ..)| *ts == rtp_timestamp) {
            if after(*first, sequence) {
                *first = sequence;
            }
            if after(sequence, *last) {
                *last = sequence;
            }
            return;
        }
        if self.spans.len() == SPANS_KEPT {
            self.spans.pop_front();
        }
        self.spans.push_back((rtp_timestamp, sequence, sequence));
    }

    /// The sample builder completed the frame with this RTP timestamp (let through by
    /// [`FrameOrder`]): whether it can be decoded.
    pub fn on_frame(&mut self, rtp_timestamp: u32, keyframe: bool, now: Instant) -> Verdict {
        let span =
            self.spans.iter().find(|(ts, ..)| *ts == rtp_timestamp).map(|&(_, first, last)| (first, last));
        // This frame's packets, and those of frames before it the builder gave up on, are done.
        self.spans.retain(|&(ts, ..)| ts != rtp_timestamp && ts.wrapping_sub(rtp_timestamp) < 0x8000_0000);
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
            for _ in 0..packets {
                if !lost {
                    self.chain.on_packet(self.timestamp, self.sequence, false);
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
            chain.on_packet(1_000, sequence, false);
        }
        assert_eq!(chain.on_frame(1_000, true, now), DECODE.unwrap());
        // The next frame's first packet came, its last never did: the builder gives up on it.
        chain.on_packet(4_000, 13, false);
        // The frame after it is complete, but follows 14, which never came.
        chain.on_packet(7_000, 15, false);
        chain.on_packet(7_000, 16, false);
        assert_eq!(chain.on_frame(7_000, false, now), DROP_AND_ASK.unwrap());
        assert!(chain.spans.is_empty(), "the given-up frame is forgotten");
        // A resent packet of a frame long gone is forgotten at the next frame.
        chain.on_packet(1_000, 11, false);
        chain.on_packet(10_000, 17, false);
        assert_eq!(chain.on_frame(10_000, true, now), DECODE.unwrap());
        assert!(chain.spans.is_empty());
    }

    #[test]
    fn padding_between_frames_does_not_break_the_chain_but_a_lost_padding_packet_does() {
        let mut chain = FrameChain::new(SECOND);
        let now = Instant::now();
        chain.on_packet(1_000, 1, false);
        assert_eq!(chain.on_frame(1_000, true, now), DECODE.unwrap());
        // Padding 2 and 3 (with the last frame's timestamp), then the next frame.
        chain.on_packet(1_000, 2, true);
        chain.on_packet(1_000, 3, true);
        chain.on_packet(4_000, 4, false);
        assert_eq!(chain.on_frame(4_000, false, now), DECODE.unwrap());
        assert!(chain.padding.is_empty(), "padding before the frame judged is forgotten");
        // Padding 5 came, 6 did not: it may have been media.
        chain.on_packet(4_000, 5, true);
        chain.on_packet(7_000, 7, false);
        assert_eq!(chain.on_frame(7_000, false, now), DROP_AND_ASK.unwrap());
    }

    #[test]
    fn what_is_remembered_stays_bounded_when_no_frame_completes() {
        let mut chain = FrameChain::new(SECOND);
        for n in 0..10_000u32 {
            chain.on_packet(n * 3000, n as u16, false);
            chain.on_packet(n * 3000, n as u16, true);
        }
        assert_eq!(chain.spans.len(), SPANS_KEPT);
        assert_eq!(chain.padding.len(), PADDING_KEPT);
    }
}
