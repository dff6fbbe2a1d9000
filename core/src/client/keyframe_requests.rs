//! Keyframe requests between the peers (RTCP PLI and FIR).
//!
//! Inbound RTCP stops at the end of the webrtc crate's interceptor chain unless an interceptor
//! marks it for the application. [`KeyframeRequestForwarder`] sits last in the chain and marks
//! exactly the keyframe requests, so the backend can ask the app's encoder for a keyframe when the
//! peer's decoder lost the picture; everything else inbound (reports, NACKs, TWCC feedback) has
//! already been acted on by the interceptors before it and goes no further. Outbound, the backend
//! writes a [`picture_loss`] on a remote track when our side cannot decode.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// A picture-loss indication for the stream `media_ssrc` (RFC 4585 §6.3.1).
pub fn picture_loss(media_ssrc: u32) -> Box<dyn rtc::rtcp::Packet> {
    Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })
}

/// The last interceptor: passes inbound PLI and FIR on to the application, and nothing else.
#[derive(Default)]
pub struct KeyframeRequestForwarder {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<_> =
                packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if requests.is_empty() {
                return Ok(()); // the interceptors before this one have acted on it
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::receiver_report::ReceiverReport;

    #[test]
    fn only_keyframe_requests_are_recognised() {
        assert!(is_keyframe_request(picture_loss(7).as_ref()));
        assert!(is_keyframe_request(&FullIntraRequest::default()));
        assert!(!is_keyframe_request(&ReceiverReport::default()));
    }
}
