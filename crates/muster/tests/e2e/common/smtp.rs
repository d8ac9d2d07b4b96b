//! A real SMTP server for the mail tests: `smtp_sink.py` (Python's aiosmtpd) from the
//! repository's `.venv`, which `.ci/run` installs from `.ci/requirements-test.txt`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn repo_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.ancestors().nth(2).unwrap_or(crate_dir).to_path_buf()
}

/// `.venv/bin/python` with aiosmtpd. Missing: a failure in CI, a skip (None) elsewhere.
pub fn python() -> Option<PathBuf> {
    let path = repo_root().join(".venv/bin/python");
    let ok = path.is_file()
        && std::process::Command::new(&path)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} with aiosmtpd is missing: .ci/run installs it (python3 -m venv .venv; .venv/bin/pip install -r .ci/requirements-test.txt)",
        path.display()
    );
    println!(
        "skipped: {} with aiosmtpd is missing; run `bash .ci/run` to install it",
        path.display()
    );
    None
}

/// A running SMTP server that keeps every message it accepts.
pub struct SmtpSink {
    pub port: u16,
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl SmtpSink {
    /// On a free port.
    pub async fn start(python: &Path) -> SmtpSink {
        Self::start_with(python, 0, 0).await
    }

    /// On `port` (0: a free one), refusing the first `refuse` recipients with a 550.
    pub async fn start_with(python: &Path, port: u16, refuse: u32) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/common/smtp_sink.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(["--port", &port.to_string(), "--refuse", &refuse.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SMTP sink");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let into = lines.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(out).lines();
            while let Ok(Some(line)) = r.next_line().await {
                if let (Ok(v), Ok(mut all)) = (serde_json::from_str::<Value>(&line), into.lock()) {
                    all.push(v);
                }
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let found = lines
                    .lock()
                    .ok()
                    .and_then(|v| v.iter().find_map(|l| l["port"].as_u64()));
                if let Some(p) = found {
                    return p as u16;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the SMTP sink did not start");
        SmtpSink { port, child, lines }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<Value> {
        self.lines
            .lock()
            .map(|v| v.iter().filter(|l| l.get("data").is_some()).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits (up to 30 s) until a message to `to` whose data contains `needle` arrived.
    pub async fn wait_for(&self, to: &str, needle: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(m) = self.messages().into_iter().find(|m| {
                    m["rcpt_tos"].as_array().is_some_and(|r| r.iter().any(|a| a == to))
                        && m["data"].as_str().is_some_and(|d| d.contains(needle))
                }) {
                    return m;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no mail to {to} containing {needle:?}; received: {:?}", self.messages()))
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// The header `name` of a raw message (first occurrence, unfolded).
pub fn header(data: &str, name: &str) -> Option<String> {
    let head = data
        .split("\r\n\r\n")
        .next()
        .unwrap_or(data)
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    let head = head.replace("\n ", " ");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The first `{base}{path}?token=…` link in a raw message, and its token.
pub fn link(data: &str, base: &str, path: &str) -> (String, String) {
    let text = quoted_printable(data);
    let start = format!("{base}{path}?token=");
    let at = text
        .find(&start)
        .unwrap_or_else(|| panic!("no link {start}… in {data}"));
    let token: String = text[at + start.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (format!("{start}{token}"), token)
}

/// `data` with quoted-printable undone (soft line breaks, `=XX`): how the text and HTML parts
/// of a message read. Harmless on parts that are not so encoded, unless they hold `=XX`.
pub fn quoted_printable(data: &str) -> String {
    let data = data.replace("=\r\n", "").replace("=\n", "");
    let bytes = data.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'='
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
