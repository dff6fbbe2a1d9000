//! The audio engine: the app hands in microphone PCM and pulls speaker PCM; the core does Opus,
//! FEC, the jitter buffer and loss concealment.
//!
//! ```text
//! microphone callback ─ 10 ms PCM ─▶ AudioSource ─▶ VoiceSender ─ 20 ms Opus + FEC ─▶ audio track
//! playout callback ◀─ 10 ms PCM ── AudioSink ◀── VoiceReceiver ◀─ JitterBuffer ◀── RTP packets
//! ```
//!
//! - [`jitter`]: the adaptive jitter buffer (sans-I/O: packets and arrival times in, decoder
//!   instructions out).
//! - [`voice`]: the sans-I/O send and receive paths around Opus ([`voice::VoiceSender`],
//!   [`voice::VoiceReceiver`]): frames in, packets out, and back; time is an argument.
//! - [`engine`]: the per-track objects an app holds ([`AudioSource`], [`AudioSink`]), thread-safe,
//!   with bounded queues, separate from the call's event listener.
//! - [`opus`]: Opus built from bundled source, so the core builds for every target.
//! - [`fec`]: how much in-band FEC to send, from the measured loss (sans-I/O).
//! - [`signal`]: a tone and the Goertzel measure, for tests.
//!
//! PCM is 48 kHz mono signed 16-bit, in 10 ms frames of [`FRAME_SAMPLES`] samples.

pub mod engine;
pub mod fec;
pub mod jitter;
pub mod opus;
pub mod signal;
pub mod voice;

pub use engine::{AudioSink, AudioSource};

/// Samples per second.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 10 ms frame: what the app pushes and pulls.
pub const FRAME_SAMPLES: usize = 480;
/// Samples in one 20 ms Opus packet: what is sent.
pub const PACKET_SAMPLES: usize = 960;

/// Why an audio call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    /// A PCM frame of the wrong length.
    #[error("a frame of {got} samples; this takes {expected} (10 ms of 48 kHz mono, 16 bits)")]
    WrongFrameSize {
        /// Samples wanted.
        expected: u32,
        /// Samples given.
        got: u32,
    },
    /// Bytes that are not whole 16-bit samples.
    #[error("{0} bytes are not whole 16-bit samples")]
    OddByteCount(u32),
    /// Opus refused (a corrupt packet, a failed start).
    #[error("Opus: {0}")]
    Codec(String),
    /// The call was closed.
    #[error("the call is closed")]
    Closed,
}
