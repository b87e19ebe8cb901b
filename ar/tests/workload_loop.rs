//! `ar loop` on a declared command workload, end to end through the real binary (issue 13,
//! "any repository with a metric"): a temporary git repository whose `autoresearch.toml`
//! makes `params/*.conf` editable, runs `sh score.sh` (the metric is the knob's value plus
//! a little noise from the seed variable) and `sh check.sh` as checks (it refuses knob 1);
//! a `cmd:` agent script makes a known edit per turn, counting its turns in a scratch
//! directory it may write.
//!
//! Asserted from the journal and git: an improving edit is kept, a worsening one
//! discarded, an edit outside the editable globs rejected and its file never committed, a
//! failing check turns a keep into a discard, a `maximize` workload keeps increases, the
//! agent is told the metric and its files, and a resume over a changed `autoresearch.toml`
//! is refused naming the file. The metric is the program's claim, and the report says so.
//! `--until-first-keep` (what `ar demo` runs with) goes on past `--max-experiments` to the
//! first keep and stops there, or at its limit.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Fixtures

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A committed repository: the knob, the scorer, the checks and the declaration. With
/// `json`, the scorer writes `metrics.json` (not ignored by git) instead of a METRIC line.
fn knob_repo(direction: &str, json: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = if json {
        "source = \"json\"\nfile = \"metrics.json\"\nkey = \"loss\""
    } else {
        "source = \"stdout\""
    };
    let toml = format!(
        r#"version = 1
name = "knob"

[files]
editable = ["params/*.conf"]

[run]
command = "sh score.sh"
timeout = "30s"
seed_env = "SEED"

[metric]
name = "loss"
direction = "{direction}"
{source}

[checks]
command = "sh check.sh"
timeout = "30s"
"#
    );
    // The noise depends on the seed index only, so a pair (same index) cancels it and the
    // baseline runs still spread (the noise estimate is not zero).
    let (print, to) =
        if json { (r#"{\"loss\": %.4f}\n"#, " > metrics.json") } else { (r"METRIC loss=%.4f\n", "") };
    let score = format!(
        "k=$(cat params/knob.conf)\n\
         awk -v k=\"$k\" -v s=\"${{SEED:-0}}\" 'BEGIN {{ printf \"{print}\", k + ((s * 37) % 11) / 1000 }}'{to}\n"
    );
    let check =
        "[ \"$(cat params/knob.conf)\" != 1 ] || { echo 'knob 1 breaks the contract' >&2; exit 1; }\n";
    for (path, text) in [
        ("autoresearch.toml", toml.as_str()),
        ("score.sh", score.as_str()),
        ("check.sh", check),
        ("params/knob.conf", "5\n"),
        ("params/README", "the knob's value is the loss\n"),
    ] {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
    ar::git::init_repo(dir.path()).unwrap();
    dir
}

/// An agent script: turn n (counted in `state`) runs `turns[n-1]` and prints its description.
fn agent(state: &Path, turns: &[(&str, &str)]) -> String {
    let mut cases = String::new();
    for (i, (edit, description)) in turns.iter().enumerate() {
        cases.push_str(&format!("  {}) {edit}; echo 'DESCRIPTION: {description}';;\n", i + 1));
    }
    let script = format!(
        "#!/bin/sh\nn=$(cat '{s}/turn' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{s}/turn'\n\
         cat > '{s}/prompt.'$n\ncase $n in\n{cases}esac\n",
        s = state.display()
    );
    let path = state.join("agent.sh");
    std::fs::write(&path, script).unwrap();
    format!("cmd:sh {}", path.display())
}

fn ar(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ar"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("AR_FAILPOINT")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn journal(dir: &Path, tag: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join(".autoresearch").join(tag).join("runs.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Each candidate's description and decided status, in order.
fn candidates(events: &[Value]) -> Vec<(String, String, String)> {
    let started: Vec<&Value> =
        events.iter().filter(|e| e["event"] == "started" && e["kind"] == "candidate").collect();
    started
        .iter()
        .map(|s| {
            let d = events
                .iter()
                .find(|e| e["event"] == "decided" && e["id"] == s["id"])
                .unwrap_or_else(|| panic!("candidate {} has no decision", s["id"]));
            (
                s["description"].as_str().unwrap().to_string(),
                d["decision"]["status"].as_str().unwrap().to_string(),
                d["decision"]["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn loop_args<'a>(tag: &'a str, agent: &'a str, state: &'a str, n: &'a str) -> Vec<&'a str> {
    vec![
        "loop",
        "--tag",
        tag,
        "--agent",
        agent,
        "--agent-writable",
        state,
        "--max-experiments",
        n,
        "--verify-pairs",
        "2",
    ]
}

// ---------------------------------------------------------------------------------------
// The loop

#[test]
fn test_a_loop_on_a_command_workload_keeps_improvements_and_refuses_worse_out_of_scope_and_failing_checks() {
    let repo = knob_repo("minimize", false);
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().display().to_string();
    let agent = agent(
        scratch.path(),
        &[
            ("echo 3 > params/knob.conf", "lower the knob to 3"),
            ("echo 4 > params/knob.conf", "raise the knob to 4"),
            ("echo 2 > params/knob.conf; echo note > params/notes.md", "knob 2 and a note"),
            ("echo 1 > params/knob.conf", "knob 1"),
        ],
    );
    let out = ar(repo.path(), &loop_args("knob", &agent, &state, "4"));
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.contains("metric loss (minimize, program output (untrusted))"), "{msg}");

    let events = journal(repo.path(), "knob");
    let settings = &events.iter().find(|e| e["event"] == "session").unwrap()["settings"]["workload"];
    assert_eq!(settings["metric"], "loss");
    assert_eq!(settings["direction"], "minimize");
    assert_eq!(settings["name"], "knob");
    assert_eq!(settings["file"], "autoresearch.toml");
    let decided = candidates(&events);
    let statuses: Vec<&str> = decided.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["keep", "discard", "rejected", "discard"], "{decided:#?}\n{msg}");
    assert!(decided[0].2.contains("checks passed"), "{}", decided[0].2);
    assert!(
        decided[2].2.contains("params/notes.md") && decided[2].2.contains("params/*.conf"),
        "{}",
        decided[2].2
    );
    assert!(decided[3].2.contains("the checks failed"), "a failing check blocks the keep: {}", decided[3].2);

    // The branch sits on the kept change; the note was never committed anywhere.
    let best = events.iter().rev().find(|e| e["event"] == "decided").unwrap()["decision"]["best_commit"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(git(repo.path(), &["rev-parse", "autoresearch/knob"]).trim(), best);
    assert_eq!(git(repo.path(), &["show", "autoresearch/knob:params/knob.conf"]).trim(), "3");
    let files = git(repo.path(), &["log", "--all", "--name-only", "--format="]);
    assert!(!files.contains("notes.md"), "{files}");
    let kept = git(repo.path(), &["show", "--stat", "--format=%s", &best]);
    assert!(kept.starts_with("lower the knob to 3") && kept.contains("params/knob.conf"), "{kept}");
    assert!(!repo.path().join("params/notes.md").exists(), "the rejected turn's file was removed");

    // The agent was told what it may edit, the metric and which way is better.
    let prompt = std::fs::read_to_string(scratch.path().join("prompt.1")).unwrap();
    assert!(prompt.contains("params/*.conf") && prompt.contains("`loss` (lower is better)"), "{prompt}");
    assert!(!prompt.contains("val_bpb") && !prompt.contains("train/src/main.rs"), "{prompt}");
    assert!(prompt.contains("sh check.sh"), "{prompt}");

    // The report names the metric and where it comes from.
    let report = ar(repo.path(), &["report", "--tag", "knob"]);
    let report_text = text(&report);
    assert!(report.status.success(), "{report_text}");
    let md = std::fs::read_to_string(repo.path().join(".autoresearch/knob/report.md")).unwrap_or(report_text);
    assert!(md.contains("loss") && md.contains("program output (untrusted)"), "{md}");

    // A resume over a changed declaration is refused, naming the file.
    git(repo.path(), &["checkout", "-q", "autoresearch/knob"]);
    let toml = std::fs::read_to_string(repo.path().join("autoresearch.toml")).unwrap();
    std::fs::write(
        repo.path().join("autoresearch.toml"),
        toml.replace("timeout = \"30s\"", "timeout = \"40s\""),
    )
    .unwrap();
    git(repo.path(), &["commit", "-qam", "change the workload"]);
    let again =
        ar(repo.path(), &["loop", "--tag", "knob", "--resume", "--agent", &agent, "--max-experiments", "1"]);
    let again_text = text(&again);
    assert!(!again.status.success(), "{again_text}");
    assert!(again_text.contains("autoresearch.toml changed since session"), "{again_text}");
}

#[test]
fn test_a_maximize_workload_keeps_increases_and_discards_decreases() {
    let repo = knob_repo("maximize", true);
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().display().to_string();
    let agent = agent(
        scratch.path(),
        &[
            ("echo 7 > params/knob.conf", "raise the knob to 7"),
            ("echo 6 > params/knob.conf", "lower the knob to 6"),
        ],
    );
    let out = ar(repo.path(), &loop_args("up", &agent, &state, "2"));
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    let events = journal(repo.path(), "up");
    let decided = candidates(&events);
    let statuses: Vec<&str> = decided.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["keep", "discard"], "{decided:#?}\n{msg}");
    assert_eq!(git(repo.path(), &["show", "autoresearch/up:params/knob.conf"]).trim(), "7");
    // The metric came through the JSON file, which git does not ignore: ar's own rewrites of
    // it are no one's edit, so no baseline run and no turn was refused for it (the statuses
    // above), and the session cleaned it away at the end like any other leftover.
    assert!(!repo.path().join("metrics.json").exists());
    // The agent's digest speaks of the workload's metric and its direction, not val_bpb.
    let prompt = std::fs::read_to_string(scratch.path().join("prompt.2")).unwrap();
    assert!(
        prompt.contains("metric loss (higher is better") && prompt.contains("`loss` (higher is better)"),
        "{prompt}"
    );
    assert!(!prompt.contains("val_bpb"), "{prompt}");
    // The verification's gain is improvement-positive: 7 − 5 = 2 on fresh seeds.
    let gain = verified_gain(&events);
    assert!((gain - 2.0).abs() < 1e-6, "gain {gain}");
}

/// `ar loop --max-experiments 1 --until-first-keep <limit>` on a fresh knob repository (the
/// baseline knob is 5, lower is better), the agent setting the knob to each of `knobs` in turn.
struct FirstKeepRun {
    repo: tempfile::TempDir,
    scratch: tempfile::TempDir,
    agent: String,
    msg: String,
    events: Vec<Value>,
    statuses: Vec<String>,
}

fn first_keep_loop(tag: &str, knobs: &[u32], limit: &str) -> FirstKeepRun {
    let repo = knob_repo("minimize", false);
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().display().to_string();
    let turns: Vec<(String, String)> = knobs
        .iter()
        .map(|k| (format!("echo {k} > params/knob.conf"), format!("set the knob to {k}")))
        .collect();
    let turns: Vec<(&str, &str)> = turns.iter().map(|(e, d)| (e.as_str(), d.as_str())).collect();
    let agent = agent(scratch.path(), &turns);
    let mut args = loop_args(tag, &agent, &state, "1");
    args.extend(["--until-first-keep", limit]);
    let out = ar(repo.path(), &args);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    let events = journal(repo.path(), tag);
    let statuses = candidates(&events).into_iter().map(|(_, s, _)| s).collect();
    FirstKeepRun { repo, scratch, agent, msg, events, statuses }
}

/// The gain the end-of-session verification measured on fresh seeds (val).
fn verified_gain(events: &[Value]) -> f64 {
    let verified = events.iter().find(|e| e["event"] == "verified").expect("a verification");
    verified["verification"]["splits"][0]["gain"].as_f64().unwrap()
}

fn stop_reason(events: &[Value]) -> &Value {
    &events.iter().rev().find(|e| e["event"] == "stopped").expect("a stop")["reason"]
}

#[test]
fn test_until_first_keep_goes_on_past_max_experiments_to_the_first_keep_and_no_further() {
    // Nothing kept in the first experiment: the loop goes on, stops at the first keep (the
    // third), and the fourth turn is never asked for.
    let run = first_keep_loop("first", &[6, 7, 3, 2], "5");
    let msg = &run.msg;
    assert!(msg.contains("Nothing kept in 1 experiment: going on until the first keep (at most 5"), "{msg}");
    assert_eq!(run.statuses, ["discard", "discard", "keep"], "{msg}");
    assert!(!run.scratch.path().join("prompt.4").exists(), "no turn after the keep");
    assert_eq!(stop_reason(&run.events), "3 experiments, 1 kept");
    // The verification at the end measures the kept change on fresh seeds: 5 − 3 = 2.
    let gain = verified_gain(&run.events);
    assert!((gain - 2.0).abs() < 1e-6, "gain {gain}");

    // Nothing ever kept: the loop stops at the limit.
    let run = first_keep_loop("none", &[6, 7, 8, 2], "3");
    assert_eq!(run.statuses, ["discard", "discard", "discard"], "{}", run.msg);
    assert_eq!(stop_reason(&run.events), "3 experiments, none kept (--until-first-keep 3)");

    // Without --max-experiments the flag means nothing, and clap says so; with a pool it is
    // refused before any branch is made.
    let repo = run.repo.path();
    let out = ar(repo, &["loop", "--tag", "bad", "--agent", "evolve", "--until-first-keep", "3"]);
    assert!(!out.status.success() && text(&out).contains("--max-experiments"), "{}", text(&out));
    let state = run.scratch.path().display().to_string();
    let mut args = loop_args("pool", &run.agent, &state, "1");
    args.extend(["--until-first-keep", "3", "--workers", "2"]);
    let out = ar(repo, &args);
    assert!(!out.status.success() && text(&out).contains("--workers 1"), "{}", text(&out));
    assert!(!git(repo, &["branch", "--list"]).contains("autoresearch/pool"));
}

#[test]
fn test_a_command_workload_refuses_the_pool_slurm_and_the_built_in_agents_before_making_a_branch() {
    let repo = knob_repo("minimize", false);
    for (args, says) in [
        (vec!["loop", "--tag", "p", "--agent", "cmd:true", "--workers", "2"], "one measurement at a time"),
        (
            vec!["loop", "--tag", "p", "--agent", "cmd:true", "--backend", "slurm"],
            "one measurement at a time",
        ),
        (vec!["loop", "--tag", "p", "--agent", "evolve"], "needs an agent CLI"),
    ] {
        let out = ar(repo.path(), &args);
        let msg = text(&out);
        assert!(
            !out.status.success() && msg.contains(says) && msg.contains("autoresearch.toml"),
            "{args:?}: {msg}"
        );
    }
    assert!(!git(repo.path(), &["branch", "--list"]).contains("autoresearch/p"), "no branch was made");
}
