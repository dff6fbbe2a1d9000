//! Opus in software (libopus through the `opus` crate): 48 kHz mono, 20 ms frames of 16-bit PCM.

use std::time::Duration;

use super::CodecError;
use crate::frame::{EncodedFrame, FrameKind};

/// Samples per second.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;
/// The bitrate of the encoded voice, bits per second (within the ladder's audio reserve).
pub const BITRATE_BPS: i32 = 32_000;
/// The largest packet the encoder may produce, bytes.
const MAX_PACKET: usize = 1275;
/// The packet loss the encoder prepares for until [`OpusEncoder::set_expected_loss`] is called:
/// libopus adds no in-band FEC at 0 %, so a small guess keeps the first losses covered.
pub const INITIAL_EXPECTED_LOSS_PERCENT: u8 = 5;

/// An Opus encoder for one voice channel.
pub struct OpusEncoder {
    encoder: opus::Encoder,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpusEncoder")
    }
}

impl OpusEncoder {
    /// An encoder tuned for voice, with in-band forward error correction sized for
    /// [`INITIAL_EXPECTED_LOSS_PERCENT`] until told the measured loss.
    pub fn new() -> Result<OpusEncoder, CodecError> {
        let init = |e: opus::Error| CodecError::Init { codec: "Opus encoder", reason: e.to_string() };
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip).map_err(init)?;
        encoder.set_bitrate(opus::Bitrate::Bits(BITRATE_BPS)).map_err(init)?;
        encoder.set_inband_fec(true).map_err(init)?;
        encoder.set_packet_loss_perc(i32::from(INITIAL_EXPECTED_LOSS_PERCENT)).map_err(init)?;
        Ok(OpusEncoder { encoder })
    }

    /// Prepares the in-band FEC for this packet loss, percent (the measured loss of the path;
    /// clamped to 100). The more loss, the more of each packet repeats the previous one at a lower
    /// quality; at 0 there is no FEC.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        self.encoder
            .set_packet_loss_perc(i32::from(percent.min(100)))
            .map_err(|e| CodecError::Encode(format!("cannot set the expected loss: {e}")))
    }

    /// Encodes exactly [`FRAME_SAMPLES`] samples (20 ms) into one packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<EncodedFrame, CodecError> {
        if pcm.len() != FRAME_SAMPLES {
            return Err(CodecError::BadInput(format!(
                "{} samples; an Opus frame here is {FRAME_SAMPLES} (20 ms at 48 kHz)",
                pcm.len()
            )));
        }
        let data = self.encoder.encode_vec(pcm, MAX_PACKET).map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(EncodedFrame {
            kind: FrameKind::Audio,
            data,
            duration: Duration::from_millis(20),
            keyframe: false,
        })
    }
}

/// An Opus decoder to one channel (stereo packets, as browsers may send, are mixed down).
pub struct OpusDecoder {
    decoder: opus::Decoder,
    buffer: Vec<i16>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpusDecoder")
    }
}

impl OpusDecoder {
    /// A decoder.
    pub fn new() -> Result<OpusDecoder, CodecError> {
        let decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
            .map_err(|e| CodecError::Init { codec: "Opus decoder", reason: e.to_string() })?;
        // Room for the longest Opus packet (120 ms).
        Ok(OpusDecoder { decoder, buffer: vec![0; FRAME_SAMPLES * 6] })
    }

    /// Decodes one packet into PCM samples. An empty or corrupt packet is an error.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, CodecError> {
        if packet.is_empty() {
            return Err(CodecError::Decode("an empty Opus packet".into()));
        }
        let samples = self
            .decoder
            .decode(packet, &mut self.buffer, false)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        Ok(self.buffer[..samples].to_vec())
    }

    /// Fills in for a lost 20 ms packet: from the in-band FEC of `next` (the packet after the lost
    /// one) if it carries any, else by concealment. Call it before decoding `next` itself.
    pub fn decode_lost(&mut self, next: Option<&[u8]>) -> Result<Vec<i16>, CodecError> {
        let output = &mut self.buffer[..FRAME_SAMPLES];
        let samples = match next {
            Some(packet) if !packet.is_empty() => self.decoder.decode(packet, output, true),
            _ => self.decoder.decode(&[], output, false),
        }
        .map_err(|e| CodecError::Decode(e.to_string()))?;
        Ok(self.buffer[..samples].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::pattern::SineTone;

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
