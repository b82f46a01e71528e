//! Fixed-length arrays for the big tables, on 2 MB pages where the host offers them: explicit huge
//! pages (`MAP_HUGETLB`) first, then transparent huge pages (`madvise(MADV_HUGEPAGE)`), silently
//! falling back to ordinary pages. Small arrays are plain vectors. [`HugeBuf`] holds `Copy` values
//! filled in; [`ZeroedBuf`] holds values valid as zero bytes (atomics), untouched until written;
//! [`Appended`] is a growable array that versions of a table share, appending in place.

use std::alloc::Layout;
use std::ops::{Deref, DerefMut, Index, IndexMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const HUGE: usize = 2 << 20;

/// Bytes currently mapped on explicit huge pages / with the transparent-huge-page hint, process-wide
/// (for `status` and the README's memory figures).
pub static HUGETLB_BYTES: AtomicU64 = AtomicU64::new(0);
pub static THP_BYTES: AtomicU64 = AtomicU64::new(0);

enum Store<T: Copy> {
    /// Owns the buffer `HugeBuf::ptr` points into.
    Vec(#[allow(dead_code)] Vec<T>),
    /// Owns the mapping `HugeBuf::ptr` points into.
    Map(#[allow(dead_code)] Mapping),
}

/// A fixed-length array of `Copy` values.
pub struct HugeBuf<T: Copy> {
    store: Store<T>,
    /// The elements (of either store), cached so that indexing is one bounds check and a load.
    ptr: *mut T,
    len: usize,
}

// SAFETY: a `Map` store owns its mapping exclusively, like a `Vec` owns its heap block; `T: Send/Sync`
// carries over as it does for `Vec<T>`.
unsafe impl<T: Copy + Send> Send for HugeBuf<T> {}
// SAFETY: as above; shared access only reads.
unsafe impl<T: Copy + Sync> Sync for HugeBuf<T> {}

/// An anonymous mapping of whole 2 MB pages: explicit huge pages if the host has them, else
/// ordinary pages with the transparent-huge-page hint. Counted in [`HUGETLB_BYTES`] or
/// [`THP_BYTES`] while it lives; unmapped when dropped.
struct Mapping {
    ptr: NonNull<u8>,
    bytes: usize,
    hugetlb: bool,
}

impl Mapping {
    /// At least `bytes` zeroed bytes, page-aligned.
    fn new(bytes: usize) -> Option<Mapping> {
        let len = bytes.div_ceil(HUGE) * HUGE;
        // SAFETY: anonymous private mappings with no address hint; the result is checked.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                return NonNull::new(p as *mut u8).map(|p| Self::counted(p, len, true));
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return None;
            }
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
            NonNull::new(p as *mut u8).map(|p| Self::counted(p, len, false))
        }
    }

    fn counted(ptr: NonNull<u8>, bytes: usize, hugetlb: bool) -> Mapping {
        Self::counter(hugetlb).fetch_add(bytes as u64, Ordering::Relaxed);
        Mapping {
            ptr,
            bytes,
            hugetlb,
        }
    }

    fn counter(hugetlb: bool) -> &'static AtomicU64 {
        if hugetlb {
            &HUGETLB_BYTES
        } else {
            &THP_BYTES
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        Self::counter(self.hugetlb).fetch_sub(self.bytes as u64, Ordering::Relaxed);
        // SAFETY: the mapping was made by `Mapping::new` with this length and is unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.bytes);
        }
    }
}

// SAFETY: a mapping is plain memory owned by whoever holds it.
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` itself gives no access to the memory.
unsafe impl Sync for Mapping {}

/// Asks for transparent huge pages under the whole 2 MB pages of a buffer the caller already holds
/// (a growable vector too big for a [`HugeBuf`]'s fixed length): a hint that changes no byte, and is
/// silently ignored where the host offers none. Buffers below 4 MB are left alone.
pub fn advise<T>(buf: &[T]) {
    let start = buf.as_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if hi < lo + HUGE || end - start < 2 * HUGE {
        return;
    }
    // SAFETY: `[lo, hi)` lies within `buf`, memory this process owns and keeps mapped while the
    // caller holds it; MADV_HUGEPAGE only sets a hint on the range (its contents are unchanged).
    unsafe {
        libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
    }
}

impl<T: Copy> HugeBuf<T> {
    /// `len` copies of `v`.
    pub fn filled(len: usize, v: T) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        if bytes >= HUGE && std::mem::align_of::<T>() <= 4096 {
            if let Some(m) = Mapping::new(bytes) {
                let ptr = m.ptr.cast::<T>();
                for i in 0..len {
                    // SAFETY: the mapping holds at least `len` `T`s, page-aligned (so aligned for
                    // `T`), and is ours alone; writing initialises each element once.
                    unsafe { ptr.as_ptr().add(i).write(v) };
                }
                return HugeBuf {
                    store: Store::Map(m),
                    ptr: ptr.as_ptr(),
                    len,
                };
            }
        }
        Self::from_vec(vec![v; len])
    }

    /// A copy of `s`.
    pub fn from_slice(s: &[T]) -> Self {
        match s.first() {
            None => Self::from_vec(Vec::new()),
            Some(&first) => {
                let mut b = HugeBuf::filled(s.len(), first);
                b.as_mut_slice().copy_from_slice(s);
                b
            }
        }
    }

    fn from_vec(mut v: Vec<T>) -> Self {
        let (ptr, len) = (v.as_mut_ptr(), v.len());
        HugeBuf {
            store: Store::Vec(v),
            ptr,
            len,
        }
    }

    #[inline(always)]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialised `T`s owned by `store` (a vector's buffer, never
        // reallocated, or a mapping), which live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    #[inline(always)]
    pub fn as_ptr(&self) -> *const T {
        self.ptr
    }

    /// Element `i`, which the caller guarantees is in bounds (a masked index).
    ///
    /// # Safety
    /// `i < self.len()`.
    #[inline(always)]
    pub unsafe fn get_unchecked(&self, i: usize) -> &T {
        debug_assert!(i < self.len);
        // SAFETY: the caller guarantees `i < len`; see `as_slice`.
        unsafe { &*self.ptr.add(i) }
    }

    /// Whether this array sits on 2 MB pages (explicit or transparent).
    pub fn on_huge_pages(&self) -> bool {
        matches!(self.store, Store::Map(_))
    }
}

impl<T: Copy> std::fmt::Debug for HugeBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeBuf")
            .field("len", &self.len())
            .field("huge_pages", &self.on_huge_pages())
            .finish()
    }
}

impl<T: Copy> Deref for HugeBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy> DerefMut for HugeBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: Copy> Index<usize> for HugeBuf<T> {
    type Output = T;
    #[inline(always)]
    fn index(&self, i: usize) -> &T {
        &self.as_slice()[i]
    }
}

impl<T: Copy> IndexMut<usize> for HugeBuf<T> {
    #[inline(always)]
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.as_mut_slice()[i]
    }
}

impl<T: Copy> Clone for HugeBuf<T> {
    fn clone(&self) -> Self {
        Self::from_slice(self.as_slice())
    }
}

/// A fixed-length array of values whose all-zero bytes are a valid value (atomic integers): a table
/// shared between threads. Big ones are mapped as [`HugeBuf`]'s are; either way the memory starts
/// zeroed, and (but on explicit huge pages) a page costs no memory until something is written to it.
pub struct ZeroedBuf<T> {
    ptr: NonNull<T>,
    len: usize,
    /// The mapping `ptr` points into; `None`: from the global allocator.
    map: Option<Mapping>,
}

// SAFETY: the buffer is owned exclusively, as a `Box<[T]>` owns its elements; `Send`/`Sync` carry
// over from `T` as they do for `Box<[T]>`.
unsafe impl<T: Send> Send for ZeroedBuf<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for ZeroedBuf<T> {}

impl<T> ZeroedBuf<T> {
    /// `len` zeroed values.
    ///
    /// # Safety
    /// The all-zero bit pattern must be a valid `T`.
    pub unsafe fn new(len: usize) -> Self {
        let layout = Layout::array::<T>(len.max(1)).expect("table size fits memory");
        if layout.size() >= HUGE && layout.align() <= 4096 {
            if let Some(m) = Mapping::new(layout.size()) {
                return ZeroedBuf {
                    ptr: m.ptr.cast(),
                    len,
                    map: Some(m),
                };
            }
        }
        // A zero-sized `T` needs no memory (and `alloc_zeroed` must not be given a size of 0).
        let p = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: `layout` has a non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            match NonNull::new(p) {
                Some(p) => p.cast(),
                None => std::alloc::handle_alloc_error(layout),
            }
        };
        ZeroedBuf {
            ptr: p,
            len,
            map: None,
        }
    }

    /// Whether this array sits on 2 MB pages (explicit or transparent).
    pub fn on_huge_pages(&self) -> bool {
        self.map.is_some()
    }
}

impl<T> Deref for ZeroedBuf<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` values, zeroed (valid by `new`'s contract) or written since,
        // owned by `self` and alive as long as it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for ZeroedBuf<T> {
    fn drop(&mut self) {
        // SAFETY: the values are valid and dropped once, here.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ))
        };
        // A mapping unmaps itself when `map` is dropped, after this.
        if self.map.is_none() {
            let layout = Layout::array::<T>(self.len.max(1)).expect("as allocated");
            if layout.size() > 0 {
                // SAFETY: allocated in `new` by the global allocator with this same layout.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), layout) };
            }
        }
    }
}

impl<T> std::fmt::Debug for ZeroedBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroedBuf")
            .field("len", &self.len)
            .field("huge_pages", &self.on_huge_pages())
            .finish()
    }
}

/// A fixed-capacity buffer that versions of a table share and extend: each version reads its own
/// prefix of it (an [`Appended`]), and a version appends past its prefix only while that prefix is
/// everything written so far, so no value a version can read is ever written again. Allocated as a
/// [`ZeroedBuf`] (mapped when big, costing no memory past what has been written). Shared between
/// threads as that buffer is, with one addition: `append_at` writes through `&self`, only under
/// `tip`'s lock and only past the tip, where no thread reads.
struct AppendBuf<T: Copy> {
    buf: ZeroedBuf<std::mem::MaybeUninit<T>>,
    /// Values written: every prefix handed out is at most this long.
    tip: std::sync::Mutex<usize>,
}

impl<T: Copy> AppendBuf<T> {
    fn with_capacity(cap: usize) -> Self {
        AppendBuf {
            // SAFETY: any bytes, zero ones too, are a valid `MaybeUninit`.
            buf: unsafe { ZeroedBuf::new(cap) },
            tip: std::sync::Mutex::new(0),
        }
    }

    fn cap(&self) -> usize {
        self.buf.len
    }

    /// The first value (written or not); never turned into a reference past the tip.
    fn ptr(&self) -> *mut T {
        self.buf.ptr.as_ptr().cast()
    }

    /// Writes `v` at `at` if `at` is the end of what is written and `v` fits; `false` otherwise.
    fn append_at(&self, at: usize, v: &[T]) -> bool {
        let mut tip = self.tip.lock().unwrap_or_else(|e| e.into_inner());
        if *tip != at || v.len() > self.cap() - at {
            return false;
        }
        // SAFETY: `[at, at + v.len())` lies within the buffer, past every prefix handed out (all
        // end at or before `tip` = `at`), so nothing reads it; the lock makes this the only writer;
        // the pointer is the allocation's own (`ZeroedBuf::ptr`), not one from a reference.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr().add(at), v.len()) };
        *tip += v.len();
        true
    }
}

/// A growable array that versions share: a clone is a reference count, and appending to a clone
/// writes in place — into room the buffer kept — unless another clone has appended first or the
/// room is used up; then this one moves to a buffer of its own (a copy, with room to double). Reads
/// like a slice. The rule arena: a one-rule change appends a bucket without copying the rules.
#[derive(Clone)]
pub struct Appended<T: Copy> {
    buf: Arc<AppendBuf<T>>,
    /// `buf`'s values, cached so that reading is one load, as for a `Vec`.
    ptr: *const T,
    len: usize,
}

// SAFETY: `ptr` points into `buf`, which this value keeps alive; it is read-only through it (see
// `as_slice`), so `Appended` is as thread-safe as the `Arc<AppendBuf<T>>` it holds.
unsafe impl<T: Copy + Send + Sync> Send for Appended<T> {}
// SAFETY: as above.
unsafe impl<T: Copy + Send + Sync> Sync for Appended<T> {}

impl<T: Copy> Appended<T> {
    /// Empty, with room for `cap` values.
    pub fn with_capacity(cap: usize) -> Self {
        let buf = Arc::new(AppendBuf::with_capacity(cap));
        Appended {
            ptr: buf.ptr(),
            buf,
            len: 0,
        }
    }

    /// Appends `v`: in place when this is the longest version of its buffer and `v` fits, into a
    /// new buffer otherwise.
    pub fn extend_from_slice(&mut self, v: &[T]) {
        if v.is_empty() {
            return;
        }
        if !self.buf.append_at(self.len, v) {
            let need = self.len + v.len();
            let mut moved = Appended::with_capacity(2 * need + 64);
            let copied =
                moved.buf.append_at(0, self.as_slice()) && moved.buf.append_at(self.len, v);
            debug_assert!(copied, "a new buffer has room for what it is made for");
            moved.len = need;
            *self = moved;
            return;
        }
        self.len += v.len();
    }

    /// Room left in place before an append moves to a new buffer (when no other version has
    /// appended).
    #[cfg(test)]
    fn room(&self) -> usize {
        self.buf.cap() - self.len
    }

    /// Whether this and `other` are versions of one buffer.
    #[cfg(test)]
    fn shares_buffer_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    #[inline(always)]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the first `len` values were written before this prefix existed (`append_at`
        // succeeded for all of them, ordered before any thread that got this value through an
        // `Arc` or a channel) and are never written again; the buffer lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Copy> Default for Appended<T> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<T: Copy> Deref for Appended<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for Appended<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended")
            .field("len", &self.len)
            .field("cap", &self.buf.cap())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_and_small_arrays_hold_their_values() {
        for n in [0usize, 10, 3 << 20] {
            let mut b = HugeBuf::filled(n, 7u32);
            assert_eq!(b.len(), n);
            assert!(b.iter().all(|&x| x == 7));
            if n > 0 {
                b.as_mut_slice()[n - 1] = 9;
                let c = b.clone();
                assert_eq!(c[n - 1], 9);
                assert_eq!(c.on_huge_pages(), n * 4 >= HUGE);
            }
        }
    }

    #[test]
    fn advice_changes_no_byte_of_any_buffer() {
        let v: Vec<u64> = (0..(5 << 20) / 8).map(|i| i * 7 + 1).collect();
        for s in [&v[..], &v[1..], &v[..0], &v[3..9], &v[..HUGE / 8 + 1]] {
            advise(s);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 7 + 1));
        let mut w: Vec<u32> = Vec::with_capacity(3 << 20);
        advise(w.spare_capacity_mut());
        w.resize(3 << 20, 5);
        assert!(w.iter().all(|&x| x == 5));
    }

    #[test]
    fn zeroed_arrays_start_zero_and_keep_what_is_written() {
        for n in [0usize, 1, 1000, (4 << 20) / 8 + 3] {
            // SAFETY: zero is a valid `AtomicU64`.
            let b = unsafe { ZeroedBuf::<AtomicU64>::new(n) };
            assert_eq!(b.len(), n);
            assert!(b.iter().all(|x| x.load(Ordering::Relaxed) == 0));
            if n > 0 {
                b[n - 1].store(9, Ordering::Relaxed);
                b[0].fetch_add(2, Ordering::Relaxed);
                assert_eq!(
                    b[n - 1].load(Ordering::Relaxed),
                    if n == 1 { 11 } else { 9 }
                );
                assert_eq!(b.on_huge_pages(), n * 8 >= HUGE);
            }
        }
    }

    /// Versions of one buffer: the one that is everything written appends in place; an older one
    /// (or one that outgrows the room) moves to a copy; no version ever sees another's values.
    #[test]
    fn appended_versions_append_in_place_and_never_see_each_other() {
        let mut a: Appended<u32> = Appended::with_capacity(8);
        a.extend_from_slice(&[1, 2, 3]);
        let old = a.clone();
        a.extend_from_slice(&[4]);
        assert!(a.shares_buffer_with(&old));
        assert_eq!((&*old, &*a), (&[1, 2, 3][..], &[1, 2, 3, 4][..]));
        // `old` is no longer the buffer's end: appending moves it to a copy.
        let mut branch = old.clone();
        branch.extend_from_slice(&[9, 9]);
        assert!(!branch.shares_buffer_with(&a));
        assert_eq!(&*branch, &[1, 2, 3, 9, 9][..]);
        assert_eq!(&*a, &[1, 2, 3, 4][..]);
        // Out of room: a copy with room to double.
        a.extend_from_slice(&[5, 6, 7, 8]);
        assert!(a.shares_buffer_with(&old));
        assert_eq!(a.room(), 0);
        a.extend_from_slice(&[10]);
        assert!(!a.shares_buffer_with(&old));
        assert_eq!(&*a, &[1, 2, 3, 4, 5, 6, 7, 8, 10][..]);
        assert_eq!(&*old, &[1, 2, 3][..]);
        // Big buffers are mapped, and still append in place.
        let mut big: Appended<u64> = Appended::with_capacity(1 << 20);
        let chunk: Vec<u64> = (0..1000).collect();
        for _ in 0..100 {
            let before = big.clone();
            big.extend_from_slice(&chunk);
            assert!(big.shares_buffer_with(&before));
        }
        assert_eq!(big.len(), 100_000);
        assert_eq!(big[99_999], 999);
    }
}
