//! Caps on open connections, per client address and in total, shared by the HTTP edge and the
//! embedded TURN server's TCP/TLS listeners: one address (or a flood of them) cannot use up the
//! process's file descriptors and lock everyone else out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts open connections; [`ConnectionCaps::try_open`] hands out a permit while under both caps.
#[derive(Debug)]
pub struct ConnectionCaps {
    per_address: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    caps: Arc<ConnectionCaps>,
    address: Option<IpAddr>,
}

impl ConnectionCaps {
    /// At most `per_address` connections from one address and `total` in all.
    pub fn new(per_address: usize, total: usize) -> Arc<ConnectionCaps> {
        Arc::new(ConnectionCaps { per_address, total, open: Mutex::new(Open::default()) })
    }

    /// A permit for a new connection from `address`, or `None` when a cap is reached. An `exempt`
    /// address (a trusted proxy carrying many clients) counts only towards the total.
    pub fn try_open(self: &Arc<Self>, address: IpAddr, exempt: bool) -> Option<ConnectionPermit> {
        let mut open = self.open.lock().expect("connection caps lock");
        if open.total >= self.total {
            return None;
        }
        if !exempt {
            let count = open.by_address.entry(address).or_default();
            if *count >= self.per_address {
                return None;
            }
            *count += 1;
        }
        open.total += 1;
        Some(ConnectionPermit { caps: Arc::clone(self), address: (!exempt).then_some(address) })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("connection caps lock").total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().expect("connection caps lock");
        open.total -= 1;
        if let Some(address) = self.address {
            if let Some(count) = open.by_address.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    open.by_address.remove(&address);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_address_and_in_total_and_free_on_drop() {
        let caps = ConnectionCaps::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = caps.try_open(a, false).unwrap();
        let _second = caps.try_open(a, false).unwrap();
        assert!(caps.try_open(a, false).is_none(), "third from one address");
        let _third = caps.try_open(b, false).unwrap();
        assert!(caps.try_open(b, false).is_none(), "total reached");
        drop(first);
        let _fourth = caps.try_open(b, true).expect("a place is free again");
        assert_eq!(caps.open(), 3);
    }
}
