//! Opus for the software codec path: 48 kHz mono, 20 ms packets as [`EncodedFrame`]s, over the
//! audio engine's bundled Opus ([`televisit_core::audio::opus`]; one libopus in the core).

use std::time::Duration;

use super::CodecError;
use televisit_core::audio::opus::{VoiceDecoder, VoiceEncoder};
use televisit_core::audio::AudioError;
use televisit_core::frame::{EncodedFrame, FrameKind};

pub use televisit_core::audio::opus::INITIAL_EXPECTED_LOSS_PERCENT;
pub use televisit_core::audio::SAMPLE_RATE;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = televisit_core::audio::PACKET_SAMPLES;
/// The bitrate of the encoded voice, bits per second (within the ladder's audio reserve).
pub const BITRATE_BPS: i32 = televisit_core::audio::opus::VOICE_BITRATE_BPS as i32;

fn codec_error(error: AudioError, init: Option<&'static str>) -> CodecError {
    match (error, init) {
        (AudioError::WrongFrameSize { got, .. }, _) => CodecError::BadInput(format!(
            "{got} samples; an Opus frame here is {FRAME_SAMPLES} (20 ms at 48 kHz)"
        )),
        (error, Some(codec)) => CodecError::Init { codec, reason: error.to_string() },
        (error, None) => CodecError::Decode(error.to_string()),
    }
}

/// An Opus encoder for one voice channel.
#[derive(Debug)]
pub struct OpusEncoder {
    encoder: VoiceEncoder,
}

impl OpusEncoder {
    /// An encoder tuned for voice, with in-band forward error correction sized for
    /// [`INITIAL_EXPECTED_LOSS_PERCENT`] until told the measured loss.
    pub fn new() -> Result<OpusEncoder, CodecError> {
        let encoder = VoiceEncoder::new().map_err(|e| codec_error(e, Some("Opus encoder")))?;
        Ok(OpusEncoder { encoder })
    }

    /// Prepares the in-band FEC for this packet loss, percent (the measured loss of the path;
    /// clamped to 100). The more loss, the more of each packet repeats the previous one at a lower
    /// quality; at 0 there is no FEC.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        self.encoder.set_expected_loss(percent).map_err(|e| CodecError::Encode(e.to_string()))
    }

    /// Encodes exactly [`FRAME_SAMPLES`] samples (20 ms) into one packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<EncodedFrame, CodecError> {
        let data = self.encoder.encode(pcm).map_err(|e| match e {
            AudioError::Codec(message) => CodecError::Encode(message),
            other => codec_error(other, None),
        })?;
        Ok(EncodedFrame {
            kind: FrameKind::Audio,
            data,
            duration: Duration::from_millis(20),
            keyframe: false,
            timing: Default::default(),
        })
    }
}

/// An Opus decoder to one channel (stereo packets, as browsers may send, are mixed down).
#[derive(Debug)]
pub struct OpusDecoder {
    decoder: VoiceDecoder,
}

impl OpusDecoder {
    /// A decoder.
    pub fn new() -> Result<OpusDecoder, CodecError> {
        let decoder = VoiceDecoder::new().map_err(|e| codec_error(e, Some("Opus decoder")))?;
        Ok(OpusDecoder { decoder })
    }

    /// Decodes one packet into PCM samples. An empty or corrupt packet is an error.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, CodecError> {
        self.decoder.decode(packet).map_err(|e| codec_error(e, None))
    }

    /// Fills in for a lost 20 ms packet: from the in-band FEC of `next` (the packet after the lost
    /// one) if it carries any, else by concealment. Call it before decoding `next` itself.
    pub fn decode_lost(&mut self, next: Option<&[u8]>) -> Result<Vec<i16>, CodecError> {
        match next {
            Some(packet) if !packet.is_empty() => self.decoder.recover(packet, FRAME_SAMPLES),
            _ => self.decoder.conceal(FRAME_SAMPLES),
        }
        .map_err(|e| codec_error(e, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::SineTone;

    #[test]
    fn a_tone_survives_encoding_and_decoding() {
        let mut tone = SineTone::new(440.0);
        let mut encoder = OpusEncoder::new().unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let mut decoded = vec![];
        for _ in 0..25 {
            let frame = encoder.encode(&tone.next_frame()).unwrap();
            assert_eq!(frame.kind, FrameKind::Audio);
            assert!(frame.data.len() < 200, "about 32 kbps: {} bytes", frame.data.len());
            let pcm = decoder.decode(&frame.data).unwrap();
            assert_eq!(pcm.len(), FRAME_SAMPLES);
            decoded.extend(pcm);
        }
        // After the codec's start-up, the decoded sound is the tone: loud, and at 440 Hz.
        let tail = &decoded[FRAME_SAMPLES * 5..];
        let rms = (tail.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / tail.len() as f64).sqrt();
        assert!(rms > 3000.0, "rms {rms}");
        let crossings = tail.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count() as f64;
        let hz = crossings / (tail.len() as f64 / f64::from(SAMPLE_RATE));
        assert!((hz - 440.0).abs() < 15.0, "{hz} Hz");
    }

    #[test]
    fn a_lost_packet_is_rebuilt_from_the_next_packets_fec() {
        let rms =
            |pcm: &[i16]| (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
        let mut tone = SineTone::new(440.0);
        let mut encoder = OpusEncoder::new().unwrap();
        encoder.set_expected_loss(20).unwrap();
        let packets: Vec<_> = (0..30).map(|_| encoder.encode(&tone.next_frame()).unwrap().data).collect();
        let mut decoder = OpusDecoder::new().unwrap();
        for packet in &packets[..20] {
            decoder.decode(packet).unwrap();
        }
        // Packet 20 is lost: packet 21 carries a copy of it.
        let rebuilt = decoder.decode_lost(Some(&packets[21])).unwrap();
        assert_eq!(rebuilt.len(), FRAME_SAMPLES);
        assert!(rms(&rebuilt) > 3000.0, "the tone, not silence: rms {}", rms(&rebuilt));
        assert_eq!(decoder.decode(&packets[21]).unwrap().len(), FRAME_SAMPLES);
        // With nothing after it, concealment still gives a frame.
        assert_eq!(decoder.decode_lost(None).unwrap().len(), FRAME_SAMPLES);
    }

    #[test]
    fn wrong_sizes_and_corrupt_packets_are_errors() {
        let mut encoder = OpusEncoder::new().unwrap();
        assert!(matches!(encoder.encode(&[0; 100]), Err(CodecError::BadInput(_))));
        let mut decoder = OpusDecoder::new().unwrap();
        assert!(matches!(decoder.decode(&[]), Err(CodecError::Decode(_))));
        // A code-3 packet (many frames) whose frame count byte claims 0 frames is invalid.
        assert!(matches!(decoder.decode(&[0x03, 0x00]), Err(CodecError::Decode(_))));
        let good = encoder.encode(&[0; FRAME_SAMPLES]).unwrap();
        assert_eq!(decoder.decode(&good.data).unwrap().len(), FRAME_SAMPLES);
    }
}
