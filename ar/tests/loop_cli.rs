//! `ar loop` as a user runs it, on the shared fixture repository with the real train program
//! (smoke profile, shrunk model): the built-in `evolve` agent for a few experiments, and a
//! `cmd:` agent that is a small shell script making a known edit and saving the prompt it was
//! given. The drivers' own corner cases (timeouts, retries, the fake OpenAI endpoint) are in
//! tests/agents.rs; this is the loop around them.

mod support;

use support::fixture::{assert_consistent, events, fixture, text};

fn git_branch_exists(fx: &support::fixture::Fixture, branch: &str) -> bool {
    fx.git(&["branch", "--list", branch]).contains(branch)
}

#[test]
fn test_a_loop_with_evolve_runs_baselines_and_experiments_and_ends_on_the_best_commit() {
    let fx = fixture();
    let out = fx.ar(&[
        "loop",
        "--tag",
        "evo",
        "--agent",
        "evolve",
        "--max-experiments",
        "2",
        "--baseline-runs",
        "1",
        "--timeout",
        "120",
    ]);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(git_branch_exists(&fx, "autoresearch/evo"), "the loop made its branch");
    let journal = fx.journal("evo");
    assert_consistent(&journal);
    let started = events(&journal, "started");
    let candidates: Vec<_> = started.iter().filter(|e| e["kind"] == "candidate").collect();
    assert_eq!(candidates.len(), 2, "two agent experiments:\n{msg}");
    for c in &candidates {
        assert!(c["description"].as_str().unwrap().starts_with("evolve:"), "{c}");
    }
    let stopped = events(&journal, "stopped");
    assert!(stopped.last().unwrap()["reason"].as_str().unwrap().contains("--max-experiments"));
    let best =
        events(&journal, "decided").last().unwrap()["decision"]["best_commit"].as_str().unwrap().to_string();
    assert_eq!(fx.git(&["rev-parse", "autoresearch/evo"]).trim(), best, "the branch sits on the best commit");
    assert!(fx.git(&["status", "--porcelain", "--untracked-files=no"]).trim().is_empty(), "a clean tree");
    let tsv = fx.tsv("evo");
    assert_eq!(tsv.lines().count(), 1 + 1 + 2, "header, the baseline, two experiments:\n{tsv}");

    // The same tag again is refused without --resume; with it, the session goes on.
    let again = fx.ar(&["loop", "--tag", "evo", "--agent", "evolve", "--max-experiments", "1"]);
    assert!(!again.status.success() && text(&again).contains("--resume"), "{}", text(&again));
}

#[test]
fn test_a_loop_with_a_command_agent_gets_the_prompt_and_tests_its_edit() {
    let fx = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let prompt = scratch.path().join("prompt.txt");
    let script = scratch.path().join("agent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > '{}'\n\
             sed -i 's/const MATRIX_LR: f64 = 0.04;/const MATRIX_LR: f64 = 0.05;/' train/src/main.rs\n\
             echo 'DESCRIPTION: raise MATRIX_LR to 0.05'\n\
             echo 'HYPOTHESIS: a shorter run wants a larger step'\n",
            prompt.display()
        ),
    )
    .unwrap();
    let agent = format!("cmd:sh {}", script.display());
    let out = fx.ar(&[
        "loop",
        "--tag",
        "cmd",
        "--agent",
        &agent,
        "--max-experiments",
        "1",
        "--baseline-runs",
        "1",
        "--timeout",
        "120",
        "--agent-writable",
        &scratch.path().display().to_string(),
    ]);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    let journal = fx.journal("cmd");
    assert_consistent(&journal);
    let candidate =
        events(&journal, "started").into_iter().find(|e| e["kind"] == "candidate").expect("a candidate");
    assert_eq!(candidate["description"], "raise MATRIX_LR to 0.05");
    assert_eq!(candidate["hypothesis"], "a shorter run wants a larger step");
    let given = std::fs::read_to_string(&prompt).expect("the agent read its prompt from stdin");
    assert!(given.contains("You are a researcher"), "program.md is in the prompt:\n{given}");
    assert!(given.contains("train/src/main.rs"), "{given}");
    let committed = events(&journal, "committed");
    assert_eq!(committed.len(), 1);
    let commit = committed[0]["commit"].as_str().unwrap();
    let diff = fx.git(&["show", "--stat", "--format=%s", commit]);
    assert!(diff.starts_with("raise MATRIX_LR to 0.05") && diff.contains("train/src/main.rs"), "{diff}");
    assert!(!diff.contains("agent.sh"), "only the train file was committed: {diff}");
}
