//! Confinement, tried as a misbehaving agent would, through the real binary on the smoke
//! profile:
//! - a train file that leaves a process behind, tries `setsid`, connects to a unix socket
//!   the test listens on, looks for an API key in its environment and chmods a file in
//!   `target/`: the socket, the key and the chmod are refused, the leftover process is
//!   killed and reported in the journal;
//! - a train file that makes a FIFO and sleeps forever: the timeout still fires on time;
//! - a train file that leaves its statistics as a symlink to a file outside: `ar` refuses to
//!   follow it, and the outside file is untouched;
//! - `include_bytes!` of a val shard: rejected before anything is built;
//! - a confined `cmd:` agent that tries to write the journal, read a val shard, write
//!   outside and edit `prepare/` (all refused) while it can still edit the train file (the
//!   experiment runs);
//! - an unconfined agent whose turn edits only `prepare/`: rejected, journaled and rolled
//!   back in that turn; its next, valid turn runs;
//! - `ar sandbox -- sh -c …`: the same refusals, and `ar status` inside is answered by the
//!   supervisor outside.

mod support;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use support::fixture::{Fixture, events, fixture, text};

fn with_baseline(fx: &Fixture, tag: &str) {
    with_baseline_timeout(fx, tag, "120");
}

/// The timeout is fixed when the session is created, by its first call.
fn with_baseline_timeout(fx: &Fixture, tag: &str, timeout: &str) {
    fx.start_branch(tag);
    let out = fx.ar(&["experiment", "-m", "baseline", "--baseline-runs", "1", "--timeout", timeout]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The `finished` event of the session's last candidate (its own first run: later runs may
/// be its further pairs or the incumbent's measurements).
fn last_finished(fx: &Fixture, tag: &str) -> serde_json::Value {
    let journal = fx.journal(tag);
    let id = events(&journal, "started")
        .into_iter()
        .filter(|e| e["kind"] == "candidate" || e["kind"] == "baseline")
        .last()
        .map(|e| e["id"].clone())
        .expect("a started run");
    events(&journal, "finished").into_iter().find(|f| f["id"] == id).cloned().expect("it finished")
}

fn run_log(fx: &Fixture, tag: &str) -> String {
    let run = last_finished(fx, tag);
    let dir = fx.repo.join(".autoresearch").join(tag).join("runs").join(run["run"].as_str().unwrap());
    std::fs::read_to_string(dir.join("train.log")).unwrap_or_default()
}

/// Processes whose command line contains `needle`.
fn alive(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push(format!("{:?}: {cmdline}", entry.file_name()));
        }
    }
    out
}

#[test]
fn test_a_misbehaving_train_file_is_refused_and_its_leftovers_are_killed_and_reported() {
    let fx = fixture();
    with_baseline(&fx, "misbehave");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("daemon.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let victim = fx.target.join("release").join("chmod-victim");
    std::fs::write(&victim, "x").unwrap();
    fx.edit_train(
        "fn train() -> prepare::Result<()> {\n",
        &format!(
            "fn train() -> prepare::Result<()> {{\n\
             let connected = std::os::unix::net::UnixStream::connect({sock:?}).is_ok();\n\
             println!(\"unix connect: {{connected}}\");\n\
             println!(\"api key visible: {{}}\", std::env::var(\"OPENAI_API_KEY\").is_ok());\n\
             let chmod = std::process::Command::new(\"chmod\").args([\"000\", {victim:?}]).status().map_or(false, |s| s.success());\n\
             println!(\"chmod target: {{chmod}}\");\n\
             let setsid = std::process::Command::new(\"setsid\").args([\"-f\", \"sleep\", \"3011\"]).status().map_or(false, |s| s.success());\n\
             println!(\"setsid: {{setsid}}\");\n\
             let _orphan = std::process::Command::new(\"sleep\").arg(\"3012\").spawn();\n"
        ),
    );
    let out = fx.ar_env(
        &["experiment", "-m", "misbehave", "--timeout", "120"],
        &[("OPENAI_API_KEY", "sk-test-secret"), ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/x")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let log = run_log(&fx, "misbehave");
    assert!(log.contains("unix connect: false"), "{log}");
    assert!(listener.accept().is_err(), "nothing reached the listener");
    assert!(log.contains("api key visible: false"), "{log}");
    assert!(log.contains("chmod target: false"), "{log}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x");
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0);
    assert!(log.contains("setsid failed: Operation not permitted"), "{log}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive("sleep 3011").is_empty() && alive("sleep 3012").is_empty(), "{:?}", alive("sleep 301"));
    let run = last_finished(&fx, "misbehave");
    let leaked = run["leaked"].as_array().expect("the leftover is reported");
    assert!(leaked.iter().any(|l| l.as_str().unwrap().contains("sleep")), "{run}");
    assert!(text(&out).contains("outlived run"), "the terminal says so too: {}", text(&out));
}

#[test]
fn test_a_fifo_and_a_sleep_do_not_stop_the_timeout() {
    let fx = fixture();
    with_baseline_timeout(&fx, "fifo", "20");
    fx.edit_train(
        "fn train() -> prepare::Result<()> {\n",
        "fn train() -> prepare::Result<()> {\n\
         let _ = std::process::Command::new(\"mkfifo\").arg(\"train.log\").status();\n\
         let _ = std::process::Command::new(\"mkfifo\").arg(\"../train.log.fifo\").status();\n\
         let _ = std::fs::remove_file(\"../train.log\");\n\
         std::thread::sleep(std::time::Duration::from_secs(600));\n",
    );
    let t = Instant::now();
    let out = fx.ar(&["experiment", "-m", "fifo"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(120), "the timeout fired on time: {:?}", t.elapsed());
    let dir =
        fx.repo.join(".autoresearch/fifo/runs").join(last_finished(&fx, "fifo")["run"].as_str().unwrap());
    assert!(dir.join("train.log").is_file(), "the log ar created is still there");
    assert!(!dir.join("train.log.fifo").exists(), "nothing was created beside it");
}

#[test]
fn test_statistics_left_as_a_symlink_are_not_followed() {
    let fx = fixture();
    with_baseline(&fx, "symlink");
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious.json");
    std::fs::write(&target, "precious").unwrap();
    fx.edit_train(
        "    prepare::finish_training(\n",
        &format!(
            "    let _ = std::os::unix::fs::symlink({target:?}, \"stats.json\");\n\
             let _ = std::os::unix::fs::symlink({target:?}, \"model.ckpt\");\n\
             if std::env::var(\"NEVER\").is_ok() {{\n    prepare::finish_training(\n"
        ),
    );
    fx.edit_train("        &checkpoint,\n    )\n}", "        &checkpoint,\n    )?;\n    }\n    Ok(())\n}");
    let out = fx.ar(&["experiment", "-m", "symlinked statistics", "--timeout", "120"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("symlink"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
}

#[test]
fn test_include_bytes_of_a_val_shard_is_rejected_before_the_build() {
    let fx = fixture();
    with_baseline(&fx, "include");
    let shard = std::fs::read_dir(fx.cache.join("smoke/data"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("val"))
        .expect("a val shard");
    fx.edit_train(
        "fn train() -> prepare::Result<()> {\n",
        &format!("const ANSWERS: &[u8] = include_bytes!({shard:?});\nfn train() -> prepare::Result<()> {{\n    println!(\"{{}}\", ANSWERS.len());\n"),
    );
    let t = Instant::now();
    let out = fx.ar(&["experiment", "-m", "compile the answers in", "--timeout", "120"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("crash (build)") && text(&out).contains("include_bytes"), "{}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(30), "rejected without a build");
}

/// Runs `ar loop` with a `cmd:` agent script (kept outside the repository).
fn loop_with_script(
    fx: &Fixture,
    tag: &str,
    script: &str,
    turns: &str,
    extra: &[&str],
) -> std::process::Output {
    let scripts = tempfile::tempdir().unwrap();
    let path = scripts.path().join("agent.sh");
    // The script keeps its turn counter beside itself ($STATE).
    let script = script.replace("$TMPDIR/ar-turn", &scripts.path().join("turn").display().to_string());
    std::fs::write(&path, script).unwrap();
    let agent = format!("cmd:sh {}", path.display());
    let mut args = vec![
        "loop",
        "--tag",
        tag,
        "--agent",
        &agent,
        "--max-experiments",
        turns,
        "--baseline-runs",
        "1",
        "--timeout",
        "120",
        "--agent-retries",
        "0",
    ];
    args.extend_from_slice(extra);
    fx.ar(&args)
}

fn transcripts(fx: &Fixture, tag: &str) -> String {
    std::fs::read_dir(fx.repo.join(".autoresearch").join(tag).join("agent"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

#[test]
fn test_a_confined_cmd_agent_cannot_touch_the_journal_the_answers_or_fixed_files_but_can_edit_the_train_file()
{
    let fx = fixture();
    std::fs::remove_file("/tmp/ar-agent-escape").ok();
    let out = loop_with_script(
        &fx,
        "agentbox",
        r#"#!/bin/sh
if echo '{"event":"stopped"}' >> .autoresearch/agentbox/runs.jsonl 2>/dev/null; then echo "JOURNAL WRITTEN"; else echo "journal write refused"; fi
for f in "$AUTORESEARCH_CACHE"/smoke/data/*val*; do
  if cat "$f" >/dev/null 2>&1; then echo "VAL READ"; else echo "val read refused"; fi
done
if echo x > /tmp/ar-agent-escape 2>/dev/null; then echo "WROTE OUTSIDE"; else echo "outside write refused"; fi
if echo "// sneaky" >> prepare/src/lib.rs 2>/dev/null; then echo "PREPARE WRITTEN"; else echo "prepare write refused"; fi
sed -i 's/const MATRIX_LR: f64 = 0.04;/const MATRIX_LR: f64 = 0.05;/' train/src/main.rs
echo "DESCRIPTION: raise MATRIX_LR to 0.05"
"#,
        "1",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let transcript = transcripts(&fx, "agentbox");
    for want in
        ["journal write refused", "val read refused", "outside write refused", "prepare write refused"]
    {
        assert!(transcript.contains(want), "{want}: {transcript}");
    }
    for bad in ["JOURNAL WRITTEN", "VAL READ", "WROTE OUTSIDE", "PREPARE WRITTEN"] {
        assert!(!transcript.contains(bad), "{bad}: {transcript}");
    }
    assert!(!std::path::Path::new("/tmp/ar-agent-escape").exists());
    let journal = fx.journal("agentbox");
    let candidate =
        events(&journal, "started").into_iter().find(|e| e["kind"] == "candidate").expect("the edit ran");
    let finished =
        events(&journal, "finished").into_iter().find(|f| f["id"] == candidate["id"]).expect("it finished");
    assert!(finished["record"]["val_bpb"].as_f64().is_some(), "{finished}");
    assert!(events(&journal, "session")[0]["agent"].as_str().unwrap().contains("confined"));
}

#[test]
fn test_a_prepare_only_turn_is_rejected_and_rolled_back_in_that_turn_and_the_next_valid_turn_runs() {
    let fx = fixture();
    let out = loop_with_script(
        &fx,
        "scope",
        r#"#!/bin/sh
n=$(cat "$TMPDIR/ar-turn" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$TMPDIR/ar-turn"
if [ "$n" = 1 ]; then
  echo "// sneaky" >> prepare/src/lib.rs
  echo "DESCRIPTION: tune the metric"
  exit 0
fi
sed -i 's/const MATRIX_LR: f64 = 0.04;/const MATRIX_LR: f64 = 0.05;/' train/src/main.rs
echo "DESCRIPTION: raise MATRIX_LR to 0.05"
"#,
        "2",
        &["--agent-unconfined"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let journal = fx.journal("scope");
    let decided = events(&journal, "decided");
    let rejected =
        decided.iter().find(|d| d["decision"]["status"] == "rejected").expect("turn 1 is rejected");
    assert!(rejected["decision"]["reason"].as_str().unwrap().contains("prepare/src/lib.rs"), "{rejected}");
    assert!(
        !std::fs::read_to_string(fx.repo.join("prepare/src/lib.rs")).unwrap().contains("sneaky"),
        "rolled back"
    );
    let candidates: Vec<_> =
        events(&journal, "started").into_iter().filter(|e| e["kind"] == "candidate").collect();
    assert_eq!(candidates.len(), 2, "{journal:?}");
    let second = &candidates[1];
    assert!(second["description"].as_str().unwrap().contains("MATRIX_LR"));
    let finished =
        events(&journal, "finished").into_iter().find(|f| f["id"] == second["id"]).expect("turn 2 ran");
    assert!(finished["record"]["val_bpb"].as_f64().is_some(), "{finished}");
    assert!(text(&out).contains("rejected"), "{}", text(&out));
}

#[test]
fn test_ar_sandbox_confines_a_driving_agent_and_forwards_ar_commands() {
    let fx = fixture();
    with_baseline(&fx, "drive");
    let out = fx.ar(&[
        "sandbox",
        "--",
        "sh",
        "-c",
        "cat .autoresearch/drive/runs.jsonl >/dev/null 2>&1 && echo JOURNAL READ || echo journal read refused; \
         for f in \"$AUTORESEARCH_CACHE\"/smoke/data/*val*; do cat \"$f\" >/dev/null 2>&1 && echo VAL READ || echo val read refused; done; \
         echo '// x' >> prepare/src/lib.rs 2>/dev/null && echo PREPARE WRITTEN || echo prepare write refused; \
         echo '// y' >> train/src/main.rs && echo train write ok; \
         $AR_BIN status",
    ]);
    let _ = fx.git(&["checkout", "--", "train/src/main.rs"]);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    for want in ["journal read refused", "val read refused", "prepare write refused", "train write ok"] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert!(
        !msg.contains("JOURNAL READ") && !msg.contains("VAL READ") && !msg.contains("PREPARE WRITTEN"),
        "{msg}"
    );
    assert!(msg.contains("drive"), "`ar status` ran outside and saw the session: {msg}");
}
