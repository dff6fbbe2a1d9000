//! Opus from bundled source (`opusic-c` over `opusic-sys`, which builds libopus 1.6 with cmake for
//! whatever target the core is built for, phones included; no pkg-config, no system library):
//! 48 kHz mono 16-bit PCM in 20 ms packets, with in-band FEC, packet loss concealment, and the
//! packet duration read from an Opus packet's header.

use super::{AudioError, PACKET_SAMPLES, SAMPLE_RATE};
use opusic_c::{Application, Bitrate, Channels, InbandFec, SampleRate, Signal};

/// The voice bitrate, bits per second: within the ladder's audio reserve
/// ([`crate::call::ladder::AUDIO_RESERVE_BPS`]), FEC included (libopus spends part of it on FEC).
pub const VOICE_BITRATE_BPS: u32 = 32_000;
/// The packet loss the encoder prepares for until told the measured loss: libopus adds no in-band
/// FEC at 0 %, so a small guess keeps the first losses covered.
pub const INITIAL_EXPECTED_LOSS_PERCENT: u8 = 5;
/// The largest Opus packet, bytes.
const MAX_PACKET: usize = 1275;
/// The longest Opus packet, samples at 48 kHz (120 ms).
pub const MAX_PACKET_SAMPLES: usize = 5760;

fn opus_error(what: &'static str) -> impl Fn(opusic_c::ErrorCode) -> AudioError {
    move |e| AudioError::Codec(format!("{what}: {}", e.message()))
}

/// An Opus voice encoder: 20 ms packets from 48 kHz mono PCM.
pub struct VoiceEncoder {
    encoder: opusic_c::Encoder,
    input: Vec<u16>,
}

impl std::fmt::Debug for VoiceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoiceEncoder")
    }
}

impl VoiceEncoder {
    /// An encoder tuned for voice at [`VOICE_BITRATE_BPS`], with in-band FEC sized for
    /// [`INITIAL_EXPECTED_LOSS_PERCENT`] until [`VoiceEncoder::set_expected_loss`].
    pub fn new() -> Result<VoiceEncoder, AudioError> {
        let init = opus_error("cannot start the Opus encoder");
        let mut encoder =
            opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip).map_err(&init)?;
        encoder.set_bitrate(Bitrate::Value(VOICE_BITRATE_BPS)).map_err(&init)?;
        encoder.set_signal(Signal::Voice).map_err(&init)?;
        encoder.set_inband_fec(InbandFec::Mode1).map_err(&init)?;
        encoder.set_packet_loss(INITIAL_EXPECTED_LOSS_PERCENT).map_err(&init)?;
        Ok(VoiceEncoder { encoder, input: Vec::with_capacity(PACKET_SAMPLES) })
    }

    /// Sizes the in-band FEC for this packet loss, percent (the measured loss of the path, clamped
    /// to 100): the more loss, the more of each packet repeats the previous one at a lower quality.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), AudioError> {
        self.encoder.set_packet_loss(percent.min(100)).map_err(opus_error("cannot set the expected loss"))
    }

    /// The bitrate to encode at, bits per second (libopus takes 500 to 512 000).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), AudioError> {
        self.encoder.set_bitrate(Bitrate::Value(bps)).map_err(opus_error("cannot set the bitrate"))
    }

    /// Encodes exactly [`PACKET_SAMPLES`] samples (20 ms) into one packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, AudioError> {
        if pcm.len() != PACKET_SAMPLES {
            return Err(AudioError::WrongFrameSize {
                expected: PACKET_SAMPLES as u32,
                got: pcm.len() as u32,
            });
        }
        // The crate takes samples as `u16`: the same bits, reinterpreted.
        self.input.clear();
        self.input.extend(pcm.iter().map(|&s| s as u16));
        let mut packet = Vec::with_capacity(MAX_PACKET);
        self.encoder.encode_to_vec(&self.input, &mut packet).map_err(opus_error("encoding failed"))?;
        Ok(packet)
    }
}

/// An Opus decoder to 48 kHz mono (a stereo packet, as a browser may send, is mixed down by
/// libopus).
pub struct VoiceDecoder {
    decoder: opusic_c::Decoder,
    output: Vec<u16>,
}

impl std::fmt::Debug for VoiceDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoiceDecoder")
    }
}

impl VoiceDecoder {
    /// A decoder.
    pub fn new() -> Result<VoiceDecoder, AudioError> {
        let decoder = opusic_c::Decoder::new(Channels::Mono, SampleRate::Hz48000)
            .map_err(opus_error("cannot start the Opus decoder"))?;
        Ok(VoiceDecoder { decoder, output: vec![0; MAX_PACKET_SAMPLES] })
    }

    fn run(&mut self, input: &[u8], samples: usize, fec: bool) -> Result<Vec<i16>, AudioError> {
        let output = &mut self.output[..samples.min(MAX_PACKET_SAMPLES)];
        let decoded =
            self.decoder.decode_to_slice(input, output, fec).map_err(opus_error("decoding failed"))?;
        Ok(self.output[..decoded].iter().map(|&s| s as i16).collect())
    }

    /// Decodes one packet. An empty or corrupt packet is an error.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, AudioError> {
        if packet.is_empty() {
            return Err(AudioError::Codec("decoding failed: an empty Opus packet".into()));
        }
        self.run(packet, MAX_PACKET_SAMPLES, false)
    }

    /// Rebuilds the `samples` just before `next` (a lost packet's worth) from the in-band FEC that
    /// `next` carries, or by concealment where it carries none. Call it before decoding `next`.
    pub fn recover(&mut self, next: &[u8], samples: usize) -> Result<Vec<i16>, AudioError> {
        self.run(next, samples, true)
    }

    /// Conceals `samples` of missing audio (a multiple of 2.5 ms): libopus continues the voice
    /// from what it last decoded, fading to silence.
    pub fn conceal(&mut self, samples: usize) -> Result<Vec<i16>, AudioError> {
        self.run(&[], samples, false)
    }
}

/// The duration of an Opus packet in samples at 48 kHz, from its table-of-contents byte and,
/// for a code-3 packet, its frame count (RFC 6716 §3.1–3.2). `None` for what cannot be Opus.
pub fn packet_samples(packet: &[u8]) -> Option<usize> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in units of 2.5 ms (120 samples at 48 kHz).
    let frame_units: usize = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)], // SILK: 10, 20, 40, 60 ms
        12..=15 => [4, 8][usize::from(config % 2)],        // hybrid: 10, 20 ms
        _ => [1, 2, 4, 8][usize::from(config % 4)],        // CELT: 2.5, 5, 10, 20 ms
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => usize::from(*packet.get(1)? & 0x3f),
    };
    let samples = frames * frame_units * (SAMPLE_RATE as usize / 400);
    (frames > 0 && samples <= MAX_PACKET_SAMPLES).then_some(samples)
}

/// Whether an Opus packet carries in-band FEC for the packet before it: the LBRR flag of its first
/// SILK frame (RFC 6716 §4.2.3; libopus's `opus_packet_has_lbrr`, in safe Rust). A CELT-only
/// packet never does. Decoding FEC from a packet without it only conceals, so the jitter buffer
/// asks this before it counts a loss as recovered.
pub fn packet_has_fec(packet: &[u8]) -> bool {
    let Some(&toc) = packet.first() else { return false };
    let config = toc >> 3;
    if config >= 16 {
        return false; // CELT only
    }
    // SILK frames per Opus frame: 1 for 10/20 ms, 2 for 40 ms, 3 for 60 ms.
    let silk_frames = match config {
        0..=11 => [1, 1, 2, 3][usize::from(config % 4)],
        _ => 1,
    };
    let stereo = toc & 0x04 != 0;
    // Where the first Opus frame starts (RFC 6716 §3.2).
    let start = match toc & 0x03 {
        0 | 1 => 1,
        2 => match packet.get(1) {
            Some(&len) if len < 252 => 2,
            Some(_) => 3,
            None => return false,
        },
        _ => {
            let Some(&count) = packet.get(1) else { return false };
            let mut at = 2;
            if count & 0x40 != 0 {
                // Padding length bytes: 255 means 254 more and another byte follows.
                loop {
                    let Some(&p) = packet.get(at) else { return false };
                    at += 1;
                    if p != 255 {
                        break;
                    }
                }
            }
            if count & 0x80 != 0 {
                // VBR: the lengths of all frames but the last come first.
                for _ in 1..(count & 0x3f) {
                    let Some(&len) = packet.get(at) else { return false };
                    at += if len < 252 { 1 } else { 2 };
                }
            }
            at
        }
    };
    let Some(&first) = packet.get(start) else { return false };
    let mid = (first >> (7 - silk_frames)) & 1 == 1;
    let side = stereo && (first >> (6 - 2 * silk_frames)) & 1 == 1;
    mid || side
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::signal::{goertzel_ratio, rms, tone};

    #[test]
    fn a_tone_survives_encoding_and_decoding() {
        let mut encoder = VoiceEncoder::new().unwrap();
        let mut decoder = VoiceDecoder::new().unwrap();
        let mut decoded = vec![];
        for packet in tone(440.0, 0, 25 * PACKET_SAMPLES).chunks(PACKET_SAMPLES) {
            let packet = encoder.encode(packet).unwrap();
            assert!(packet.len() < 200, "about 32 kbps: {} bytes", packet.len());
            assert_eq!(packet_samples(&packet), Some(PACKET_SAMPLES));
            decoded.extend(decoder.decode(&packet).unwrap());
        }
        assert_eq!(decoded.len(), 25 * PACKET_SAMPLES);
        let tail = &decoded[PACKET_SAMPLES * 5..];
        assert!(rms(tail) > 3000.0, "rms {}", rms(tail));
        assert!(goertzel_ratio(tail, 440.0, 660.0) > 100.0);
    }

    #[test]
    fn packets_carry_fec_only_when_the_encoder_expects_loss() {
        let mut encoder = VoiceEncoder::new().unwrap();
        let speech = tone(440.0, 0, 40 * PACKET_SAMPLES);
        let mut packets = speech.chunks(PACKET_SAMPLES);
        let with_loss: Vec<bool> =
            packets.by_ref().take(20).map(|p| packet_has_fec(&encoder.encode(p).unwrap())).collect();
        encoder.set_expected_loss(0).unwrap();
        let without: Vec<bool> = packets.map(|p| packet_has_fec(&encoder.encode(p).unwrap())).collect();
        // The first packet has no previous one to repeat; after it, every packet carries FEC.
        assert!(with_loss[2..].iter().all(|fec| *fec), "{with_loss:?}");
        assert!(without[2..].iter().all(|fec| !fec), "{without:?}");
        assert!(!packet_has_fec(&[]) && !packet_has_fec(&[0x08]));
        assert!(!packet_has_fec(&[0xf8, 0xff, 0xff]), "a CELT-only packet");
    }

    #[test]
    fn a_lost_packet_is_rebuilt_from_the_next_packets_fec_and_concealment_gives_sound() {
        let mut encoder = VoiceEncoder::new().unwrap();
        encoder.set_expected_loss(20).unwrap();
        let packets: Vec<_> = tone(440.0, 0, 30 * PACKET_SAMPLES)
            .chunks(PACKET_SAMPLES)
            .map(|p| encoder.encode(p).unwrap())
            .collect();
        let mut decoder = VoiceDecoder::new().unwrap();
        for packet in &packets[..20] {
            decoder.decode(packet).unwrap();
        }
        let rebuilt = decoder.recover(&packets[21], PACKET_SAMPLES).unwrap();
        assert_eq!(rebuilt.len(), PACKET_SAMPLES);
        assert!(rms(&rebuilt) > 3000.0, "the tone, not silence: rms {}", rms(&rebuilt));
        assert_eq!(decoder.decode(&packets[21]).unwrap().len(), PACKET_SAMPLES);
        let concealed = decoder.conceal(480).unwrap();
        assert_eq!(concealed.len(), 480);
        assert!(rms(&concealed) > 1000.0, "concealment continues the tone: rms {}", rms(&concealed));
    }

    #[test]
    fn fec_rebuilds_what_was_lost_where_concealment_only_continues_what_came_before() {
        // 440 Hz for 20 packets, then 880 Hz: packet 20, the first at 880 Hz, is lost.
        let mut pcm = tone(440.0, 0, 20 * PACKET_SAMPLES);
        pcm.extend(tone(880.0, 20 * PACKET_SAMPLES as u64, 10 * PACKET_SAMPLES));
        let mut encoder = VoiceEncoder::new().unwrap();
        encoder.set_expected_loss(20).unwrap();
        let packets: Vec<_> = pcm.chunks(PACKET_SAMPLES).map(|p| encoder.encode(p).unwrap()).collect();
        let (mut with_fec, mut without) = (VoiceDecoder::new().unwrap(), VoiceDecoder::new().unwrap());
        for packet in &packets[..20] {
            with_fec.decode(packet).unwrap();
            without.decode(packet).unwrap();
        }
        let rebuilt = with_fec.recover(&packets[21], PACKET_SAMPLES).unwrap();
        let concealed = without.conceal(PACKET_SAMPLES).unwrap();
        // (FEC's 20 ms starts with a cross-fade from the 440 Hz before it.)
        assert!(goertzel_ratio(&rebuilt, 880.0, 440.0) > 3.0, "FEC carries the new tone");
        assert!(goertzel_ratio(&concealed, 440.0, 880.0) > 100.0, "concealment repeats the old one");
    }

    #[test]
    fn wrong_sizes_and_corrupt_packets_are_errors() {
        let mut encoder = VoiceEncoder::new().unwrap();
        assert_eq!(encoder.encode(&[0; 100]), Err(AudioError::WrongFrameSize { expected: 960, got: 100 }));
        let mut decoder = VoiceDecoder::new().unwrap();
        assert!(matches!(decoder.decode(&[]), Err(AudioError::Codec(_))));
        // A code-3 packet whose frame count byte claims 0 frames is invalid.
        assert!(matches!(decoder.decode(&[0x03, 0x00]), Err(AudioError::Codec(_))));
    }

    #[test]
    fn packet_durations_come_from_the_toc_byte() {
        assert_eq!(packet_samples(&[0x08]), Some(960), "SILK NB 20 ms");
        assert_eq!(packet_samples(&[0x00]), Some(480), "SILK NB 10 ms");
        assert_eq!(packet_samples(&[0x18 | 1]), Some(2 * 2880), "two 60 ms SILK frames");
        assert_eq!(packet_samples(&[0xf8]), Some(960), "CELT FB 20 ms");
        assert_eq!(packet_samples(&[0x80]), Some(120), "CELT 2.5 ms");
        assert_eq!(packet_samples(&[0xfb, 0x03]), Some(3 * 960), "code 3, three 20 ms frames");
        assert_eq!(packet_samples(&[0xfb, 0x00]), None, "code 3 with no frame");
        assert_eq!(packet_samples(&[0x1b, 0x03]), None, "three 60 ms frames: over 120 ms");
        assert_eq!(packet_samples(&[0xfb]), None, "code 3 without its count");
        assert_eq!(packet_samples(&[]), None);
    }
}
