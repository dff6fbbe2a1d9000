//! TURN messages on a byte stream (TCP or TLS), sans-I/O: over UDP each datagram is one STUN
//! message or one ChannelData message; over a stream they follow each other and the receiver cuts
//! them apart by their own length fields (RFC 8656 §12.5; RFC 5766 §11.5):
//!
//! - a STUN message starts with two zero bits; its length (bytes 2–3) counts the attributes after
//!   the 20-byte header, already a multiple of 4 (and bytes 4–7 are the magic cookie, which tells
//!   a stream that is no TURN server's, e.g. a web page or a TLS record, from one);
//! - a ChannelData message starts with a channel number `0x4000..=0x4FFF`; its length (bytes 2–3)
//!   counts the application data after the 4-byte header, and over a stream the message is padded
//!   to a multiple of 4 bytes (the padding is not data).
//!
//! [`StreamDecoder`] takes the stream's bytes as they come and gives back whole messages as the
//! datagrams they would be over UDP (ChannelData without the padding); [`to_stream`] does the
//! opposite for a datagram.

/// The STUN header's length.
const STUN_HEADER: usize = 20;
/// The ChannelData header's length.
const CHANNEL_HEADER: usize = 4;
/// Bytes 4–7 of every STUN message (RFC 8489 §5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// The stream carried something that is neither STUN nor ChannelData: the connection is not to a
/// TURN server (or lost its framing) and must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError(pub String);

/// What a message's first bytes say it is, and its length on the stream.
fn stream_length(header: &[u8]) -> Result<Option<usize>, FramingError> {
    let (Some(first), Some(length)) = (header.first(), header.get(2..4)) else { return Ok(None) };
    let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
    match first {
        0x00..=0x3f => match header.get(4..8) {
            Some(cookie) if cookie != MAGIC_COOKIE => {
                Err(FramingError(format!("no STUN magic cookie after byte {first:#04x}")))
            }
            _ => Ok(Some(STUN_HEADER + length)),
        },
        0x40..=0x4f => Ok(Some((CHANNEL_HEADER + length).next_multiple_of(4))),
        _ => Err(FramingError(format!("byte {first:#04x} starts neither a STUN nor a ChannelData message"))),
    }
}

fn is_channel_data(message: &[u8]) -> bool {
    message.first().is_some_and(|b| (0x40..=0x4f).contains(b))
}

/// Cuts a stream's bytes into whole TURN messages.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buffer: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, as its UDP datagram, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let Some(on_stream) = stream_length(&self.buffer)? else { return Ok(None) };
        if self.buffer.len() < on_stream {
            return Ok(None);
        }
        let mut message: Vec<u8> = self.buffer.drain(..on_stream).collect();
        if is_channel_data(&message) {
            let data = usize::from(u16::from_be_bytes([message[2], message[3]]));
            message.truncate(CHANNEL_HEADER + data); // the stream's padding is not data
        }
        Ok(Some(message))
    }

    /// Bytes received that do not make a whole message yet.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// A datagram as it goes on the stream: STUN as it is, ChannelData padded to a multiple of 4.
pub fn to_stream(datagram: &[u8]) -> Result<Vec<u8>, FramingError> {
    let length = stream_length(datagram)?
        .ok_or_else(|| FramingError(format!("a {}-byte datagram is no TURN message", datagram.len())))?;
    let mut bytes = datagram.to_vec();
    if is_channel_data(datagram) {
        let data = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        bytes.truncate(CHANNEL_HEADER + data);
    }
    bytes.resize(length.max(bytes.len()), 0);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN Binding request with one 8-byte attribute.
    fn stun() -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[7; 12]); // transaction id
        m.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b'r', b'u', b's', b't']);
        m
    }

    /// ChannelData on channel 0x4001 with `n` bytes of data.
    fn channel_data(n: u16) -> Vec<u8> {
        let mut m = vec![0x40, 0x01];
        m.extend_from_slice(&n.to_be_bytes());
        m.extend((0..n).map(|i| i as u8));
        m
    }

    #[test]
    fn channel_data_is_padded_to_four_bytes_on_the_stream_and_stun_is_not() {
        assert_eq!(to_stream(&stun()).unwrap(), stun());
        let odd = channel_data(5);
        let framed = to_stream(&odd).unwrap();
        assert_eq!(framed.len(), 12, "4 header + 5 data + 3 padding");
        assert_eq!(&framed[..9], &odd[..]);
        assert_eq!(to_stream(&channel_data(8)).unwrap().len(), 12, "already aligned");
        let padded_udp = to_stream(&odd).unwrap(); // a peer may pad over UDP too
        assert_eq!(to_stream(&padded_udp).unwrap(), framed);
        assert!(to_stream(&[0xc0, 0, 0, 0]).is_err(), "RTP/DTLS-looking bytes are no TURN message");
        assert!(to_stream(&[0x40]).is_err());
    }

    #[test]
    fn the_decoder_cuts_messages_that_arrive_in_any_pieces() {
        let messages = [stun(), channel_data(5), channel_data(1200), stun(), channel_data(0)];
        let stream: Vec<u8> = messages.iter().flat_map(|m| to_stream(m).unwrap()).collect();
        for piece in [1, 3, 7, 20, 500, stream.len()] {
            let mut decoder = StreamDecoder::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                decoder.push(chunk);
                while let Some(message) = decoder.next_message().unwrap() {
                    out.push(message);
                }
            }
            assert_eq!(out, messages, "in pieces of {piece}");
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn a_half_message_waits_and_garbage_is_an_error() {
        let mut decoder = StreamDecoder::new();
        decoder.push(&stun()[..10]);
        assert_eq!(decoder.next_message(), Ok(None));
        decoder.push(&stun()[10..]);
        assert_eq!(decoder.next_message(), Ok(Some(stun())));
        decoder.push(b"<!DOCTYPE html><html>");
        assert!(decoder.next_message().is_err(), "a web server");
        let mut decoder = StreamDecoder::new();
        decoder.push(&[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00]);
        assert!(decoder.next_message().is_err(), "a TLS server, reached over plain TCP");
    }
}
