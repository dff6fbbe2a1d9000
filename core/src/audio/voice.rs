//! The sans-I/O voice paths around Opus: [`VoiceSender`] makes 20 ms packets of 10 ms frames,
//! [`VoiceReceiver`] turns packets into 10 ms frames through the jitter buffer. Time is an
//! argument; nothing here has a thread, a socket or a clock.

use std::collections::VecDeque;

use super::jitter::{AudioPacket, JitterBuffer, JitterStats, Playout};
use super::opus::{packet_samples, VoiceDecoder, VoiceEncoder, INITIAL_EXPECTED_LOSS_PERCENT};
use super::{AudioError, FRAME_SAMPLES, PACKET_SAMPLES};

/// Checks a PCM frame's length.
pub fn check_frame(pcm: &[i16]) -> Result<(), AudioError> {
    if pcm.len() != FRAME_SAMPLES {
        return Err(AudioError::WrongFrameSize { expected: FRAME_SAMPLES as u32, got: pcm.len() as u32 });
    }
    Ok(())
}

/// 10 ms PCM frames in, 20 ms Opus packets out, with in-band FEC following the measured loss.
#[derive(Debug)]
pub struct VoiceSender {
    encoder: VoiceEncoder,
    pending: Vec<i16>,
    expected_loss: u8,
}

impl VoiceSender {
    /// A sender.
    pub fn new() -> Result<VoiceSender, AudioError> {
        Ok(VoiceSender {
            encoder: VoiceEncoder::new()?,
            pending: Vec::with_capacity(PACKET_SAMPLES),
            expected_loss: INITIAL_EXPECTED_LOSS_PERCENT,
        })
    }

    /// Sizes the FEC for the measured packet loss, percent.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), AudioError> {
        if percent != self.expected_loss {
            self.encoder.set_expected_loss(percent)?;
            self.expected_loss = percent;
        }
        Ok(())
    }

    /// Takes a 10 ms frame; every second one completes a packet, returned.
    pub fn push(&mut self, pcm: &[i16]) -> Result<Option<Vec<u8>>, AudioError> {
        check_frame(pcm)?;
        self.pending.extend_from_slice(pcm);
        if self.pending.len() < PACKET_SAMPLES {
            return Ok(None);
        }
        let packet = self.encoder.encode(&self.pending);
        self.pending.clear();
        packet.map(Some)
    }
}

/// Packets in (with their arrival time), 10 ms frames out: always a frame, of decoded audio,
/// rebuilt audio (FEC), concealment, or silence.
#[derive(Debug)]
pub struct VoiceReceiver {
    buffer: JitterBuffer,
    decoder: VoiceDecoder,
    pcm: VecDeque<i16>,
    decode_errors: u64,
    /// A received packet's (SSRC, RTP timestamp, capture time): one pair dates every timestamp
    /// of its stream (the sender's audio clock runs with its wall clock).
    clock: Option<(u32, u32, i64)>,
    /// The RTP timestamp of the first sample of the last frame pulled.
    pulled_timestamp: Option<u32>,
}

impl VoiceReceiver {
    /// A receiver with an empty buffer.
    pub fn new() -> Result<VoiceReceiver, AudioError> {
        Ok(VoiceReceiver {
            buffer: JitterBuffer::new(),
            decoder: VoiceDecoder::new()?,
            pcm: VecDeque::with_capacity(super::opus::MAX_PACKET_SAMPLES + FRAME_SAMPLES),
            decode_errors: 0,
            clock: None,
            pulled_timestamp: None,
        })
    }

    /// A packet that arrived at `arrival_ms`.
    pub fn push(&mut self, packet: AudioPacket, arrival_ms: i64) {
        match packet.capture_time_us {
            Some(capture) => self.clock = Some((packet.ssrc, packet.timestamp, capture)),
            // A new stream (a new connection) is not dated until its own first sender report.
            None if self.clock.is_some_and(|(ssrc, ..)| ssrc != packet.ssrc) => self.clock = None,
            None => {}
        }
        self.buffer.push(packet, arrival_ms);
    }

    /// The next 10 ms frame ([`FRAME_SAMPLES`] samples) to play at `now_ms`.
    pub fn pull(&mut self, now_ms: i64) -> Vec<i16> {
        while self.pcm.len() < FRAME_SAMPLES {
            let (decoded, expected) = match self.buffer.next(now_ms, self.pcm.len()) {
                Playout::Decode { payload, discard } => {
                    let expected = packet_samples(&payload).unwrap_or(PACKET_SAMPLES);
                    let decoded =
                        self.decoder.decode(&payload).map(|pcm| pcm[discard.min(pcm.len())..].to_vec());
                    (decoded, expected.saturating_sub(discard))
                }
                Playout::Recover { next, samples } => (self.decoder.recover(&next, samples), samples),
                Playout::Conceal(samples) => (self.decoder.conceal(samples), samples),
                Playout::Silence(samples) => (Ok(vec![0; samples]), samples),
            };
            match decoded {
                Ok(pcm) => self.pcm.extend(pcm),
                Err(_) => {
                    // A corrupt packet: its time is filled with silence.
                    self.decode_errors += 1;
                    self.pcm.extend(std::iter::repeat_n(0, expected.max(1)));
                }
            }
        }
        // What is decoded and not yet handed out lies between the frame pulled and `next`.
        let pending = (self.pcm.len() + FRAME_SAMPLES) as u32;
        self.pulled_timestamp = self.buffer.next_timestamp().map(|next| next.wrapping_sub(pending));
        self.pcm.drain(..FRAME_SAMPLES).collect()
    }

    /// When the sender sent the sound of the last frame pulled, µs since the Unix epoch on the
    /// sender's clock (its video frames carry the same clock in
    /// [`crate::frame::FrameTiming::capture_time_us`]): the picture to show with it is the one
    /// sent then. `None` before playout starts and until the sender's first report; during a gap
    /// (concealment, silence) it stays at the last sound played.
    pub fn playing_capture_time_us(&self) -> Option<i64> {
        let (_, timestamp, capture) = self.clock?;
        let ticks = i64::from(self.pulled_timestamp?.wrapping_sub(timestamp) as i32);
        Some(capture + ticks * 1_000_000 / i64::from(super::SAMPLE_RATE))
    }

    /// What the jitter buffer did.
    pub fn stats(&self) -> JitterStats {
        self.buffer.stats()
    }

    /// Packets Opus could not decode.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::opus::packet_has_fec;
    use crate::audio::signal::{goertzel_ratio, rms, tone};

    /// 10 ms frames of a tone at `hz`.
    fn frames(hz: f64, count: usize) -> Vec<Vec<i16>> {
        tone(hz, 0, count * FRAME_SAMPLES).chunks(FRAME_SAMPLES).map(<[i16]>::to_vec).collect()
    }

    fn packets(hz: f64, count: usize, loss: u8) -> Vec<Vec<u8>> {
        let mut sender = VoiceSender::new().unwrap();
        sender.set_expected_loss(loss).unwrap();
        frames(hz, count * 2).iter().filter_map(|f| sender.push(f).unwrap()).collect()
    }

    fn rtp(n: usize, payload: Vec<u8>) -> AudioPacket {
        AudioPacket {
            ssrc: 7,
            sequence: n as u16,
            timestamp: (n * PACKET_SAMPLES) as u32,
            payload,
            capture_time_us: Some(1_000_000 + n as i64 * 20_000),
        }
    }

    #[test]
    fn the_sender_makes_one_packet_of_two_frames_and_refuses_wrong_sizes() {
        let mut sender = VoiceSender::new().unwrap();
        let tone = frames(440.0, 2);
        assert_eq!(sender.push(&tone[0]).unwrap(), None);
        let packet = sender.push(&tone[1]).unwrap().expect("a packet");
        assert_eq!(packet_samples(&packet), Some(PACKET_SAMPLES));
        assert_eq!(sender.push(&[0; 960]), Err(AudioError::WrongFrameSize { expected: 480, got: 960 }));
        assert_eq!(sender.push(&[]), Err(AudioError::WrongFrameSize { expected: 480, got: 0 }));
    }

    /// Runs `count` packets through a receiver with every `lose`-th lost, pulling in real time;
    /// returns the played audio and the stats.
    fn through(count: usize, lose: Option<usize>, loss_percent: u8) -> (Vec<i16>, JitterStats) {
        let packets = packets(440.0, count, loss_percent);
        let mut receiver = VoiceReceiver::new().unwrap();
        let mut played = vec![];
        for (n, packet) in packets.into_iter().enumerate() {
            let at = (n as i64 + 1) * 20;
            if lose.is_none_or(|k| n % k != k - 1) {
                receiver.push(rtp(n, packet), at);
            }
            played.extend(receiver.pull(at));
            played.extend(receiver.pull(at + 10));
        }
        (played, receiver.stats())
    }

    #[test]
    fn a_tone_comes_out_as_the_tone_on_a_clean_path() {
        let (played, stats) = through(100, None, 0);
        assert_eq!(played.len(), 100 * PACKET_SAMPLES);
        let tail = &played[played.len() / 2..];
        assert!(rms(tail) > 5000.0, "rms {}", rms(tail));
        assert!(goertzel_ratio(tail, 440.0, 660.0) > 1000.0);
        assert_eq!((stats.packets_lost, stats.concealed_frames), (0, 0), "{stats:?}");
    }

    #[test]
    fn lost_packets_are_rebuilt_from_fec_and_the_tone_goes_on() {
        let (played, stats) = through(100, Some(7), 15);
        assert!(stats.packets_lost >= 13, "{stats:?}");
        // libopus codes FEC only for frames its voice detector calls active: a steady tone is
        // after some 0.7 s (packet 33), so only the first losses have FEC to be rebuilt from;
        // the others are concealed.
        let with_fec = packets(440.0, 100, 15)
            .iter()
            .enumerate()
            .filter(|(n, packet)| n % 7 == 0 && *n > 0 && packet_has_fec(packet))
            .count();
        assert!(with_fec >= 4, "{with_fec} losses followed by a packet with FEC");
        assert_eq!(
            stats.packets_recovered, with_fec as u64,
            "each loss with FEC after it is rebuilt: {stats:?}"
        );
        let tail = &played[played.len() / 2..];
        // Every 10 ms of the second half is sound, none is silence (rebuilt audio of a pure tone
        // is quieter than the tone: FEC is coded at a lower rate).
        for frame in tail.chunks(FRAME_SAMPLES) {
            assert!(rms(frame) > 300.0, "a dropout: rms {} ({stats:?})", rms(frame));
        }
        assert!(goertzel_ratio(tail, 440.0, 660.0) > 100.0);
    }

    #[test]
    fn the_capture_time_of_what_plays_follows_the_packets_clock() {
        let mut receiver = VoiceReceiver::new().unwrap();
        assert_eq!(receiver.playing_capture_time_us(), None);
        let mut playing = vec![];
        for (n, packet) in packets(440.0, 50, 0).into_iter().enumerate() {
            let at = (n as i64 + 1) * 20;
            receiver.push(rtp(n, packet), at);
            for pull_at in [at, at + 10] {
                receiver.pull(pull_at);
                playing.push(receiver.playing_capture_time_us());
            }
        }
        // Silence until the buffer's 40 ms start delay, then 10 ms a pull from packet 0's time.
        let started = playing.iter().position(Option::is_some).expect("playout started");
        let times: Vec<i64> = playing[started..].iter().map(|t| t.expect("stays known")).collect();
        // The first frame is packet 0's start, or 10 ms of expansion just before it.
        assert!((990_000..=1_000_000).contains(&times[0]), "the first frame played: {}", times[0]);
        assert!(times.windows(2).all(|w| w[1] - w[0] == 10_000), "{times:?}");
        // A new stream (after a reconnect) is undated until its sender reports.
        let new_stream = AudioPacket { ssrc: 8, capture_time_us: None, ..rtp(0, vec![0x08]) };
        receiver.push(new_stream, 1_100);
        assert_eq!(receiver.playing_capture_time_us(), None);
    }

    #[test]
    fn a_corrupt_packet_is_silence_for_its_time_not_a_stall() {
        let mut receiver = VoiceReceiver::new().unwrap();
        // A code-3 packet of two 20 ms CELT frames whose first frame's length runs past its end.
        receiver.push(rtp(0, vec![0xfb, 0x82, 0xff, 0x00]), 0);
        let frames: Vec<Vec<i16>> = (0..10).map(|i| receiver.pull(40 + i * 10)).collect();
        assert!(frames.iter().all(|f| f.len() == FRAME_SAMPLES));
        assert_eq!(receiver.decode_errors(), 1);
    }
}
