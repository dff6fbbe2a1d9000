//! REMB for senders without transport-cc: we stamp abs-send-time on what we send, and estimate
//! from the abs-send-time on what we receive ([`ReceiveSideEstimator`]), sending the peer a
//! REMB about once a second and at once when the estimate falls.
//!
//! The header extension is registered with the media engine by [`register_abs_send_time`], so it
//! is offered and used when the peer accepts it. REMB goes only to streams that did not
//! negotiate transport-cc, as libwebrtc's receivers do: a sender with transport-cc estimates for
//! itself, and a REMB would only cap it (at ~1.5× what it sends, which would hold back a browser's
//! probing start).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::TRANSPORT_CC_URI;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;
use rtc::shared::TransportContext;

use crate::network_control::bwe::ReceiveSideEstimator;

/// The abs-send-time header extension's URI.
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// Offers abs-send-time on audio and video.
pub fn register_abs_send_time(media_engine: &mut MediaEngine) -> Result<(), String> {
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: ABS_SEND_TIME_URI.to_owned() },
                kind,
                None,
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn abs_send_time_id(info: &StreamInfo) -> Option<u8> {
    info.rtp_header_extensions.iter().find(|e| e.uri == ABS_SEND_TIME_URI).map(|e| e.id as u8)
}

/// Stamps abs-send-time on our RTP as it leaves. Place it between the pacer and the
/// transport-cc sender (e.g. `Slot::from(2_500)`): the stamp must be the release instant.
#[derive(Default)]
pub struct AbsSendTimeStamper {
    ids: HashMap<u32, u8>,
    epoch: Option<Instant>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for AbsSendTimeStamper {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        let now = msg.now;
        if let Packet::Rtp(rtp) = &mut msg.message.packet {
            if let Some(id) = self.ids.get(&rtp.header.ssrc) {
                // Only differences matter to the receiver: any epoch will do.
                let since = now.saturating_duration_since(*self.epoch.get_or_insert(now));
                let units = (since.as_secs_f64() * (1 << 18) as f64) as u64 & 0xFF_FFFF;
                let stamp = vec![(units >> 16) as u8, (units >> 8) as u8, units as u8];
                // An id the header cannot carry is left out rather than failing the packet.
                let _ = rtp.header.set_extension(*id, stamp.into());
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for AbsSendTimeStamper {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(id) = abs_send_time_id(info) {
            self.ids.insert(info.ssrc, id);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.ids.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Estimates what we can receive from the peer's abs-send-time and sends it REMB. Place it
/// above the pacer and below the jitter buffer (e.g. `Slot::from(8_500)`): it generates RTCP and
/// reads arrival times.
#[derive(Default)]
pub struct RembGenerator {
    ids: HashMap<u32, u8>,
    remote_ssrcs: HashSet<u32>,
    estimator: ReceiveSideEstimator,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RembGenerator {
    fn send_remb_if_due(&mut self, now: Instant) {
        let Some(bps) = self.estimator.remb_due(now) else { return };
        let mut ssrcs: Vec<u32> = self.remote_ssrcs.iter().copied().collect();
        ssrcs.sort_unstable();
        let remb = ReceiverEstimatedMaximumBitrate { sender_ssrc: 0, bitrate: bps as f32, ssrcs };
        self.write_queue.push_back(TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(remb)])),
        });
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RembGenerator {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(rtp) = &msg.message.packet {
            let stamp = self.ids.get(&rtp.header.ssrc).and_then(|id| rtp.header.get_extension(*id));
            if let Some(stamp) = stamp.filter(|s| s.len() >= 3) {
                let units = u32::from(stamp[0]) << 16 | u32::from(stamp[1]) << 8 | u32::from(stamp[2]);
                self.estimator.on_packet(msg.now, units, rtp.marshal_size());
                self.send_remb_if_due(msg.now);
            }
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

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.send_remb_if_due(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.estimator.poll_timeout()
    }
}

impl Interceptor for RembGenerator {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        let transport_cc = info.rtp_header_extensions.iter().any(|e| e.uri == TRANSPORT_CC_URI);
        if let Some(id) = abs_send_time_id(info).filter(|_| !transport_cc) {
            self.ids.insert(info.ssrc, id);
            self.remote_ssrcs.insert(info.ssrc);
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.ids.remove(&info.ssrc);
        self.remote_ssrcs.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::shared::TransportMessage;
    use std::time::Duration;

    const SSRC: u32 = 5;

    fn info() -> StreamInfo {
        StreamInfo {
            ssrc: SSRC,
            rtp_header_extensions: vec![RTPHeaderExtension { uri: ABS_SEND_TIME_URI.into(), id: 3 }],
            ..Default::default()
        }
    }

    fn rtp(now: Instant, sequence_number: u16) -> TaggedPacket {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header { ssrc: SSRC, sequence_number, ..Default::default() },
            payload: vec![0u8; 1_000].into(),
        };
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        }
    }

    #[test]
    fn packets_stamped_on_one_side_give_remb_on_the_other() {
        let mut stamper = AbsSendTimeStamper::default();
        stamper.bind_local_stream(&info());
        let mut generator = RembGenerator::default();
        generator.bind_remote_stream(&info());
        let t0 = Instant::now();
        let mut rembs = Vec::new();
        // 800 kbps for three seconds, 50 ms one way.
        for n in 0..300u16 {
            let sent = t0 + Duration::from_millis(10 * n as u64);
            stamper.handle_write(rtp(sent, n)).unwrap();
            let mut stamped = stamper.poll_write().expect("passed on");
            assert!(matches!(&stamped.message.packet, Packet::Rtp(p) if p.header.get_extension(3).is_some()));
            stamped.now = sent + Duration::from_millis(50);
            generator.handle_read(stamped).unwrap();
            assert!(generator.poll_read().is_some());
            while let Some(out) = generator.poll_write() {
                let Packet::Rtcp(packets) = out.message.packet else { panic!("RTCP expected") };
                let remb = packets[0].as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>().cloned();
                rembs.push(remb.expect("a REMB"));
            }
        }
        assert!((2..=4).contains(&rembs.len()), "about one a second: {rembs:?}");
        assert!(rembs.iter().all(|r| r.ssrcs == [SSRC] && r.bitrate >= 700_000.0), "{rembs:?}");
    }

    #[test]
    fn a_stream_with_transport_cc_gets_no_remb() {
        let mut info = info();
        info.rtp_header_extensions.push(RTPHeaderExtension { uri: TRANSPORT_CC_URI.into(), id: 4 });
        let mut generator = RembGenerator::default();
        generator.bind_remote_stream(&info);
        assert!(generator.ids.is_empty());
    }
}
