//! Shallow virtual reassembly: the verdict of a datagram's first fragment, remembered for a few seconds
//! per (tenant, source, destination, protocol, fragment id) so that its later fragments get the same
//! one. Per worker (a datagram's fragments share outer headers, so RSS gives them one queue), fixed
//! size, overwritten oldest-first on collision.

/// How long a first fragment's verdict is remembered.
pub const FRAG_TTL_NS: i64 = 3_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragKey {
    pub src: u128,
    pub dst: u128,
    pub tenant: u32,
    pub id: u32,
    pub proto: u8,
    pub v6: bool,
}

impl FragKey {
    fn hash(&self) -> u64 {
        let mut h = (self.src as u64 ^ (self.src >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= (self.dst as u64 ^ (self.dst >> 64) as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        h ^= u64::from(self.tenant) << 32 | u64::from(self.id);
        h ^= u64::from(self.proto) << 8 | u64::from(self.v6);
        (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
    }
}

/// A remembered verdict: allowed or not, and the deciding rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragVerdict {
    pub allow: bool,
    pub rule: Option<u32>,
    pub tracked_reply: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FragKey,
    at: i64,
    verdict: FragVerdict,
}

/// The per-worker memory of first fragments.
#[derive(Debug)]
pub struct Frags {
    slots: Vec<Option<Entry>>,
    mask: usize,
}

impl Default for Frags {
    fn default() -> Self {
        Frags::with_capacity(4096)
    }
}

impl Frags {
    pub fn with_capacity(n: usize) -> Frags {
        let n = n.next_power_of_two();
        Frags {
            slots: vec![None; n],
            mask: n - 1,
        }
    }

    /// Remembers a first fragment's verdict (two-way associative: the older of two slots goes).
    pub fn put(&mut self, key: FragKey, now: i64, verdict: FragVerdict) {
        let h = key.hash() as usize;
        let (a, b) = (h & self.mask, (h >> 32) & self.mask);
        let pick = match (&self.slots[a], &self.slots[b]) {
            (Some(e), _) if e.key == key => a,
            (_, Some(e)) if e.key == key => b,
            (None, _) => a,
            (_, None) => b,
            (Some(x), Some(y)) => {
                if x.at <= y.at {
                    a
                } else {
                    b
                }
            }
        };
        self.slots[pick] = Some(Entry {
            key,
            at: now,
            verdict,
        });
    }

    /// The verdict of a later fragment's first fragment, if it was seen lately.
    pub fn get(&self, key: &FragKey, now: i64) -> Option<FragVerdict> {
        let h = key.hash() as usize;
        for i in [h & self.mask, (h >> 32) & self.mask] {
            if let Some(e) = &self.slots[i] {
                if e.key == *key && now - e.at <= FRAG_TTL_NS {
                    return Some(e.verdict);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_a_while() {
        let mut f = Frags::with_capacity(8);
        let k = FragKey {
            src: 1,
            dst: 2,
            tenant: 3,
            id: 4,
            proto: 6,
            v6: false,
        };
        let v = FragVerdict {
            allow: true,
            rule: Some(1),
            tracked_reply: false,
        };
        assert_eq!(f.get(&k, 0), None);
        f.put(k, 10, v);
        assert_eq!(f.get(&k, 10 + FRAG_TTL_NS), Some(v));
        assert_eq!(f.get(&k, 11 + FRAG_TTL_NS), None);
        assert_eq!(f.get(&FragKey { id: 5, ..k }, 10), None);
    }
}
