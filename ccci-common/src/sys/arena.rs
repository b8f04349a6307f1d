//! The tools' allocator: a bump arena in the binary's zeroed data, in front
//! of the system allocator.
//!
//! A tool's run is short and allocates little: parsing its arguments and
//! configuration, a few paths, a record. musl's allocator serves that with
//! a `mmap` and a `munmap` for nearly every size class it touches (about 50
//! system calls and as many page faults in a lock wrap); the arena serves
//! it from memory the kernel maps with the binary, with no system call at
//! all. It is what [`Arena::new`] makes, used as each tool's
//! `#[global_allocator]`.
//!
//! - **Bounded.** At most [`ARENA`] bytes are ever handed out from it; what
//!   does not fit goes to the system allocator, and so does everything
//!   after the arena is used up. Pages are only resident once touched.
//! - **Freed memory is reused only at the end.** Freeing (or shrinking)
//!   the newest block gives its bytes back; any other block stays until the
//!   process exits. Growing the newest block grows it in place, so a vector
//!   or string that grows as it is filled costs no copies. A long-running
//!   tool (a wrap that holds for hours) so leaks at most [`ARENA`] bytes,
//!   then runs on the system allocator.
//! - **Thread-safe without a lock.** The end of the used part is one atomic
//!   word, moved by compare-and-swap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The bytes the arena hands out before the system allocator takes over.
pub const ARENA: usize = 128 << 10;

/// A bump arena of [`ARENA`] bytes in front of [`System`].
pub struct Arena {
    used: AtomicUsize,
    bytes: UnsafeCell<[u8; ARENA]>,
}

// SAFETY: the bytes are only reached through blocks handed out by `alloc`,
// each to one owner (the compare-and-swap on `used` makes the ranges
// disjoint); `used` itself is atomic.
unsafe impl Sync for Arena {}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

impl Arena {
    /// An empty arena; all zero, so a `static` of it lies in `.bss`.
    pub const fn new() -> Arena {
        Arena {
            used: AtomicUsize::new(0),
            bytes: UnsafeCell::new([0; ARENA]),
        }
    }

    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    /// Whether `ptr` was handed out by the arena.
    fn owns(&self, ptr: *mut u8) -> bool {
        let p = ptr as usize;
        p >= self.base() && p < self.base() + ARENA
    }

    /// A block for `layout` from the arena, or null when it does not fit.
    fn bump(&self, layout: Layout) -> *mut u8 {
        let base = self.base();
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let start = (base + used).next_multiple_of(layout.align()) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= ARENA) else {
                return std::ptr::null_mut();
            };
            match self
                .used
                .compare_exchange_weak(used, end, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return (base + start) as *mut u8,
                Err(now) => used = now,
            }
        }
    }

    /// Moves the end of the used part from `from` to `to` if the block
    /// ending at `from` is still the newest.
    fn move_end(&self, from: usize, to: usize) -> bool {
        self.used
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

// SAFETY: every block is either the arena's (disjoint, aligned as asked,
// inside `bytes`, never handed out twice while live: bytes go back only by
// moving the end down over the newest block) or the system allocator's,
// told apart by address; each is freed and reallocated by the one that
// made it.
unsafe impl GlobalAlloc for Arena {
    // Not inlined: with LTO every allocation site of a tool would get its
    // own copy (about 10 % more code, and its page faults).
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = self.bump(layout);
        if p.is_null() {
            // SAFETY: the caller's layout, passed on as it is.
            unsafe { System.alloc(layout) }
        } else {
            p
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.owns(ptr) {
            let start = ptr as usize - self.base();
            // Only the newest block gives its bytes back; others stay.
            self.move_end(start + layout.size(), start);
        } else {
            // SAFETY: not ours, so System's, with the layout it was made with.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            // SAFETY: System's block, as the caller gave it.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let start = ptr as usize - self.base();
        let old_end = start + layout.size();
        if new_size <= layout.size() {
            // Shrinking: the newest block gives the rest back.
            self.move_end(old_end, start + new_size);
            return ptr;
        }
        if start + new_size <= ARENA && self.move_end(old_end, start + new_size) {
            return ptr; // the newest block, grown in place
        }
        // SAFETY: the caller guarantees that `new_size`, rounded up to the
        // alignment, does not overflow isize (GlobalAlloc::realloc).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block of `new_size` bytes; the old one holds
        // `layout.size()` initialised bytes, fewer than that, and the two
        // do not overlap (the old one is live until freed below).
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_the_newest_is_given_back() {
        let arena = Box::new(Arena::new());
        // SAFETY: blocks of the arena, used within their sizes and freed
        // with their layouts.
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(8, 8));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 3);
            b.write_bytes(0xaa, 8);
            arena.dealloc(b, layout(8, 8));
            let c = arena.alloc(layout(8, 8));
            assert_eq!(c, b, "the newest block's bytes were not given back");
            // Freeing an older block gives nothing back.
            arena.dealloc(a, layout(3, 1));
            let d = arena.alloc(layout(1, 1));
            assert!(d as usize >= c as usize + 8);
        }
    }

    #[test]
    fn the_newest_block_grows_in_place_and_others_move() {
        let arena = Box::new(Arena::new());
        // SAFETY: as above; every pointer read is inside its block.
        unsafe {
            let a = arena.alloc(layout(4, 1));
            a.copy_from(b"abcd".as_ptr(), 4);
            let grown = arena.realloc(a, layout(4, 1), 64);
            assert_eq!(grown, a, "the newest block moved");
            let b = arena.alloc(layout(4, 1));
            let moved = arena.realloc(grown, layout(64, 1), 128);
            assert_ne!(moved, grown);
            assert_eq!(std::slice::from_raw_parts(moved, 4), b"abcd");
            assert!(moved as usize > b as usize);
        }
    }

    #[test]
    fn what_does_not_fit_goes_to_the_system_allocator() {
        let arena = Box::new(Arena::new());
        // SAFETY: as above.
        unsafe {
            let big = arena.alloc(layout(ARENA + 1, 8));
            assert!(!big.is_null() && !arena.owns(big));
            big.write_bytes(1, ARENA + 1);
            let first = arena.alloc(layout(8, 8));
            let small = arena.alloc(layout(16, 8));
            assert!(arena.owns(first) && arena.owns(small));
            // Growing an arena block past the arena moves it out.
            let out = arena.realloc(small, layout(16, 8), ARENA);
            assert!(!arena.owns(out));
            arena.dealloc(out, layout(ARENA, 8));
            arena.dealloc(big, layout(ARENA + 1, 8));
        }
    }
}
