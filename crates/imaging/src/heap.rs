//! glibc's heap, set for a process that converts one image after another.

/// Call once at start, before the first conversion: allocations under 32 MiB come from the heap
/// and up to 64 MiB of free heap top is kept, which is where glibc's own sliding thresholds end
/// up after the first image whose buffer is over 32 MiB. Until then they follow the largest
/// buffer freed so far, and with photos of a few megapixels libjpeg's coefficient buffers for a
/// progressive file were handed back to the kernel and faulted in again for every image: 4x the
/// page faults and none of the YCbCr path's gain in CPU per photo (docs/benchmarks.md). Images
/// whose buffers are larger than 32 MiB still get their own mappings, returned when freed.
pub fn keep_heap_between_images() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two of glibc's tunables; any value is valid for both.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
