//! Whether libjpeg-turbo (vendored as mozjpeg) runs its SIMD kernels, asked of the library itself.
//!
//! On x86 the kernels are assembly that only `nasm` builds; mozjpeg-sys's build script silently
//! falls back to the plain C ones when `nasm` is missing (one build-script warning nobody sees),
//! and every JPEG decode and encode is then markedly slower. This module lets the service tell at
//! run time. It must not change what libjpeg-turbo does, only ask.

use std::ffi::c_int;

// libjpeg-turbo's own dispatch queries, the ones its decoder and encoder consult before each
// kernel. mozjpeg-sys links exactly one definition of each: `simd/<arch>/jsimd.c` when it built
// the SIMD kernels (true when the CPU supports them), or `jsimd_none.c` (always 0) when it did
// not. Both are exported C functions without arguments and with no state but a per-thread cache
// of the CPU's features (cpuid), so they are safe to call from any thread at any time.
extern "C" {
    fn jsimd_can_idct_islow() -> c_int;
    fn jsimd_can_ycc_rgb() -> c_int;
}

/// True when libjpeg-turbo's SIMD kernels are in use: the build included them (on x86 and x86-64
/// that needs `nasm` when mozjpeg-sys is built) and this CPU supports them. Asked of the linked
/// library, so it is the fact, not a guess from the build environment.
///
/// False means the JPEG path runs plain C kernels: results are correct, but decoding and encoding
/// are markedly slower. The usual cause is a build on a machine without `nasm`; installing it is
/// not enough, because cargo keeps the built library: `cargo clean -p mozjpeg-sys` and rebuild.
///
/// Two kernels are asked, the inverse DCT and the YCbCr→RGB conversion that every decode runs.
pub fn jpeg_simd() -> bool {
    // SAFETY: both are argument-less C functions of the statically linked libjpeg-turbo (see
    // above); they only read the CPU's features and constant-table alignment.
    unsafe { jsimd_can_idct_islow() != 0 && jsimd_can_ycc_rgb() != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nasm` is runnable and not the outdated 0.x, the same test mozjpeg-sys's build script makes.
    fn nasm_usable() -> bool {
        std::process::Command::new("nasm")
            .arg("-v")
            .output()
            .is_ok_and(|out| !String::from_utf8_lossy(&out.stdout).contains("NASM version 0."))
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    fn jpeg_simd_is_on_exactly_when_nasm_is_installed() {
        if nasm_usable() {
            assert!(
                jpeg_simd(),
                "nasm is installed, but libjpeg-turbo runs its plain C kernels: mozjpeg-sys was built \
                 before nasm was installed (cargo does not look again); `cargo clean -p mozjpeg-sys` \
                 and rebuild"
            );
        } else {
            assert!(
                !jpeg_simd(),
                "nasm is not installed, yet libjpeg-turbo reports SIMD kernels: this build was made \
                 elsewhere, or mozjpeg-sys no longer needs nasm and this test should say so"
            );
        }
    }

    #[test]
    fn jpeg_simd_is_the_same_on_every_thread() {
        // The C side caches the CPU's features per thread; each thread must reach the same answer.
        let here = jpeg_simd();
        let there = std::thread::spawn(jpeg_simd).join().expect("jpeg_simd does not panic");
        assert_eq!(here, there);
    }
}
