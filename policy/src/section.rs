//! A section of a policy document (its segments, tenants, endpoints or rules), shared between
//! versions in chunks: cloning a document is a few reference counts, and a change copies only the
//! chunk it writes (≤ 256 entries), so one edit costs the same at a thousand entries as at a million.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// Entries a chunk is built with. Chunks are never empty; an insertion or a removal changes only
/// the chunk it lands in, so chunks may hold fewer (down to 1) or more (up to `2 * CHUNK`, then the
/// chunk is split), and `starts` says where each one begins.
const CHUNK: usize = 256;

/// A list shared between document versions chunk by chunk, each chunk copied on its first change
/// (see the module docs). Reads like a slice: `len`, `[i]`, `get`, `iter`; writes like a `Vec`.
pub struct Section<T> {
    chunks: Vec<Arc<Vec<T>>>,
    /// The index of each chunk's first entry.
    starts: Vec<usize>,
    len: usize,
}

impl<T> Section<T> {
    pub fn new() -> Self {
        Section {
            chunks: Vec::new(),
            starts: Vec::new(),
            len: 0,
        }
    }
    /// Whether this section and `other` are the very same list (shared, not merely equal).
    pub fn same(&self, other: &Self) -> bool {
        self.len == other.len && self.shared_prefix(other) == self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// How many leading entries this section and `other` hold in the very same chunks: a copy
    /// that changed, inserted or removed entries shares everything before the first one.
    pub fn shared_prefix(&self, other: &Self) -> usize {
        let n = (self.chunks.iter().zip(&other.chunks))
            .zip(self.starts.iter().zip(&other.starts))
            .take_while(|((a, b), (x, y))| Arc::ptr_eq(a, b) && x == y)
            .count();
        let end = |s: &Self| s.starts.get(n).copied().unwrap_or(s.len);
        end(self).min(end(other))
    }
    /// The chunk holding entry `i` and where in it.
    #[inline]
    fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len {
            return None;
        }
        // Chunks as built (all full): found by a division.
        let c = i / CHUNK;
        if let (Some(&s), Some(ch)) = (self.starts.get(c), self.chunks.get(c)) {
            if s == c * CHUNK && i - s < ch.len() {
                return Some((c, i - s));
            }
        }
        let c = self.starts.partition_point(|&s| s <= i) - 1;
        Some((c, i - self.starts[c]))
    }
    /// The index ranges of the entries this section holds in chunks that `other` does not share:
    /// all a copy of `other` may have written.
    pub fn unshared_with(&self, other: &Self) -> Vec<std::ops::Range<usize>> {
        let theirs: std::collections::HashSet<*const Vec<T>> =
            other.chunks.iter().map(Arc::as_ptr).collect();
        (self.chunks.iter().zip(&self.starts))
            .filter(|(c, _)| !theirs.contains(&Arc::as_ptr(c)))
            .map(|(c, &s)| s..s + c.len())
            .collect()
    }
    /// The first entry from index `start` on that `pred` holds to.
    pub fn find_from(&self, start: usize, mut pred: impl FnMut(&T) -> bool) -> Option<&T> {
        let (c0, off) = self.locate(start)?;
        let first = self.chunks[c0][off..].iter();
        let rest = self.chunks[c0 + 1..].iter().flat_map(|c| c.iter());
        first.chain(rest).find(|e| pred(e))
    }
    /// The entries from index `start` on, each with its index.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = (usize, &T)> + '_ {
        let (c0, off) = self.locate(start).unwrap_or((self.chunks.len(), 0));
        let first = self.chunks.get(c0).map_or(&[][..], |c| &c[off..]);
        let rest = self.chunks.get(c0 + 1..).unwrap_or(&[]);
        (start..).zip(first.iter().chain(rest.iter().flat_map(|c| c.iter())))
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn get(&self, i: usize) -> Option<&T> {
        let (c, off) = self.locate(i)?;
        self.chunks[c].get(off)
    }
    pub fn first(&self) -> Option<&T> {
        self.get(0)
    }
    pub fn last(&self) -> Option<&T> {
        self.chunks.last()?.last()
    }
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            inner: self.chunks.iter().flat_map(|c| c.iter()),
            left: self.len,
        }
    }
    /// The entries, in order, as one `Vec` (a copy).
    pub fn to_vec(&self) -> Vec<T>
    where
        T: Clone,
    {
        let mut v = Vec::with_capacity(self.len);
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v
    }
    /// Removes every entry.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.starts.clear();
        self.len = 0;
    }
}

impl<T: Clone> Section<T> {
    /// Appends an entry, copying at most the last chunk (when it is shared).
    pub fn push(&mut self, v: T) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => Arc::make_mut(c).push(v),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(v);
                self.chunks.push(Arc::new(c));
                self.starts.push(self.len);
            }
        }
        self.len += 1;
    }
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let (c, off) = self.locate(i)?;
        Arc::make_mut(&mut self.chunks[c]).get_mut(off)
    }
    pub fn last_mut(&mut self) -> Option<&mut T> {
        Arc::make_mut(self.chunks.last_mut()?).last_mut()
    }
    /// The first entry `pred` holds to, mutably: only its chunk is copied, if shared (where
    /// `iter_mut().find(..)` would copy every chunk it passes).
    pub fn find_mut(&mut self, pred: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let i = self.iter().position(pred)?;
        self.get_mut(i)
    }
    /// Every entry, mutably: every shared chunk is copied.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.chunks
            .iter_mut()
            .flat_map(|c| Arc::make_mut(c).iter_mut())
    }
    /// Keeps the entries `keep` holds to (asked once of each, in order): only the chunks that lose
    /// an entry are copied; the others stay shared.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let Some(first) = self.iter().position(|e| !keep(e)) else {
            return;
        };
        let Some((c0, off)) = self.locate(first) else {
            return;
        };
        let mut kept: Vec<bool> = Vec::new();
        let mut c = c0;
        let mut at_first = true;
        while c < self.chunks.len() {
            kept.clear();
            let chunk = &self.chunks[c];
            if std::mem::take(&mut at_first) {
                // Entries before `first` were kept, `first` was not.
                kept.resize(off, true);
                kept.push(false);
                kept.extend(chunk[off + 1..].iter().map(&mut keep));
            } else {
                kept.extend(chunk.iter().map(&mut keep));
            }
            if kept.iter().all(|&k| k) {
                c += 1;
                continue;
            }
            let mut at = 0;
            Arc::make_mut(&mut self.chunks[c]).retain(|_| {
                at += 1;
                kept[at - 1]
            });
            if self.chunks[c].is_empty() {
                self.chunks.remove(c);
                self.starts.remove(c);
            } else {
                c += 1;
            }
        }
        self.restart(c0);
    }
    /// Recomputes where chunks `c0..` start, and the length.
    fn restart(&mut self, c0: usize) {
        let mut at = if c0 == 0 {
            0
        } else {
            self.starts[c0 - 1] + self.chunks[c0 - 1].len()
        };
        for (s, c) in self.starts[c0..].iter_mut().zip(&self.chunks[c0..]) {
            *s = at;
            at += c.len();
        }
        self.len = at;
    }
    /// Removes and returns entry `i`, shifting those after it: only its chunk is copied.
    pub fn remove(&mut self, i: usize) -> T {
        let Some((c, off)) = self.locate(i) else {
            panic!("removal index {i} out of a section of {}", self.len);
        };
        let v = Arc::make_mut(&mut self.chunks[c]).remove(off);
        if self.chunks[c].is_empty() {
            self.chunks.remove(c);
            self.starts.remove(c);
            for s in &mut self.starts[c..] {
                *s -= 1;
            }
        } else {
            for s in &mut self.starts[c + 1..] {
                *s -= 1;
            }
        }
        self.len -= 1;
        v
    }
    /// Inserts `v` at `i`, shifting those after it: only the chunk it lands in is copied (and
    /// split in two once it holds twice what it was built with).
    pub fn insert(&mut self, i: usize, v: T) {
        assert!(
            i <= self.len,
            "insertion index {i} out of a section of {}",
            self.len
        );
        let Some((c, off)) = self.locate(i) else {
            return self.push(v); // at the end
        };
        let chunk = Arc::make_mut(&mut self.chunks[c]);
        chunk.insert(off, v);
        for s in &mut self.starts[c + 1..] {
            *s += 1;
        }
        self.len += 1;
        if chunk.len() > 2 * CHUNK {
            let tail = chunk.split_off(CHUNK);
            self.chunks.insert(c + 1, Arc::new(tail));
            self.starts.insert(c + 1, self.starts[c] + CHUNK);
        }
    }
}

impl<T: Clone> Extend<T> for Section<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for v in iter {
            self.push(v);
        }
    }
}

/// A chunk's entries, as [`Iter`] walks them.
type ChunkIter<'a, T> = fn(&'a Arc<Vec<T>>) -> std::slice::Iter<'a, T>;

/// The entries of a [`Section`], in order.
pub struct Iter<'a, T> {
    inner: std::iter::FlatMap<
        std::slice::Iter<'a, Arc<Vec<T>>>,
        std::slice::Iter<'a, T>,
        ChunkIter<'a, T>,
    >,
    left: usize,
}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter {
            inner: self.inner.clone(),
            left: self.left,
        }
    }
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;
    fn next(&mut self) -> Option<&'a T> {
        let v = self.inner.next()?;
        self.left -= 1;
        Some(v)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let v = self.inner.next_back()?;
        self.left -= 1;
        Some(v)
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

impl<T> std::ops::Index<usize> for Section<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(v) => v,
            None => panic!("index {i} out of a section of {}", self.len),
        }
    }
}

impl<T: Clone> std::ops::IndexMut<usize> for Section<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let n = self.len;
        match self.get_mut(i) {
            Some(v) => v,
            None => panic!("index {i} out of a section of {n}"),
        }
    }
}

impl<T> Default for Section<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Section<T> {
    fn clone(&self) -> Self {
        Section {
            chunks: self.chunks.clone(),
            starts: self.starts.clone(),
            len: self.len,
        }
    }
}

impl<T> From<Vec<T>> for Section<T> {
    fn from(v: Vec<T>) -> Self {
        let len = v.len();
        if len <= CHUNK {
            let (chunks, starts) = if len == 0 {
                (vec![], vec![])
            } else {
                (vec![Arc::new(v)], vec![0])
            };
            return Section {
                chunks,
                starts,
                len,
            };
        }
        let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK));
        let mut it = v.into_iter();
        loop {
            let c: Vec<T> = it.by_ref().take(CHUNK).collect();
            if c.is_empty() {
                break;
            }
            chunks.push(Arc::new(c));
        }
        let starts = (0..chunks.len()).map(|c| c * CHUNK).collect();
        Section {
            chunks,
            starts,
            len,
        }
    }
}

/// Chunk by chunk, never holding the entries twice.
impl<T> FromIterator<T> for Section<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut it = iter.into_iter();
        let mut s = Section::new();
        loop {
            let mut c = Vec::with_capacity(CHUNK);
            c.extend(it.by_ref().take(CHUNK));
            if c.is_empty() {
                return s;
            }
            s.starts.push(s.len);
            s.len += c.len();
            s.chunks.push(Arc::new(c));
        }
    }
}

impl<'a, T> IntoIterator for &'a Section<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Chunk by chunk where the two have their chunks at the same places (a copy that changed one
/// entry, or two lists built alike): a chunk the two share is equal without a look at its entries.
/// Entry by entry otherwise.
impl<T: PartialEq> PartialEq for Section<T> {
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        if self.starts != other.starts {
            return self.iter().eq(other.iter());
        }
        (self.chunks.iter().zip(&other.chunks)).all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
    }
}

impl<T: Eq> Eq for Section<T> {}

impl<T: PartialEq> PartialEq<Vec<T>> for Section<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        self.len == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Section<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Serialize> Serialize for Section<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_until_one_writes() {
        let a: Section<u32> = vec![1, 2, 3].into();
        let mut b = a.clone();
        assert!(a.same(&b));
        b.push(4);
        assert!(!a.same(&b));
        assert_eq!(a, vec![1, 2, 3]);
        assert_eq!(b, vec![1, 2, 3, 4]);
        let c = b.clone();
        assert_eq!(b, c);
        assert_ne!(a, b);
    }

    #[test]
    fn iter_from_starts_at_its_index_across_uneven_chunks() {
        let mut s: Section<u32> = (0..3 * CHUNK as u32).collect::<Vec<_>>().into();
        // Uneven chunks: one grown by insertions, one shrunk by removals.
        for _ in 0..10 {
            s.insert(CHUNK / 2, 9_999);
            s.remove(2 * CHUNK + 20);
        }
        let all: Vec<(usize, u32)> = s.iter().copied().enumerate().collect();
        for start in [
            0,
            1,
            CHUNK / 2,
            CHUNK + 9,
            CHUNK + 10,
            2 * CHUNK,
            s.len() - 1,
        ] {
            let from: Vec<(usize, u32)> = s.iter_from(start).map(|(i, &x)| (i, x)).collect();
            assert_eq!(from, all[start..], "from {start}");
        }
        assert_eq!(s.iter_from(s.len()).count(), 0);
        assert_eq!(s.iter_from(s.len() + 5).count(), 0);
        assert_eq!(Section::<u32>::new().iter_from(0).count(), 0);
    }

    #[test]
    fn find_mut_copies_only_the_chunk_it_writes() {
        let a: Section<u32> = (0..10 * CHUNK as u32).collect::<Vec<_>>().into();
        let mut b = a.clone();
        *b.find_mut(|&x| x == 5 * CHUNK as u32 + 3).unwrap() = 7;
        assert!(b.find_mut(|&x| x == u32::MAX).is_none());
        let shared = a
            .chunks
            .iter()
            .zip(&b.chunks)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert_eq!(shared, 9, "one chunk copied");
        assert_eq!(b.get(5 * CHUNK + 3), Some(&7));
        assert_eq!(a.get(5 * CHUNK + 3), Some(&(5 * CHUNK as u32 + 3)));
    }

    #[test]
    fn equality_is_by_entries_whatever_is_shared() {
        let a: Section<u32> = (0..3 * CHUNK as u32 + 5).collect::<Vec<_>>().into();
        let mut b = a.clone();
        assert_eq!(a, b);
        b[CHUNK + 1] = 0;
        assert_ne!(a, b);
        b[CHUNK + 1] = CHUNK as u32 + 1;
        assert_eq!(a, b, "equal again, though a chunk is no longer shared");
        let c: Section<u32> = (0..3 * CHUNK as u32 + 5).collect::<Vec<_>>().into();
        assert_eq!(a, c, "built apart");
        b.push(9);
        assert_ne!(a, b);
        assert_ne!(b, a);
    }

    #[test]
    fn a_copy_shares_the_chunks_before_its_first_change() {
        let a: Section<u32> = (0..10 * CHUNK as u32).collect::<Vec<_>>().into();
        let mut b = a.clone();
        assert_eq!(a.shared_prefix(&b), a.len());
        b[4 * CHUNK + 9] = 1;
        assert_eq!(a.shared_prefix(&b), 4 * CHUNK);
        assert_eq!(b.find_from(4 * CHUNK, |&x| x == 1), Some(&1));
        assert_eq!(b.find_from(4 * CHUNK + 10, |&x| x == 1), None);
        let mut c = a.clone();
        c.remove(7 * CHUNK + 3);
        assert_eq!(c.shared_prefix(&a), 7 * CHUNK);
        let d: Section<u32> = (0..3).collect::<Vec<_>>().into();
        assert_eq!(d.shared_prefix(&d.clone()), 3);
        assert_eq!(d.shared_prefix(&Section::new()), 0);
    }

    #[test]
    fn a_removal_or_an_insertion_copies_one_chunk() {
        let a: Section<u32> = (0..10 * CHUNK as u32).collect::<Vec<_>>().into();
        let mut b = a.clone();
        assert_eq!(b.remove(4 * CHUNK + 1), 4 * CHUNK as u32 + 1);
        let shared = |x: &Section<u32>, y: &Section<u32>| {
            x.chunks
                .iter()
                .filter(|c| y.chunks.iter().any(|d| Arc::ptr_eq(c, d)))
                .count()
        };
        assert_eq!(shared(&a, &b), 9, "one chunk copied");
        assert_eq!(b.len(), 10 * CHUNK - 1);
        assert_eq!(b[4 * CHUNK + 1], 4 * CHUNK as u32 + 2);
        assert_eq!(b[9 * CHUNK], 9 * CHUNK as u32 + 1);
        let mut c = b.clone();
        c.insert(7 * CHUNK, 5);
        assert_eq!(shared(&b, &c), 9, "one chunk copied");
        assert_eq!(c[7 * CHUNK], 5);
        assert_eq!(c[7 * CHUNK - 1], 7 * CHUNK as u32);
        assert_eq!(c.len(), 10 * CHUNK);
        let one = |r: std::ops::Range<usize>| vec![(r.start, r.end)];
        let ends = |v: Vec<std::ops::Range<usize>>| -> Vec<(usize, usize)> {
            v.into_iter().map(|r| (r.start, r.end)).collect()
        };
        assert_eq!(ends(c.unshared_with(&b)), one(7 * CHUNK - 1..8 * CHUNK));
        assert_eq!(ends(b.unshared_with(&a)), one(4 * CHUNK..5 * CHUNK - 1));
        assert!(a.unshared_with(&a.clone()).is_empty());
        let mut d = a.clone();
        d.retain(|&x| x != 3 && x != 8 * CHUNK as u32);
        assert_eq!(shared(&a, &d), 8, "two chunks copied");
        assert_eq!(d.len(), 10 * CHUNK - 2);
        assert_eq!(
            ends(d.unshared_with(&a)),
            [(0, CHUNK - 1), (8 * CHUNK - 1, 9 * CHUNK - 2)]
        );
    }

    proptest::proptest! {
        /// Any sequence of edits, each on a copy of the section before it, leaves every version
        /// reading as its own `Vec` would.
        #[test]
        fn edits_read_as_a_vec_would(
            n in 0usize..1200,
            ops in proptest::collection::vec((0u8..6, proptest::prelude::any::<proptest::sample::Index>(), 0u32..1000), 1..60),
        ) {
            let mut model: Vec<u32> = (0..n as u32).collect();
            let mut sec: Section<u32> = model.clone().into();
            let mut versions = vec![(sec.clone(), model.clone())];
            for (op, at, v) in ops {
                let len = model.len();
                match op {
                    0 => { model.push(v); sec.push(v); }
                    1 => { let i = at.index(len + 1); model.insert(i, v); sec.insert(i, v); }
                    2 if len > 0 => { let i = at.index(len); proptest::prop_assert_eq!(model.remove(i), sec.remove(i)); }
                    3 if len > 0 => { let i = at.index(len); model[i] = v; sec[i] = v; }
                    4 => { model.retain(|&x| x % 7 != v % 7); sec.retain(|&x| x % 7 != v % 7); }
                    _ => {
                        // Inserting many at one place splits the chunk.
                        let i = at.index(len + 1);
                        for k in 0..300 { model.insert(i, v + k); sec.insert(i, v + k); }
                    }
                }
                proptest::prop_assert_eq!(&sec, &model);
                versions.push((sec.clone(), model.clone()));
            }
            for (s, m) in &versions {
                proptest::prop_assert_eq!(s.len(), m.len());
                proptest::prop_assert!(s.iter().eq(m.iter()));
                for (i, x) in m.iter().enumerate() {
                    proptest::prop_assert_eq!(s.get(i), Some(x));
                    proptest::prop_assert_eq!(s.find_from(i, |_| true), Some(x));
                }
                proptest::prop_assert_eq!(s.get(m.len()), None);
                proptest::prop_assert_eq!(s.last(), m.last());
                let built: Section<u32> = m.clone().into();
                proptest::prop_assert_eq!(s, &built, "equal to one built whole");
                proptest::prop_assert_eq!(&built, s);
                proptest::prop_assert!(s.shared_prefix(&sec) <= s.len().min(sec.len()));
                for (x, y) in s.iter().zip(sec.iter()).take(s.shared_prefix(&sec)) {
                    proptest::prop_assert_eq!(x, y);
                }
            }
        }
    }

    #[test]
    fn serialises_as_a_list() {
        let a: Section<u32> = vec![7, 8].into();
        let js = serde_json::to_string(&a).unwrap();
        assert_eq!(js, "[7,8]");
        let back: Section<u32> = serde_json::from_str(&js).unwrap();
        assert_eq!(back, a);
    }
}

/// A tenant's name where a document refers to it (an endpoint's `tenant`): shared, so that copying
/// a list of a million endpoints copies no string. Reads, compares and serialises as a string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantName(Arc<str>);

impl TenantName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Hashes and compares as its string (what `Arc<str>`'s derived impls do), so maps keyed by it
/// are looked up by `&str`.
impl std::borrow::Borrow<str> for TenantName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TenantName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TenantName {
    fn from(s: &str) -> Self {
        TenantName(s.into())
    }
}

impl From<String> for TenantName {
    fn from(s: String) -> Self {
        TenantName(s.into())
    }
}

impl PartialEq<str> for TenantName {
    fn eq(&self, o: &str) -> bool {
        &*self.0 == o
    }
}

impl PartialEq<&str> for TenantName {
    fn eq(&self, o: &&str) -> bool {
        &*self.0 == *o
    }
}

impl PartialEq<String> for TenantName {
    fn eq(&self, o: &String) -> bool {
        &*self.0 == o.as_str()
    }
}

impl PartialEq<TenantName> for String {
    fn eq(&self, o: &TenantName) -> bool {
        self.as_str() == &*o.0
    }
}

impl Serialize for TenantName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(TenantName::from)
    }
}

/// A tenant's `vteps` list: shared between copies of the tenant list (a copy allocates nothing).
/// Reads as a slice, serialises as a list of addresses.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VtepList(Arc<[std::net::IpAddr]>);

impl std::ops::Deref for VtepList {
    type Target = [std::net::IpAddr];
    fn deref(&self) -> &[std::net::IpAddr] {
        &self.0
    }
}

impl std::fmt::Debug for VtepList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<Vec<std::net::IpAddr>> for VtepList {
    fn from(v: Vec<std::net::IpAddr>) -> Self {
        VtepList(v.into())
    }
}

impl FromIterator<std::net::IpAddr> for VtepList {
    fn from_iter<I: IntoIterator<Item = std::net::IpAddr>>(iter: I) -> Self {
        VtepList(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a VtepList {
    type Item = &'a std::net::IpAddr;
    type IntoIter = std::slice::Iter<'a, std::net::IpAddr>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for VtepList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for VtepList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<std::net::IpAddr>::deserialize(d).map(VtepList::from)
    }
}
