//! Helpers for tests that run the `weft` binary as a separate process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// `weft ARGS` with no inherited `WEFT_*` variables.
pub fn weft(args: &[&str]) -> Command {
    let mut command = Command::new(WEFT);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") {
            command.env_remove(key);
        }
    }
    command
}

/// A running `weft serve` whose stderr is collected.
pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut command = weft(args);
        command
            .envs(envs.iter().copied())
            .env("WEFT_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = command.spawn().expect("weft starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a log line containing `needle`; return it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(180)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with '{needle}'; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn address(&mut self) -> String {
        let line = self.wait_for("HTTP API listening");
        let start = line.find("address=").expect("address field") + "address=".len();
        line[start..]
            .split_whitespace()
            .next()
            .expect("address")
            .to_string()
    }

    pub fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let (tx, rx) = mpsc::channel();
        let mut child = self.child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("exits within its shutdown bound")
            .expect("wait");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

impl Server {
    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
