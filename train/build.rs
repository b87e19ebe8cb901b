//! Build script of the train crate (fixed; the agent may not change it): hashes
//! `src/main.rs` and hands the digest to the program as `AR_TRAIN_SHA256`, so every result
//! record names the exact train file it came from and `ar` can check it against the commit
//! it built. On Linux the same digest becomes the binary's GNU build-id, so `ar` can tell
//! which train file a binary was built from without running it, whatever main.rs contains.

use sha2::{Digest, Sha256};

fn main() {
    println!("cargo:rerun-if-changed=src/main.rs");
    let source = std::fs::read("src/main.rs").expect("train/src/main.rs is readable");
    let digest = Sha256::digest(&source);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=AR_TRAIN_SHA256={hex}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,--build-id=0x{hex}");
    }
}
