//! Flat, open-addressing tables for the hot path: `u64` keys and small `Copy` values side by side in
//! one array of slots (linear probing, load ≤ ½), so that a lookup touches one cache line, and the
//! slot of a key can be prefetched from its hash before it is needed. Big arrays sit on 2 MB pages.

use crate::huge::HugeBuf;

/// The key no entry may have: marks an empty slot.
pub const EMPTY: u64 = u64::MAX;

/// The multiplicative hash of a key (Fibonacci hashing); the top bits pick the slot.
#[inline(always)]
pub fn hash(key: u64) -> u64 {
    let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Slot<V: Copy> {
    key: u64,
    val: V,
}

/// A map from `u64` (never [`EMPTY`]) to a small `Copy` value, built once (or copied and edited by the
/// control side) and then only read.
#[derive(Clone)]
pub struct FlatMap<V: Copy + Default> {
    slots: HugeBuf<Slot<V>>,
    mask: u64,
    len: usize,
}

impl<V: Copy + Default + std::fmt::Debug> std::fmt::Debug for FlatMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatMap")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl<V: Copy + Default> Default for FlatMap<V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<V: Copy + Default> FlatMap<V> {
    /// A map that holds `n` entries at load ≤ ½ without growing.
    pub fn with_capacity(n: usize) -> Self {
        let slots = (n.max(4) * 2).next_power_of_two();
        FlatMap {
            slots: HugeBuf::filled(
                slots,
                Slot {
                    key: EMPTY,
                    val: V::default(),
                },
            ),
            mask: slots as u64 - 1,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes the slots take.
    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot<V>>()
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        ((h >> 16) & self.mask) as usize
    }

    /// Brings the home slot of a key with hash `h`, and the slot after it (where a displaced key
    /// most often sits), toward the cache: the line of each end, so a slot that straddles two
    /// lines is whole (a hint; never faults).
    #[inline(always)]
    pub fn prefetch(&self, h: u64) {
        let p = self.slots.as_ptr().wrapping_add(self.home(h)).cast::<u8>();
        prefetch(p);
        prefetch(p.wrapping_add(2 * std::mem::size_of::<Slot<V>>() - 1));
    }

    /// The value of `key`, given its hash.
    #[inline(always)]
    pub fn get_hashed(&self, key: u64, h: u64) -> Option<V> {
        let mut i = self.home(h);
        loop {
            // SAFETY: `i` is masked by `mask = slots - 1`, so it is in bounds; and at least half
            // the slots are empty, so the loop ends.
            let s = unsafe { self.slots.get_unchecked(i) };
            if s.key == key {
                return Some(s.val);
            }
            if s.key == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask as usize;
        }
    }

    #[inline(always)]
    pub fn get(&self, key: u64) -> Option<V> {
        self.get_hashed(key, hash(key))
    }

    /// Inserts or replaces; grows (doubling) past load ½. Control side only.
    pub fn insert(&mut self, key: u64, val: V) {
        debug_assert_ne!(key, EMPTY);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mut i = self.home(hash(key));
        loop {
            let s = &mut self.slots.as_mut_slice()[i];
            if s.key == key {
                s.val = val;
                return;
            }
            if s.key == EMPTY {
                *s = Slot { key, val };
                self.len += 1;
                return;
            }
            i = (i + 1) & self.mask as usize;
        }
    }

    /// Removes `key` (backward-shift deletion keeps probe chains intact). Control side only.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        let mask = self.mask as usize;
        let mut i = self.home(hash(key));
        loop {
            let s = self.slots[i];
            if s.key == EMPTY {
                return None;
            }
            if s.key == key {
                break;
            }
            i = (i + 1) & mask;
        }
        let slots = self.slots.as_mut_slice();
        let old = slots[i].val;
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = slots[j];
            if s.key == EMPTY {
                break;
            }
            let home = ((hash(s.key) >> 16) & self.mask) as usize;
            // Move `s` into the hole when its home is not in (hole, j] (cyclically).
            let in_range = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !in_range {
                slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        slots[hole] = Slot {
            key: EMPTY,
            val: V::default(),
        };
        self.len -= 1;
        Some(old)
    }

    fn grow(&mut self) {
        let mut bigger = FlatMap::with_capacity(self.slots.len());
        for s in self.slots.iter() {
            if s.key != EMPTY {
                bigger.insert(s.key, s.val);
            }
        }
        *self = bigger;
    }

    /// Every (key, value), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != EMPTY)
            .map(|s| (s.key, s.val))
    }
}

/// A prefetch hint for the cache line holding `p` (no effect where the target has none).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint; it never dereferences in a way that can fault, whatever
    // the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #[test]
        fn behaves_like_a_hashmap(ops in proptest::collection::vec((0u8..3, 0u64..64, any::<u32>()), 0..400)) {
            let mut m: FlatMap<u32> = FlatMap::with_capacity(4);
            let mut r: HashMap<u64, u32> = HashMap::new();
            for (op, k, v) in ops {
                match op {
                    0 => { m.insert(k, v); r.insert(k, v); }
                    1 => { prop_assert_eq!(m.remove(k), r.remove(&k)); }
                    _ => { prop_assert_eq!(m.get(k), r.get(&k).copied()); }
                }
                prop_assert_eq!(m.len(), r.len());
            }
            for (k, v) in &r {
                prop_assert_eq!(m.get(*k), Some(*v));
            }
            prop_assert_eq!(m.iter().count(), r.len());
        }
    }

    #[test]
    fn big_keys_and_collisions() {
        let mut m: FlatMap<u64> = FlatMap::with_capacity(1000);
        for i in 0..1000u64 {
            m.insert(i << 32 | 0xc613_0001, i);
        }
        for i in 0..1000u64 {
            assert_eq!(m.get(i << 32 | 0xc613_0001), Some(i));
        }
        assert_eq!(m.get(5000 << 32), None);
    }
}
