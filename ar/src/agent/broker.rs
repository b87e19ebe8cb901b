//! The broker that lets a confined agent drive `ar` (the original's way: the agent runs
//! `ar experiment` after each edit).
//!
//! An agent started with `ar sandbox -- <agent>` cannot write the journal, the run
//! directories or `target/`, so an `ar experiment` it runs cannot work in place. Instead,
//! inside the sandbox `ar` finds `AR_BROKER` (a unix socket in the agent's scratch
//! directory) and forwards its command line there; the `ar sandbox` process outside runs it
//! for real, in the repository, and streams the output back. Only `experiment`, `status` and
//! `report` are forwarded; nothing else crosses.
//!
//! Protocol: the client sends one JSON line `{"args": [...]}`; the server answers with JSON
//! lines `{"stdout": "..."}`, `{"stderr": "..."}` and a last `{"exit": code}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Environment variable naming the broker's socket inside the sandbox.
pub const BROKER_ENV: &str = "AR_BROKER";

/// Subcommands a confined agent may have run outside.
pub const FORWARDED: [&str; 3] = ["experiment", "status", "report"];

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    args: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Frame {
    Stdout(String),
    Stderr(String),
    Exit(i32),
}

/// Serves requests on `socket` until the process exits, running `ar` (`exe`) in `repo`.
pub fn serve(socket: &Path, exe: PathBuf, repo: PathBuf) -> Result<()> {
    let listener =
        UnixListener::bind(socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    // One experiment at a time: the session allows one writer anyway.
    let turn = Arc::new(Mutex::new(()));
    std::thread::Builder::new().name("ar-broker".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let (exe, repo, turn) = (exe.clone(), repo.clone(), turn.clone());
            std::thread::spawn(move || {
                let _guard = turn.lock().unwrap_or_else(|p| p.into_inner());
                let _ = handle(stream, &exe, &repo);
            });
        }
    })?;
    Ok(())
}

fn handle(stream: UnixStream, exe: &Path, repo: &Path) -> Result<()> {
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    let request: Request = serde_json::from_str(&line).context("a broker request is one JSON line")?;
    let out = Arc::new(Mutex::new(stream));
    let send = |frame: &Frame| {
        let mut text = serde_json::to_string(frame).unwrap_or_default();
        text.push('\n');
        let _ = out.lock().unwrap_or_else(|p| p.into_inner()).write_all(text.as_bytes());
    };
    let Some(sub) = request.args.first().filter(|a| FORWARDED.contains(&a.as_str())) else {
        send(&Frame::Stderr(format!(
            "ar sandbox forwards only {} to the supervisor outside the sandbox\n",
            FORWARDED.join(", ")
        )));
        send(&Frame::Exit(2));
        return Ok(());
    };
    let _ = sub;
    let mut child = Command::new(exe)
        .args(&request.args)
        .current_dir(repo)
        .env_remove(BROKER_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pump = |mut pipe: Box<dyn Read + Send>, err: bool, out: Arc<Mutex<UnixStream>>| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let frame = if err { Frame::Stderr(text) } else { Frame::Stdout(text) };
                let mut line = serde_json::to_string(&frame).unwrap_or_default();
                line.push('\n');
                let _ = out.lock().unwrap_or_else(|p| p.into_inner()).write_all(line.as_bytes());
            }
        })
    };
    let a = pump(Box::new(child.stdout.take().expect("piped")), false, out.clone());
    let b = pump(Box::new(child.stderr.take().expect("piped")), true, out.clone());
    let status = child.wait()?;
    let _ = (a.join(), b.join());
    send(&Frame::Exit(status.code().unwrap_or(2)));
    Ok(())
}

/// Inside the sandbox: runs `args` through the broker and returns its exit code.
pub fn forward(socket: &Path, args: &[String]) -> Result<i32> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the ar sandbox broker at {} (was this started by `ar sandbox`?)",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_string(&Request { args: args.to_vec() })?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    for frame in BufReader::new(stream).lines() {
        match serde_json::from_str::<Frame>(&frame?)? {
            Frame::Stdout(t) => {
                print!("{t}");
                let _ = std::io::stdout().flush();
            }
            Frame::Stderr(t) => eprint!("{t}"),
            Frame::Exit(code) => return Ok(code),
        }
    }
    bail!("the broker closed the connection without an exit code")
}
