//! The call's logic, sans-I/O: the state machine, the bitrate ladder and the quality scorer take
//! plain values (and the time) in and return decisions; the driver does the I/O.

pub mod ladder;
pub mod machine;
pub mod quality;
pub mod stats;
pub mod transport;
pub mod turn_credentials;
