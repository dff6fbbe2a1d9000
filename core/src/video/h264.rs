//! H.264 bitstream chores a platform encoder leaves to its caller, kept here so the Kotlin and
//! Swift glue stays small:
//! - [`ParameterSets`]: MediaCodec and VideoToolbox hand over the sequence and picture parameter
//!   sets once (a codec-config buffer, a format description), but a receiver that joins late or
//!   lost a packet can only start from an IDR that carries them: each IDR gets them in front.
//! - [`annex_b_from_avcc`] / [`avcc_from_annex_b`]: VideoToolbox speaks length-prefixed NAL units
//!   (AVCC, 4-byte lengths); RTP packetization and MediaCodec speak start codes (Annex B).

use crate::frame::{h264_nal_units, nal_type};

/// NAL unit types (ITU-T H.264 Table 7-1).
const IDR: u8 = 5;
const SPS: u8 = 7;
const PPS: u8 = 8;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The parameter sets last seen, put in front of IDRs that come without them.
#[derive(Debug, Default, Clone)]
pub struct ParameterSets {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl ParameterSets {
    /// An empty keeper.
    pub fn new() -> ParameterSets {
        ParameterSets::default()
    }

    /// Takes an Annex-B access unit from the encoder. Parameter sets in it are remembered; an
    /// access unit of nothing else (a codec-config buffer) gives `None`; an IDR without them gets
    /// the last ones in front.
    pub fn complete(&mut self, access_unit: Vec<u8>) -> Option<Vec<u8>> {
        let (mut has_sps, mut has_pps, mut has_idr, mut has_other) = (false, false, false, false);
        for nal in h264_nal_units(&access_unit) {
            match nal_type(nal) {
                Some(SPS) => {
                    has_sps = true;
                    self.sps = Some(nal.to_vec());
                }
                Some(PPS) => {
                    has_pps = true;
                    self.pps = Some(nal.to_vec());
                }
                Some(IDR) => has_idr = true,
                Some(_) => has_other = true,
                None => {}
            }
        }
        if !has_idr && !has_other {
            return None;
        }
        if !has_idr || (has_sps && has_pps) {
            return Some(access_unit);
        }
        let mut out = Vec::with_capacity(access_unit.len() + 64);
        for set in [&self.sps, &self.pps].into_iter().flatten() {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(set);
        }
        out.extend_from_slice(&access_unit);
        Some(out)
    }
}

/// Annex B (start codes) from AVCC (each NAL unit after its 4-byte big-endian length). `None` if a
/// length runs past the end.
pub fn annex_b_from_avcc(avcc: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(avcc.len() + 16);
    let mut rest = avcc;
    while !rest.is_empty() {
        let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let nal = rest.get(4..4 + length)?;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
        rest = &rest[4 + length..];
    }
    Some(out)
}

/// AVCC (4-byte big-endian lengths) from Annex B, without the parameter sets (VideoToolbox takes
/// those in its format description: see [`parameter_sets`]).
pub fn avcc_from_annex_b(annex_b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(annex_b.len() + 16);
    for nal in h264_nal_units(annex_b).filter(|n| !n.is_empty() && !matches!(nal_type(n), Some(SPS | PPS))) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// The sequence and picture parameter sets in an Annex-B access unit, if it has both (a keyframe
/// from a WebRTC sender does): what a VideoToolbox decoder is configured with.
pub fn parameter_sets(annex_b: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut keeper = ParameterSets::new();
    keeper.complete(annex_b.to_vec());
    Some((keeper.sps?, keeper.pps?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS_NAL: [u8; 4] = [0x67, 0x42, 0xe0, 0x28];
    const PPS_NAL: [u8; 3] = [0x68, 0xce, 0x3c];
    const IDR_NAL: [u8; 3] = [0x65, 0x88, 0x84];
    const P_NAL: [u8; 3] = [0x41, 0x9a, 0x02];

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|n| START_CODE.iter().chain(n.iter()).copied()).collect()
    }

    #[test]
    fn idrs_get_the_parameter_sets_of_the_codec_config_in_front() {
        let mut sets = ParameterSets::new();
        let before = annex_b(&[&IDR_NAL]);
        assert_eq!(sets.complete(before.clone()), Some(before), "nothing to add before any config");
        assert_eq!(sets.complete(annex_b(&[&SPS_NAL, &PPS_NAL])), None, "a config buffer is no frame");
        let idr = sets.complete(annex_b(&[&IDR_NAL])).unwrap();
        assert_eq!(idr, annex_b(&[&SPS_NAL, &PPS_NAL, &IDR_NAL]));
        let delta = annex_b(&[&P_NAL]);
        assert_eq!(sets.complete(delta.clone()), Some(delta), "delta frames pass as they are");
        let whole = annex_b(&[&SPS_NAL, &PPS_NAL, &IDR_NAL]);
        assert_eq!(sets.complete(whole.clone()), Some(whole), "an IDR with its sets is not doubled");
    }

    #[test]
    fn avcc_and_annex_b_convert_both_ways_and_a_short_length_is_refused() {
        let avcc: Vec<u8> = [&[0, 0, 0, 3][..], &IDR_NAL, &[0, 0, 0, 3], &P_NAL].concat();
        assert_eq!(annex_b_from_avcc(&avcc), Some(annex_b(&[&IDR_NAL, &P_NAL])));
        assert_eq!(avcc_from_annex_b(&annex_b(&[&SPS_NAL, &PPS_NAL, &IDR_NAL, &P_NAL])), avcc);
        assert_eq!(annex_b_from_avcc(&[0, 0, 0, 9, 1, 2]), None);
        assert_eq!(annex_b_from_avcc(&[0, 0]), None);
        assert_eq!(
            parameter_sets(&annex_b(&[&SPS_NAL, &PPS_NAL, &IDR_NAL])),
            Some((SPS_NAL.to_vec(), PPS_NAL.to_vec()))
        );
        assert_eq!(parameter_sets(&annex_b(&[&IDR_NAL])), None);
    }
}
