//! Flat, open-addressing tables for the hot path: `u64` keys and small `Copy` values side by side in
//! one array of slots (linear probing, load ≤ ½), so that a lookup touches one cache line, and the
//! slot of a key can be prefetched from its hash before it is needed. Big arrays sit on 2 MB pages.

use crate::huge::HugeBuf;
use std::sync::Arc;

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
pub struct Slot<V: Copy> {
    key: u64,
    val: V,
}

/// Where a [`FlatMap`]'s slots live: one array ([`Contiguous`], the hot path's tables), or pages
/// shared between copies of the map ([`Paged`], for a table a change copies).
pub trait Slots<V: Copy>: Clone {
    /// `n` (a power of two) slots of `fill`.
    fn filled(n: usize, fill: Slot<V>) -> Self;
    /// Where slot `i < n` lies.
    fn at(&self, i: usize) -> *const Slot<V>;
    /// Slot `i < n`, to write.
    fn slot_mut(&mut self, i: usize) -> &mut Slot<V>;
}

/// A map's slots in one array (on 2 MB pages when it is big): a copy of the map copies them all.
#[derive(Clone)]
pub struct Contiguous<V: Copy>(HugeBuf<Slot<V>>);

impl<V: Copy> Slots<V> for Contiguous<V> {
    fn filled(n: usize, fill: Slot<V>) -> Self {
        Contiguous(HugeBuf::filled(n, fill))
    }
    #[inline(always)]
    fn at(&self, i: usize) -> *const Slot<V> {
        self.0.as_ptr().wrapping_add(i)
    }
    fn slot_mut(&mut self, i: usize) -> &mut Slot<V> {
        &mut self.0.as_mut_slice()[i]
    }
}

/// Slots a page of [`Paged`] holds (what a change copies): 64 Ki, 1–2 MB.
const PAGE_BITS: u32 = 16;
const PAGE: usize = 1 << PAGE_BITS;

/// A map's slots in pages of [`PAGE`] that copies of the map share: cloning copies a pointer a
/// page, and a change copies only the page it writes (the first time it writes it), so a one-entry
/// change to a copy of a million-entry map costs the same as to a copy of a thousand-entry one. The
/// map is built in one buffer (on 2 MB pages where it is big); a page a change copies gets its own.
/// A probe costs one more load than [`Contiguous`]'s (the page's start, from a small array).
#[derive(Clone)]
pub struct Paged<V: Copy> {
    /// Where each page's slots start: the hot path's view of `pages`.
    starts: Box<[*const Slot<V>]>,
    /// The buffer each page lies in and where in it the page starts.
    pages: Vec<(Arc<HugeBuf<Slot<V>>>, usize)>,
    /// Slots a page holds: [`PAGE`], or all of them in a smaller map.
    per: usize,
    /// The buffer the map was built in, while some of its pages still lie in it, and how many do:
    /// while no other map shares it (its count is theirs and this one's), they are written in place
    /// — building or growing a map copies no page.
    base: Option<Arc<HugeBuf<Slot<V>>>>,
    on_base: usize,
}

// SAFETY: `starts` only points into the buffers `pages` holds (kept alive by it, and written only
// through `&mut self` once the buffer's reference count shows it is this map's alone), so the
// slots are as thread-safe as a `Vec<Arc<HugeBuf<Slot<V>>>>` of `V: Send + Sync` values.
unsafe impl<V: Copy + Send + Sync> Send for Paged<V> {}
// SAFETY: as above; shared access only reads.
unsafe impl<V: Copy + Send + Sync> Sync for Paged<V> {}

impl<V: Copy> Slots<V> for Paged<V> {
    fn filled(n: usize, fill: Slot<V>) -> Self {
        let buf = Arc::new(HugeBuf::filled(n, fill));
        let per = n.min(PAGE);
        let pages: Vec<_> = (0..n / per).map(|p| (buf.clone(), p * per)).collect();
        let starts = pages
            .iter()
            .map(|(b, at)| b.as_ptr().wrapping_add(*at))
            .collect();
        let on_base = pages.len();
        Paged {
            starts,
            pages,
            per,
            base: Some(buf),
            on_base,
        }
    }
    #[inline(always)]
    fn at(&self, i: usize) -> *const Slot<V> {
        // SAFETY: `i < n`, so page `i >> PAGE_BITS` exists (a map smaller than a page has one page
        // of all its slots).
        unsafe { *self.starts.get_unchecked(i >> PAGE_BITS) }.wrapping_add(i & (PAGE - 1))
    }
    fn slot_mut(&mut self, i: usize) -> &mut Slot<V> {
        let p = i >> PAGE_BITS;
        let (buf, at) = &mut self.pages[p];
        if let Some(base) = self.base.as_ref().filter(|b| Arc::ptr_eq(b, buf)) {
            if Arc::strong_count(base) == self.on_base + 1 {
                let slot = buf.as_ptr().cast_mut().wrapping_add(*at + (i & (PAGE - 1)));
                // SAFETY: every reference to the base buffer is this map's (`base` and the
                // `on_base` pages that lie in it), and the map is borrowed mutably, so nothing else
                // reads or writes the buffer; `slot` is in bounds (`i < n`) and comes from the
                // buffer's own pointer (`HugeBuf::as_ptr`, not a shared reference).
                return unsafe { &mut *slot };
            }
            self.on_base -= 1;
            if self.on_base == 0 {
                self.base = None;
            }
        }
        let (buf, at) = &mut self.pages[p];
        if Arc::get_mut(buf).is_none() {
            let page = HugeBuf::from_slice(&buf.as_slice()[*at..*at + self.per]);
            (*buf, *at) = (Arc::new(page), 0);
            self.starts[p] = buf.as_ptr();
        }
        let at = *at;
        match Arc::get_mut(buf) {
            Some(b) => &mut b.as_mut_slice()[at + (i & (PAGE - 1))],
            None => unreachable!("a page just copied is unshared"),
        }
    }
}

impl<V: Copy> Paged<V> {
    /// Pages these slots share with `other`'s (how much a change copied).
    pub fn shared_with(&self, other: &Self) -> usize {
        self.starts
            .iter()
            .zip(other.starts.iter())
            .filter(|(a, b)| a == b)
            .count()
    }
}

/// A map from `u64` (never [`EMPTY`]) to a small `Copy` value, built once (or copied and edited by the
/// control side) and then only read; its slots in one array ([`Contiguous`]) or in pages that
/// copies share ([`Paged`]: see [`PagedMap`]).
#[derive(Clone)]
pub struct FlatMap<V: Copy + Default, S: Slots<V> = Contiguous<V>> {
    slots: S,
    mask: u64,
    len: usize,
    _v: std::marker::PhantomData<V>,
}

/// A [`FlatMap`] whose copies share their slots page by page: the rule buckets by tenant pair,
/// which a one-rule change edits.
pub type PagedMap<V> = FlatMap<V, Paged<V>>;

impl<V: Copy + Default + std::fmt::Debug, S: Slots<V>> std::fmt::Debug for FlatMap<V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatMap")
            .field("len", &self.len)
            .field("slots", &self.n_slots())
            .finish()
    }
}

impl<V: Copy + Default, S: Slots<V>> Default for FlatMap<V, S> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<V: Copy + Default, S: Slots<V>> FlatMap<V, S> {
    /// A map that holds `n` entries at load ≤ ½ without growing.
    pub fn with_capacity(n: usize) -> Self {
        let slots = (n.max(4) * 2).next_power_of_two();
        FlatMap {
            slots: S::filled(
                slots,
                Slot {
                    key: EMPTY,
                    val: V::default(),
                },
            ),
            mask: slots as u64 - 1,
            len: 0,
            _v: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn n_slots(&self) -> usize {
        self.mask as usize + 1
    }
    /// Bytes the slots take.
    pub fn bytes(&self) -> usize {
        self.n_slots() * std::mem::size_of::<Slot<V>>()
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        ((h >> 16) & self.mask) as usize
    }

    /// Slot `i` (masked).
    #[inline(always)]
    fn slot(&self, i: usize) -> Slot<V> {
        // SAFETY: `i <= mask` is in bounds; the slots are initialised, alive while `self` is
        // borrowed and not written while it is shared.
        unsafe { *self.slots.at(i) }
    }

    /// Slot `i` (masked), to write.
    fn slot_mut(&mut self, i: usize) -> &mut Slot<V> {
        self.slots.slot_mut(i)
    }

    /// Brings the home slot of a key with hash `h`, and the slot after it (where a displaced key
    /// most often sits), toward the cache: the line of each end, so a slot that straddles two
    /// lines is whole (a hint; never faults).
    #[inline(always)]
    pub fn prefetch(&self, h: u64) {
        let p = self.slots.at(self.home(h)).cast::<u8>();
        prefetch(p);
        prefetch(p.wrapping_add(2 * std::mem::size_of::<Slot<V>>() - 1));
    }

    /// The value of `key`, given its hash.
    #[inline(always)]
    pub fn get_hashed(&self, key: u64, h: u64) -> Option<V> {
        let mut i = self.home(h);
        loop {
            // At least half the slots are empty, so the loop ends.
            let s = self.slot(i);
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
        if (self.len + 1) * 2 > self.n_slots() {
            self.grow();
        }
        let mut i = self.home(hash(key));
        loop {
            let s = self.slot(i);
            if s.key == key {
                self.slot_mut(i).val = val;
                return;
            }
            if s.key == EMPTY {
                *self.slot_mut(i) = Slot { key, val };
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
            let s = self.slot(i);
            if s.key == EMPTY {
                return None;
            }
            if s.key == key {
                break;
            }
            i = (i + 1) & mask;
        }
        let old = self.slot(i).val;
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slot(j);
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
                *self.slot_mut(hole) = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        *self.slot_mut(hole) = Slot {
            key: EMPTY,
            val: V::default(),
        };
        self.len -= 1;
        Some(old)
    }

    fn grow(&mut self) {
        let mut bigger = Self::with_capacity(self.n_slots());
        for (k, v) in self.iter() {
            bigger.insert(k, v);
        }
        *self = bigger;
    }

    /// Every (key, value), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        (0..self.n_slots())
            .map(|i| self.slot(i))
            .filter(|s| s.key != EMPTY)
            .map(|s| (s.key, s.val))
    }
}

impl<V: Copy + Default> PagedMap<V> {
    /// Pages this map shares with `other` (how much a change copied).
    pub fn pages_shared_with(&self, other: &Self) -> usize {
        self.slots.shared_with(&other.slots)
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
            let mut pm: PagedMap<u32> = PagedMap::with_capacity(4);
            let mut r: HashMap<u64, u32> = HashMap::new();
            for (op, k, v) in ops {
                match op {
                    0 => { m.insert(k, v); pm.insert(k, v); r.insert(k, v); }
                    1 => {
                        prop_assert_eq!(pm.remove(k), r.get(&k).copied());
                        prop_assert_eq!(m.remove(k), r.remove(&k));
                    }
                    _ => {
                        prop_assert_eq!(m.get(k), r.get(&k).copied());
                        prop_assert_eq!(pm.get(k), r.get(&k).copied());
                    }
                }
                prop_assert_eq!(m.len(), r.len());
                prop_assert_eq!(pm.len(), r.len());
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

    /// A copy shares every page it has not written; a write copies its page only, and neither map
    /// sees the other's changes — across pages, through growth and backward-shift removal.
    #[test]
    fn copies_share_pages_until_written() {
        let n = 3 * PAGE as u64 / 2; // 2^18 slots: four pages
        let mut a: PagedMap<u64> = PagedMap::with_capacity(n as usize);
        for k in 0..n {
            a.insert(k * 7 + 1, k);
        }
        let pages = a.slots.pages.len();
        assert_eq!(pages, 4);
        // Built in one buffer, in place: no page was copied.
        assert_eq!(a.slots.on_base, pages);
        assert!(a
            .slots
            .pages
            .iter()
            .all(|(b, _)| Arc::ptr_eq(b, a.slots.base.as_ref().unwrap())));
        let mut b = a.clone();
        assert_eq!(b.pages_shared_with(&a), pages);
        b.insert(1, 99);
        assert_eq!(b.pages_shared_with(&a), pages - 1);
        assert_eq!((a.get(1), b.get(1)), (Some(0), Some(99)));
        let gone = 7 * 1000 + 1;
        assert_eq!(b.remove(gone), Some(1000));
        assert!(b.pages_shared_with(&a) >= pages - 3);
        assert_eq!((a.get(gone), b.get(gone)), (Some(1000), None));
        for k in 0..n {
            let key = k * 7 + 1;
            assert_eq!(a.get(key), Some(k));
            let want = match key {
                1 => Some(99),
                _ if key == gone => None,
                _ => Some(k),
            };
            assert_eq!(b.get(key), want);
        }
        assert_eq!((a.len(), b.len()), (n as usize, n as usize - 1));
        // Growing rebuilds `b` alone.
        let mut c = b.clone();
        for k in n..2 * n {
            c.insert(k * 7 + 1, k);
        }
        assert_eq!(b.get(7 * n + 1), None);
        assert_eq!(c.get(7 * n + 1), Some(n));
        assert_eq!(c.get(1), Some(99));
    }
}
