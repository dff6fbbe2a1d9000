//! Plugs the core's congestion controller ([`crate::network_control::bwe`]) into the webrtc
//! crate's interceptor chain, in place of the crate's GCC.
//!
//! One [`CongestionController`] per peer connection, shared by two adapters:
//!
//! - [`ControllerEstimator`] is the [`BandwidthEstimator`] the crate's
//!   `CongestionControlInterceptor` drives: it turns the transport-cc (or RFC 8888) reports the
//!   interceptor resolved against its send history into [`PacketFeedback`].
//! - [`ReportReader`] sits next to it in the chain and reads what that interceptor ignores: REMB
//!   and the report blocks of receiver and sender reports (loss fraction, and the round trip from
//!   LSR/DLSR against the sender reports it saw leave). A peer that negotiated no transport-cc is
//!   estimated from these alone.
//!
//! Both publish the target and the acknowledged rate into [`PacingState`] for the session (the
//! bitrate ladder), and the reader announces a target that moved on the RTCP it passes on, as the
//! crate's interceptor does with feedback, so the pacer hears it too.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, BandwidthEstimator, EstimatorStats, Interceptor, Packet, PacketReport, StreamInfo,
    TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::pacing::PacingState;
use super::sender_clock::SenderClocks;
use crate::network_control::bwe::{BweConfig, CongestionController, PacketFeedback};

/// The controller both adapters feed.
pub type SharedController = Arc<Mutex<CongestionController>>;

/// A controller for a new peer connection.
pub fn shared_controller(config: BweConfig) -> SharedController {
    Arc::new(Mutex::new(CongestionController::new(config)))
}

fn lock(controller: &SharedController) -> MutexGuard<'_, CongestionController> {
    controller.lock().unwrap_or_else(|e| e.into_inner())
}

fn publish(controller: &CongestionController, state: &PacingState) {
    state.publish_estimate(controller.target_bps(), controller.acknowledged_bps());
}

/// The controller as the crate's bandwidth estimator (transport-cc feedback in, target out).
pub struct ControllerEstimator {
    controller: SharedController,
    state: Arc<PacingState>,
    /// The last transport-wide sequence number, unwrapped.
    last_twcc: Option<u64>,
}

impl ControllerEstimator {
    /// An estimator feeding `controller` and publishing to `state`.
    pub fn new(controller: SharedController, state: Arc<PacingState>) -> ControllerEstimator {
        publish(&lock(&controller), &state);
        ControllerEstimator { controller, state, last_twcc: None }
    }

    /// The report in the controller's terms, numbered by the transport-wide sequence number
    /// (unwrapped) so that a later feedback naming the packet can be matched.
    fn feedback(&mut self, report: &PacketReport) -> Option<PacketFeedback> {
        let mut packet = feedback(report)?;
        if report.is_twcc {
            let sequence = match self.last_twcc {
                None => u64::from(report.twcc_sequence_number) + (1 << 16),
                Some(last) => {
                    let delta = report.twcc_sequence_number.wrapping_sub(last as u16) as i16;
                    last.saturating_add_signed(i64::from(delta))
                }
            };
            self.last_twcc = Some(self.last_twcc.map_or(sequence, |last| last.max(sequence)));
            packet.sequence = sequence;
        }
        Some(packet)
    }
}

/// The transport-wide sequence numbers a transport-cc feedback reports (received, missing).
fn statuses_in(feedback: &TransportLayerCc) -> (Vec<u16>, Vec<u16>) {
    let mut statuses = Vec::new();
    for chunk in &feedback.packet_chunks {
        match chunk {
            PacketStatusChunk::RunLengthChunk(run) => {
                statuses.extend(std::iter::repeat_n(run.packet_status_symbol, run.run_length as usize))
            }
            PacketStatusChunk::StatusVectorChunk(vector) => {
                statuses.extend(vector.symbol_list.iter().copied())
            }
        }
    }
    let (mut received, mut missing) = (Vec::new(), Vec::new());
    for (i, status) in statuses.into_iter().take(feedback.packet_status_count as usize).enumerate() {
        let sequence = feedback.base_sequence_number.wrapping_add(i as u16);
        if status == SymbolTypeTcc::PacketNotReceived {
            missing.push(sequence);
        } else {
            received.push(sequence);
        }
    }
    (received, missing)
}

/// The report as the controller reads it; `None` for a packet said to have arrived without an
/// arrival time (neither a loss nor usable for delay).
fn feedback(report: &PacketReport) -> Option<PacketFeedback> {
    let arrival = match (report.arrived, report.arrival) {
        (true, None) => return None,
        (true, arrival) => arrival,
        (false, _) => None,
    };
    Some(PacketFeedback {
        sequence: report.id,
        send_time: report.departure,
        arrival,
        size: report.size,
        probe_cluster: None,
    })
}

/// Whether `TELEVISIT_BWE_TRACE` is set: every transport-cc feedback that moves the target is
/// printed to stderr with what the controller saw (for tuning on the emulated link).
fn tracing_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("TELEVISIT_BWE_TRACE").is_some())
}

fn trace(now: Instant, before: u64, packets: &[PacketFeedback], controller: &CongestionController) {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| now);
    let target = controller.target_bps();
    if target.abs_diff(before) * 50 < before {
        return; // moved less than 2 %
    }
    let lost = packets.iter().filter(|p| p.arrival.is_none()).count();
    eprintln!(
        "bwe {:>7.3}s {:>5} -> {:>5} kbps  acked {:?}  delay-based {}  loss cap {:?}  capacity {:?}  \
         {:?}/{:?}  queue {} ms  lost {lost}/{}  rtt {} ms",
        now.saturating_duration_since(origin).as_secs_f64(),
        before / 1000,
        target / 1000,
        controller.acknowledged_bps().map(|b| b / 1000),
        controller.delay_based_bps() / 1000,
        controller.loss_based_bps().map(|b| b / 1000),
        controller.link_capacity_bps().map(|b| b / 1000),
        controller.usage(),
        controller.rate_state(),
        controller.queue_delay().as_millis(),
        packets.len(),
        controller.rtt().as_millis(),
    );
}

impl BandwidthEstimator for ControllerEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let packets: Vec<PacketFeedback> = reports.iter().filter_map(|r| self.feedback(r)).collect();
        let mut controller = lock(&self.controller);
        let before = controller.target_bps();
        controller.on_feedback(now, &packets);
        if tracing_enabled() {
            trace(now, before, &packets, &controller);
        }
        publish(&controller, &self.state);
    }

    fn target_bitrate(&self) -> f64 {
        lock(&self.controller).target_bps() as f64
    }

    fn handle_timeout(&mut self, now: Instant) {
        let mut controller = lock(&self.controller);
        controller.on_timeout(now);
        publish(&controller, &self.state);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        lock(&self.controller).poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        let controller = lock(&self.controller);
        let mut stats = EstimatorStats::default();
        stats.delay_based_bitrate = Some(controller.delay_based_bps() as f64);
        stats.loss_based_bitrate = controller.loss_based_bps().map(|b| b as f64);
        stats.packet_loss = controller.loss_fraction();
        stats.round_trip_time = Some(controller.rtt());
        stats
    }
}

/// Sender reports remembered for the round trip (a report block names the last one it saw).
const SENT_REPORTS_KEPT: usize = 16;

/// Reads REMB and report blocks about our streams and feeds them to the controller, and keeps
/// the peer's sender reports in [`SenderClocks`] (they date its frames). Place it
/// between the congestion-control slot and the pacer (e.g. `Slot::from(1_500)`): wire-ward of
/// every RTCP generator, so it sees the sender reports leave, and of the pacer, which reads the
/// target it announces.
pub struct ReportReader {
    controller: SharedController,
    state: Arc<PacingState>,
    local_ssrcs: HashSet<u32>,
    /// The peer's sender reports, by stream.
    sender_clocks: SenderClocks,
    /// (middle 32 bits of the NTP time, when it left) of our last sender reports.
    sent_reports: VecDeque<(u32, Instant)>,
    announced_bps: u64,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl ReportReader {
    /// A reader feeding `controller` and publishing to `state`, and the peer's sender reports to
    /// `sender_clocks`.
    pub fn new(
        controller: SharedController,
        state: Arc<PacingState>,
        sender_clocks: SenderClocks,
    ) -> ReportReader {
        let announced_bps = lock(&controller).target_bps();
        ReportReader {
            controller,
            state,
            local_ssrcs: HashSet::new(),
            sender_clocks,
            sent_reports: VecDeque::new(),
            announced_bps,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// The mean loss fraction and the round trip of the blocks about our streams, if any.
    fn read_blocks(&self, now: Instant, blocks: &[ReceptionReport]) -> Option<(f64, Option<Duration>)> {
        let ours: Vec<&ReceptionReport> =
            blocks.iter().filter(|b| self.local_ssrcs.contains(&b.ssrc)).collect();
        if ours.is_empty() {
            return None;
        }
        let loss = ours.iter().map(|b| b.fraction_lost as f64 / 256.0).sum::<f64>() / ours.len() as f64;
        let rtt = ours.iter().find_map(|b| {
            let (_, sent) = self
                .sent_reports
                .iter()
                .find(|(ntp, _)| b.last_sender_report != 0 && *ntp == b.last_sender_report)?;
            let held = Duration::from_secs_f64(b.delay as f64 / 65_536.0);
            now.saturating_duration_since(*sent).checked_sub(held)
        });
        Some((loss, rtt))
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ReportReader {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let mut remb = None;
            let mut blocks = Vec::new();
            let (mut arrived, mut missing) = (Vec::new(), Vec::new());
            for packet in packets {
                let any = packet.as_any();
                if let Some(r) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    if r.ssrcs.is_empty() || r.ssrcs.iter().any(|s| self.local_ssrcs.contains(s)) {
                        remb = Some(r.bitrate as u64);
                    }
                } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                    blocks.extend(self.read_blocks(msg.now, &rr.reports));
                } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                    self.sender_clocks.on_report(sr.ssrc, sr.ntp_time, sr.rtp_time);
                    blocks.extend(self.read_blocks(msg.now, &sr.reports));
                } else if let Some(twcc) = any.downcast_ref::<TransportLayerCc>() {
                    // The congestion-control slot (wire-ward) took each packet's fate once,
                    // and calls a packet lost that no feedback named: the controller needs
                    // what the feedback itself says.
                    let (received, not_received) = statuses_in(twcc);
                    arrived.extend(received);
                    missing.extend(not_received);
                }
            }
            if !arrived.is_empty() || !missing.is_empty() {
                lock(&self.controller).on_feedback_statuses(&arrived, &missing);
            }
            if remb.is_some() || !blocks.is_empty() {
                let mut controller = lock(&self.controller);
                if let Some(bps) = remb {
                    controller.on_remb(msg.now, bps);
                }
                for (loss, rtt) in blocks {
                    controller.on_receiver_report(msg.now, loss, rtt);
                }
                publish(&controller, &self.state);
                let target = controller.target_bps();
                if target != self.announced_bps {
                    self.announced_bps = target;
                    msg.message.add(Attribute::TargetBitrateChanged { bits_per_second: target as f64 });
                }
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                if let Some(sr) = packet.as_any().downcast_ref::<SenderReport>() {
                    self.sent_reports.push_back(((sr.ntp_time >> 16) as u32, msg.now));
                    if self.sent_reports.len() > SENT_REPORTS_KEPT {
                        self.sent_reports.pop_front();
                    }
                }
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for ReportReader {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.local_ssrcs.insert(info.ssrc);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.local_ssrcs.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::{TransportContext, TransportMessage};

    const OURS: u32 = 7;

    fn rtcp(now: Instant, packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    fn reader() -> (ReportReader, Arc<PacingState>) {
        let state = PacingState::new(0);
        let controller = shared_controller(BweConfig::default());
        let mut reader = ReportReader::new(controller, Arc::clone(&state), SenderClocks::default());
        reader.bind_local_stream(&StreamInfo { ssrc: OURS, ..Default::default() });
        (reader, state)
    }

    #[test]
    fn a_remb_moves_the_target_and_is_announced_to_the_pacer() {
        let (mut reader, state) = reader();
        let t0 = Instant::now();
        let remb =
            ReceiverEstimatedMaximumBitrate { sender_ssrc: 1, bitrate: 2_000_000.0, ssrcs: vec![OURS] };
        reader.handle_read(rtcp(t0, vec![Box::new(remb)])).unwrap();
        assert_eq!(state.target_bps(), 2_000_000);
        let passed = reader.poll_read().expect("passed on");
        assert!(matches!(
            passed.message.get(&Attribute::TargetBitrateChanged { bits_per_second: 0.0 }),
            Some(Attribute::TargetBitrateChanged { bits_per_second }) if *bits_per_second == 2_000_000.0
        ));
    }

    #[test]
    fn heavy_loss_in_a_receiver_report_lowers_the_target_and_lsr_gives_the_round_trip() {
        let (mut reader, state) = reader();
        let t0 = Instant::now();
        let sr = SenderReport { ssrc: OURS, ntp_time: 0x1234_5678_9abc_0000, ..Default::default() };
        reader.handle_write(rtcp(t0, vec![Box::new(sr)])).unwrap();
        assert!(reader.poll_write().is_some());
        let block = ReceptionReport {
            ssrc: OURS,
            fraction_lost: 64, // 25 %
            last_sender_report: 0x5678_9abc,
            delay: 65_536 / 10, // held 100 ms
            ..Default::default()
        };
        let rr = ReceiverReport { ssrc: 1, reports: vec![block], ..Default::default() };
        reader.handle_read(rtcp(t0 + Duration::from_millis(180), vec![Box::new(rr)])).unwrap();
        assert!(state.target_bps() < 700_000, "{}", state.target_bps());
        let rtt = lock(&reader.controller).rtt();
        assert!((rtt.as_millis() as i64 - 80).abs() <= 1, "{rtt:?}");
    }

    #[test]
    fn crate_reports_become_feedback_in_send_order_terms() {
        let t0 = Instant::now();
        let report = |id: u64, arrived: bool, arrival: Option<Duration>| PacketReport {
            ssrc: OURS,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: 1_200,
            arrived,
            departure: t0,
            arrival,
            ecn: Default::default(),
        };
        let received = feedback(&report(9, true, Some(Duration::from_millis(40)))).unwrap();
        assert_eq!(
            (received.sequence, received.arrival, received.size),
            (9, Some(Duration::from_millis(40)), 1_200)
        );
        assert_eq!(feedback(&report(10, false, None)).unwrap().arrival, None, "lost");
        assert_eq!(
            feedback(&report(11, true, None)),
            None,
            "arrived at an unknown time: no evidence either way"
        );
    }

    #[test]
    fn a_transport_cc_feedback_names_the_packets_it_reports_received_across_the_wrap() {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
            RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
        };
        let feedback = TransportLayerCc {
            base_sequence_number: 65_534,
            packet_status_count: 6,
            packet_chunks: vec![
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                    run_length: 2,
                }),
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list: vec![
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketReceivedLargeDelta,
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                        // Padding past the status count.
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                    ],
                }),
            ],
            ..Default::default()
        };
        assert_eq!(statuses_in(&feedback), (vec![65_534, 65_535, 1, 3], vec![0, 2]));
    }

    #[test]
    fn packets_are_numbered_by_their_unwrapped_transport_wide_sequence_number() {
        let state = PacingState::new(0);
        let mut estimator = ControllerEstimator::new(shared_controller(BweConfig::default()), state);
        let t0 = Instant::now();
        let report = |twcc: u16| PacketReport {
            ssrc: OURS,
            id: 1,
            rtp_sequence_number: twcc,
            is_twcc: true,
            twcc_sequence_number: twcc,
            size: 1_200,
            arrived: true,
            departure: t0,
            arrival: Some(Duration::from_millis(40)),
            ecn: Default::default(),
        };
        let sequences: Vec<u64> = [65_534, 65_535, 0, 1, 65_535, 2]
            .into_iter()
            .map(|twcc| estimator.feedback(&report(twcc)).unwrap().sequence)
            .collect();
        let base = 65_534 + (1 << 16);
        assert_eq!(sequences, [base, base + 1, base + 2, base + 3, base + 1, base + 4]);
    }

    #[test]
    fn reports_about_other_streams_are_ignored() {
        let (mut reader, state) = reader();
        let block = ReceptionReport { ssrc: 99, fraction_lost: 255, ..Default::default() };
        let rr = ReceiverReport { ssrc: 1, reports: vec![block], ..Default::default() };
        reader.handle_read(rtcp(Instant::now(), vec![Box::new(rr)])).unwrap();
        assert_eq!(state.target_bps(), 0, "nothing published: nothing was about us");
    }
}
