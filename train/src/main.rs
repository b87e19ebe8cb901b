//! FILE 2 — the train program (placeholder until the train program lands). The agent edits
//! only this file; it imports everything fixed from `prepare`.

fn main() {
    let profile = prepare::Profile::active().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    println!("train: profile {} (the train program has not landed yet)", profile.name);
}
