//! Fixed-length arrays for the big tables, on 2 MB pages where the host offers them: explicit huge
//! pages (`MAP_HUGETLB`) first, then transparent huge pages (`madvise(MADV_HUGEPAGE)`), silently
//! falling back to ordinary pages. Small arrays are plain vectors.

use std::ops::{Deref, Index};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

const HUGE: usize = 2 << 20;

/// Bytes currently mapped on explicit huge pages / with the transparent-huge-page hint, process-wide
/// (for `status` and the README's memory figures).
pub static HUGETLB_BYTES: AtomicU64 = AtomicU64::new(0);
pub static THP_BYTES: AtomicU64 = AtomicU64::new(0);

enum Store<T: Copy> {
    /// Owns the buffer `HugeBuf::ptr` points into.
    Vec(#[allow(dead_code)] Vec<T>),
    Map {
        ptr: NonNull<T>,
        bytes: usize,
        hugetlb: bool,
    },
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

fn map(bytes: usize) -> Option<(NonNull<u8>, bool)> {
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
            return NonNull::new(p as *mut u8).map(|p| (p, true));
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
        NonNull::new(p as *mut u8).map(|p| (p, false))
    }
}

impl<T: Copy> HugeBuf<T> {
    /// `len` copies of `v`.
    pub fn filled(len: usize, v: T) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        if bytes >= HUGE && std::mem::align_of::<T>() <= 4096 {
            if let Some((p, hugetlb)) = map(bytes) {
                let ptr = p.cast::<T>();
                for i in 0..len {
                    // SAFETY: the mapping holds at least `len` `T`s, page-aligned (so aligned for
                    // `T`), and is ours alone; writing initialises each element once.
                    unsafe { ptr.as_ptr().add(i).write(v) };
                }
                let mapped = bytes.div_ceil(HUGE) * HUGE;
                if hugetlb {
                    HUGETLB_BYTES.fetch_add(mapped as u64, Ordering::Relaxed);
                } else {
                    THP_BYTES.fetch_add(mapped as u64, Ordering::Relaxed);
                }
                return HugeBuf {
                    store: Store::Map {
                        ptr,
                        bytes: mapped,
                        hugetlb,
                    },
                    ptr: ptr.as_ptr(),
                    len,
                };
            }
        }
        Self::from_vec(vec![v; len])
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
        matches!(self.store, Store::Map { .. })
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

impl<T: Copy> Index<usize> for HugeBuf<T> {
    type Output = T;
    #[inline(always)]
    fn index(&self, i: usize) -> &T {
        &self.as_slice()[i]
    }
}

impl<T: Copy> Clone for HugeBuf<T> {
    fn clone(&self) -> Self {
        let s = self.as_slice();
        match s.first() {
            None => Self::from_vec(Vec::new()),
            Some(&first) => {
                let mut b = HugeBuf::filled(s.len(), first);
                b.as_mut_slice().copy_from_slice(s);
                b
            }
        }
    }
}

impl<T: Copy> Drop for HugeBuf<T> {
    fn drop(&mut self) {
        if let Store::Map {
            ptr,
            bytes,
            hugetlb,
            ..
        } = self.store
        {
            if hugetlb {
                HUGETLB_BYTES.fetch_sub(bytes as u64, Ordering::Relaxed);
            } else {
                THP_BYTES.fetch_sub(bytes as u64, Ordering::Relaxed);
            }
            // SAFETY: the mapping was made by `map` with this length and is unmapped once.
            unsafe {
                libc::munmap(ptr.as_ptr() as *mut libc::c_void, bytes);
            }
        }
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
}
