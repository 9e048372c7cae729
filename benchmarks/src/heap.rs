//! Live heap bytes, for telling a leak from allocator growth.
//!
//! RSS mixes what the program holds with what the allocator keeps (freed
//! pages not yet returned, fragmentation, transparent huge pages). With the
//! `heap-count` feature, `vigil-bench` wraps its allocator in [`Counting`],
//! which keeps the bytes allocated and not yet freed, and `soak` reports
//! them beside RSS. Off by default: every allocation then pays an atomic
//! add on one shared counter, which costs most when several threads
//! allocate at once (the `e2e` pipeline; the soak runs on one thread).
//!
//! ```text
//! cargo build --release -p vigil-bench --features heap-count
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicI64, Ordering};

/// Bytes allocated through [`Counting`] and not freed.
static LIVE: AtomicI64 = AtomicI64::new(0);

/// A global allocator that counts live bytes and leaves the work to `A`.
pub struct Counting<A>(pub A);

// SAFETY: every call is forwarded to `A` unchanged; the counter only reads
// the sizes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Live heap bytes, when this build counts them (the `heap-count` feature).
pub fn live_bytes() -> Option<u64> {
    cfg!(feature = "heap-count").then(|| LIVE.load(Ordering::Relaxed).max(0) as u64)
}
