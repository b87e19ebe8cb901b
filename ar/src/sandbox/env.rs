//! The environment the training child starts with: an allowlist of `ar`'s own variables,
//! plus what the caller adds.
//!
//! A child that inherits everything inherits the user's session: `DBUS_SESSION_BUS_ADDRESS`
//! and `XDG_RUNTIME_DIR` point at daemons that run commands outside any sandbox,
//! `SSH_AUTH_SOCK` signs as the user, `DISPLAY` types into their terminals, and the openai
//! agent's `OPENAI_API_KEY` (or any `*_TOKEN`, `AWS_*`) is a credential. The sockets are
//! also refused by seccomp; the secrets are not, so they must not be there at all.
//! Allowlisting (rather than denying the known bad) keeps tomorrow's secret out too.
//!
//! Callers do `cmd.env_clear().envs(child_env(&[("TMPDIR", scratch.as_os_str())]))`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// Variables passed by exact name, and why the child may see each.
const NAMES: &[(&str, &str)] = &[
    ("PATH", "to find `sh` and the tools a train program may start"),
    ("HOME", "libraries derive cache and config paths from it (reads there follow the policy)"),
    ("USER", "the user name, for libraries that log it; not a secret"),
    ("LOGNAME", "the same, as POSIX spells it"),
    ("LANG", "the locale: messages and number formatting in the run log"),
    ("LANGUAGE", "the message language list of gettext"),
    ("TZ", "timestamps in the run log in the user's time zone"),
    ("TERM", "whether progress output may use colours"),
    ("RUST_BACKTRACE", "a panic in the train program prints a backtrace into the run log"),
    ("RUST_LIB_BACKTRACE", "the same for anyhow/std errors"),
    ("RAYON_NUM_THREADS", "the thread count the user chose to share the cores"),
    ("OMP_NUM_THREADS", "the same for OpenMP in BLAS or GPU libraries"),
    ("VK_ICD_FILENAMES", "which Vulkan driver wgpu uses (a GPU, or lavapipe on the CPU)"),
    ("KERNELS_ISA", "the kernels crate's instruction-set override, part of the benchmark setup"),
];

/// Variables passed by prefix, and why.
const PREFIXES: &[(&str, &str)] = &[
    ("LC_", "the locale categories (LC_ALL, LC_NUMERIC, …)"),
    ("CUDA_", "device selection (CUDA_VISIBLE_DEVICES) and the toolkit path (CUDA_PATH) for nvrtc"),
    ("NVIDIA_", "the container runtime's device and capability selection"),
    ("WGPU_", "wgpu's backend and adapter selection"),
    ("AR_", "ar's own settings for the train program (AR_SEED_OFFSET, AR_DEVICE, AR_PROFILE, …)"),
];

/// Whether the child may inherit the variable `name` from `ar`. Names that are not UTF-8
/// are not on the list.
fn allowed(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    NAMES.iter().any(|(allowed, _)| *allowed == name)
        || PREFIXES.iter().any(|(prefix, _)| name.starts_with(prefix) && name.len() > prefix.len())
}

/// `ar`'s environment filtered through the allowlist, then `extra` (which wins on a clash
/// and is not filtered: the caller chooses it, e.g. `TMPDIR` pointing at the scratch
/// directory). Sorted by name, so a journal of it is stable.
pub fn child_env(extra: &[(&str, &OsStr)]) -> Vec<(OsString, OsString)> {
    filter(std::env::vars_os(), extra)
}

fn filter(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(&str, &OsStr)],
) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = vars.into_iter().filter(|(name, _)| allowed(name)).collect();
    for (name, value) in extra {
        env.insert(OsString::from(name), value.to_os_string());
    }
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    #[test]
    fn test_allowlist_keeps_the_run_settings_and_drops_the_session_and_secrets() {
        let parent = vars(&[
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/u"),
            ("LC_ALL", "C.UTF-8"),
            ("CUDA_VISIBLE_DEVICES", "0"),
            ("AR_SEED_OFFSET", "3"),
            ("WGPU_BACKEND", "vulkan"),
            ("OPENAI_API_KEY", "sk-secret"),
            ("GITHUB_TOKEN", "ghp-secret"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("SSH_AUTH_SOCK", "/tmp/ssh-agent"),
            ("DISPLAY", ":0"),
            ("WAYLAND_DISPLAY", "wayland-0"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            // A bare prefix is not a variable of that family.
            ("AR_", "x"),
            ("PATHX", "/nope"),
        ]);
        let tmp = OsString::from("/scratch");
        let got = filter(parent, &[("TMPDIR", &tmp), ("AR_SEED_OFFSET", OsStr::new("4"))]);
        let names: Vec<&str> = got.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(
            names,
            ["AR_SEED_OFFSET", "CUDA_VISIBLE_DEVICES", "HOME", "LC_ALL", "PATH", "TMPDIR", "WGPU_BACKEND"]
        );
        let seed = got.iter().find(|(k, _)| k == "AR_SEED_OFFSET").unwrap();
        assert_eq!(seed.1, "4", "the caller's value wins");
    }

    #[cfg(unix)]
    #[test]
    fn test_non_utf8_names_are_dropped() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(b"AR_\xff".to_vec());
        assert!(!allowed(&odd));
        assert!(filter(vec![(odd, OsString::from("v"))], &[]).is_empty());
    }
}
