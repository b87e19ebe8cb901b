//! The hardware identity every result carries, peak FLOP/s for MFU, and peak memory.
//!
//! Results depend on the machine and the original records none of it. Here every record
//! names the CPU model, core count and SIMD level (and the GPU when there is one).
//!
//! MFU needs a peak. For GPUs: a table of known dense bf16/fp32 peaks. For CPUs:
//! `cores × clock × f32 lanes × 2 (a fused multiply-add is 2 FLOPs) × 2 (two FMA pipes)`,
//! with lanes 16 for AVX-512, 8 for AVX2+FMA, 4 otherwise, and the clock the highest the
//! kernel reports (cpufreq max, else /proc/cpuinfo). That is an upper bound: real CPUs
//! clock down under wide SIMD, and some (AMD Zen 4) run AVX-512 on 256-bit pipes, so CPU MFU
//! reads low. With AVX512-BF16 the bf16 peak is counted as twice the f32 one.

use serde::{Deserialize, Serialize};

/// What a result was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu_model: String,
    /// Logical CPUs available to this process.
    pub cpu_cores: usize,
    /// Highest clock the kernel reports, in MHz.
    pub cpu_mhz: Option<f64>,
    /// Relevant SIMD features, e.g. `["avx2", "fma", "avx512f", "avx512_bf16"]`.
    pub simd: Vec<String>,
    /// GPU name when training ran on one.
    pub gpu: Option<String>,
    pub os: String,
    pub memory_gb: Option<f64>,
}

const SIMD_FLAGS: [&str; 6] = ["fma", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "neon"];

impl Hardware {
    /// Reads the CPU identity from the OS; `gpu` is supplied by the caller that knows it.
    pub fn detect(gpu: Option<String>) -> Hardware {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let cpu_model = field("model name")
            .or_else(|| field("Model"))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let flags = field("flags").or_else(|| field("Features")).unwrap_or_default();
        let simd = SIMD_FLAGS
            .iter()
            .filter(|f| {
                flags.split_whitespace().any(|x| x == **f) || (**f == "neon" && flags.contains("asimd"))
            })
            .map(|f| f.to_string())
            .collect();
        let max_khz = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok());
        let cpu_mhz = max_khz.map(|k| k / 1000.0).or_else(|| field("cpu MHz").and_then(|s| s.parse().ok()));
        let memory_gb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
        });
        Hardware {
            cpu_model,
            cpu_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_mhz,
            simd,
            gpu,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            memory_gb,
        }
    }

    fn has(&self, flag: &str) -> bool {
        self.simd.iter().any(|f| f == flag)
    }

    /// Peak dense FLOP/s of the device training ran on, at `bf16` or f32 precision.
    pub fn peak_flops(&self, bf16: bool) -> f64 {
        if let Some(gpu) = &self.gpu {
            if let Some(peak) = gpu_peak_flops(gpu, bf16) {
                return peak;
            }
        }
        self.cpu_peak_flops(bf16)
    }

    /// The CPU estimate described in the module header.
    pub fn cpu_peak_flops(&self, bf16: bool) -> f64 {
        let lanes = if self.has("avx512f") {
            16.0
        } else if self.has("avx2") && self.has("fma") {
            8.0
        } else {
            4.0
        };
        let bf16_factor = if bf16 && self.has("avx512_bf16") { 2.0 } else { 1.0 };
        let hz = self.cpu_mhz.unwrap_or(2000.0) * 1e6;
        self.cpu_cores as f64 * hz * lanes * 2.0 * 2.0 * bf16_factor
    }
}

/// Dense peak FLOP/s of known GPUs (bf16 tensor cores, or f32 without them).
pub fn gpu_peak_flops(name: &str, bf16: bool) -> Option<f64> {
    // (substring of the device name, bf16 dense, fp32)
    const TABLE: &[(&str, f64, f64)] = &[
        ("H200", 989.5e12, 67e12),
        ("H100", 989.5e12, 67e12),
        ("GH200", 989.5e12, 67e12),
        ("B200", 2250e12, 80e12),
        ("A100", 312e12, 19.5e12),
        ("A10G", 70e12, 31.2e12),
        ("L40S", 362e12, 91.6e12),
        ("L4", 121e12, 30.3e12),
        ("RTX 4090", 165e12, 82.6e12),
        ("RTX 3090", 71e12, 35.6e12),
        ("V100", 125e12, 15.7e12),
        ("T4", 65e12, 8.1e12),
        ("MI300X", 1307e12, 163e12),
    ];
    let upper = name.to_uppercase();
    TABLE
        .iter()
        .find(|(key, _, _)| upper.contains(&key.to_uppercase()))
        .map(|&(_, b, f)| if bf16 { b } else { f })
}

/// Peak resident memory of this process so far, in MiB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cpu_peak_uses_cores_clock_and_lanes() {
        let hw = Hardware {
            cpu_model: "x".into(),
            cpu_cores: 2,
            cpu_mhz: Some(3000.0),
            simd: vec!["avx2".into(), "fma".into()],
            gpu: None,
            os: "linux".into(),
            memory_gb: None,
        };
        assert_eq!(hw.cpu_peak_flops(false), 2.0 * 3e9 * 8.0 * 4.0);
        assert_eq!(hw.peak_flops(true), hw.peak_flops(false), "no avx512_bf16: bf16 is no faster");
    }

    #[test]
    fn test_known_gpu_peaks() {
        assert_eq!(gpu_peak_flops("NVIDIA H100 80GB HBM3", true), Some(989.5e12));
        assert_eq!(gpu_peak_flops("llvmpipe (LLVM 15)", true), None);
    }

    #[test]
    fn test_detect_reports_this_machine() {
        let hw = Hardware::detect(None);
        assert!(hw.cpu_cores >= 1);
        assert!(!hw.cpu_model.is_empty());
        assert!(peak_rss_mb() > 0.0);
    }
}
