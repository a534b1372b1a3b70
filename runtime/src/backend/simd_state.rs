//! Keeps the x86-64 vector unit out of its "dirty upper state".
//!
//! tract's AVX2/AVX-512 kernels return without `vzeroupper`, leaving the upper
//! halves of the YMM/ZMM registers dirty. From then on, every switch between
//! legacy-SSE code (ours, built for baseline x86-64) and VEX code (glibc picks
//! `expf`'s FMA variant) pays a state transition. Measured on this project's Xeon:
//! `f32::exp` goes from 5 ns to 220 ns a call, and the YOLOv8 DFL softmax from 3 ms
//! to 90 ms. Clearing the state before each graph node and after a run costs one
//! instruction and keeps scalar code at its normal speed.

/// Clears the upper vector state if this CPU has AVX; does nothing elsewhere.
#[inline]
pub fn clear_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX is present (checked above); vzeroupper only zeroes the upper
        // halves of vector registers, which no live Rust value occupies across
        // this call.
        unsafe { zeroupper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zeroupper() {
    std::arch::x86_64::_mm256_zeroupper();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_a_dirty_state_leaves_values_intact() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX checked above; the asm writes only ymm15.
            unsafe { std::arch::asm!("vpcmpeqd ymm15, ymm15, ymm15", out("ymm15") _) };
        }
        let before: Vec<f32> = (0..64).map(|i| (i as f32 * 0.1).exp()).collect();
        clear_upper_state();
        clear_upper_state();
        let after: Vec<f32> = (0..64).map(|i| (i as f32 * 0.1).exp()).collect();
        assert_eq!(before, after);
        assert_eq!(1.0f32.exp(), std::f32::consts::E);
    }
}
