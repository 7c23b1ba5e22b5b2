//! Third-party SMART clients (the SMART Python client `fhirclient==4.4.0`, the SMART JS client
//! `fhirclient@2.6.3` in headless Debian Chromium driven by `playwright-core@1.65.1`): their
//! installers and runners. The scripts they run are in `tests/clients/`.
//!
//! Installs happen once into `target/third-party/` through `tests/clients/install.sh` (which
//! `.ci/run` also calls); a failed install panics with what to do, it never skips.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Debian's Chromium; the only browser this machine can install.
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub const FHIRCLIENT_JS_VERSION: &str = "2.6.3";
pub const PLAYWRIGHT_CORE_VERSION: &str = "1.65.1";

/// How long one Python client script may run.
pub const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the browser run may take after `go` (the script gives up after 90 s itself).
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

static INSTALL_LOCK: Mutex<()> = Mutex::new(());

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/clients/`: the scripts and pages the clients run.
pub fn scripts_dir() -> PathBuf {
    manifest_dir().join("tests/clients")
}

fn install(what: &str, done: impl Fn() -> bool) {
    let _guard = INSTALL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if done() {
        return;
    }
    let script = scripts_dir().join("install.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(what)
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run `bash {} {what}`: {e}", script.display()));
    assert!(
        status.success() && done(),
        "`bash tests/clients/install.sh {what}` failed ({status}): the third-party SMART clients \
         cannot be installed, so these tests cannot judge the server (needs python3 with venv, \
         npm, and the PyPI and npm registries)"
    );
}

/// The Python of the venv `target/third-party/py-smart` holding `fhirclient==4.4.0`, PyJWT,
/// cryptography and requests at the versions pinned in `tests/clients/requirements.txt`.
pub fn py_smart() -> PathBuf {
    venv_python("py-smart", "requirements.txt", "python")
}

/// The Python of the venv `target/third-party/py-r4` holding `fhir.resources==6.4.0` (FHIR
/// 4.0.1) at the versions pinned in `tests/clients/requirements-r4.txt`.
pub fn py_r4() -> PathBuf {
    venv_python("py-r4", "requirements-r4.txt", "r4")
}

/// The Python of venv `target/third-party/{venv}`, installed by `install.sh {what}` unless
/// its marker already holds `tests/clients/{requirements}`.
fn venv_python(venv: &str, requirements: &str, what: &str) -> PathBuf {
    let dir = manifest_dir().join("target/third-party").join(venv);
    let python = dir.join("bin/python");
    let marker = dir.join("installed-requirements.txt");
    let wanted = std::fs::read(scripts_dir().join(requirements))
        .unwrap_or_else(|e| panic!("read tests/clients/{requirements}: {e}"));
    install(what, || {
        python.is_file() && std::fs::read(&marker).is_ok_and(|m| m == wanted)
    });
    python
}

fn npm_version(dir: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules").join(package).join("package.json"))
        .ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    json["version"].as_str().map(str::to_string)
}

/// `target/third-party/smart-js`, holding `node_modules/fhirclient` (2.6.3, whose
/// `build/fhir-client.js` the test pages load) and `node_modules/playwright-core` (1.65.1).
pub fn smart_js() -> PathBuf {
    let dir = manifest_dir().join("target/third-party/smart-js");
    install("js", || {
        npm_version(&dir, "fhirclient").as_deref() == Some(FHIRCLIENT_JS_VERSION)
            && npm_version(&dir, "playwright-core").as_deref() == Some(PLAYWRIGHT_CORE_VERSION)
            && dir
                .join("node_modules/fhirclient/build/fhir-client.js")
                .is_file()
    });
    dir
}

/// `/usr/bin/chromium`, or a panic saying how to get it (never a skip).
pub fn chromium() -> PathBuf {
    let path = PathBuf::from(CHROMIUM);
    assert!(
        path.is_file(),
        "{CHROMIUM} is missing: the SMART JS client test runs in Debian's Chromium. Install the \
         Debian package `chromium` (as root: `apt-get update && apt-get install -y chromium`; \
         .ci/run does this)"
    );
    path
}

/// Runs `foster-passport keygen --alg ALG --out PREFIX` (no database involved) and returns the
/// kid it prints, after checking `PREFIX.pem` and `PREFIX.jwks.json` exist and the JWK Set
/// holds that kid with the right `alg`.
pub fn keygen(alg: &str, prefix: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_foster-passport"))
        .args(["keygen", "--alg", alg, "--out"])
        .arg(prefix)
        .env("FP_LOG", "warn")
        .output()
        .expect("run foster-passport keygen");
    assert!(
        output.status.success(),
        "foster-passport keygen --alg {alg} --out {} failed: {}\n{}",
        prefix.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let kid = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(!kid.is_empty(), "keygen printed no kid");
    let pem = PathBuf::from(format!("{}.pem", prefix.display()));
    let jwks_path = PathBuf::from(format!("{}.jwks.json", prefix.display()));
    let pem_text = std::fs::read_to_string(&pem)
        .unwrap_or_else(|e| panic!("keygen wrote no {}: {e}", pem.display()));
    assert!(
        pem_text.contains("-----BEGIN PRIVATE KEY-----"),
        "{} is not a PKCS#8 PEM private key",
        pem.display()
    );
    let jwks: Value = serde_json::from_str(
        &std::fs::read_to_string(&jwks_path)
            .unwrap_or_else(|e| panic!("keygen wrote no {}: {e}", jwks_path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", jwks_path.display()));
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .unwrap_or_else(|| panic!("{} has no key with kid {kid}: {jwks}", jwks_path.display()));
    assert_eq!(key["alg"], alg, "JWK alg in {}", jwks_path.display());
    assert!(
        key.get("d").is_none(),
        "{} publishes a private key member `d`",
        jwks_path.display()
    );
    kid
}

// ---------------------------------------------------------------------------------------------
// Running a client script
// ---------------------------------------------------------------------------------------------

/// What a finished script left: its exit status, its last stdout line parsed as JSON (the
/// report), and everything it printed.
#[derive(Debug)]
pub struct Finished {
    pub name: String,
    pub status: ExitStatus,
    pub report: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The report, pretty, with the script's stderr: for assertion messages.
    pub fn explain(&self) -> String {
        format!(
            "--- {} exited {} with report ---\n{}\n--- its stderr ---\n{}",
            self.name,
            self.status,
            serde_json::to_string_pretty(&self.report).unwrap_or_default(),
            tail(&self.stderr, 6000)
        )
    }
}

/// A client script running as a child process: stdout is read line by line (each line can be
/// waited for with a deadline), stderr is collected, stdin stays open for a handshake. Killed
/// when dropped.
pub struct Script {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Script {
    pub fn spawn(name: &str, mut cmd: Command) -> Script {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Script {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child: Some(child),
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn die(&mut self, why: &str) -> ! {
        self.kill();
        // Give the reader threads a moment to collect what the process wrote last.
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push(line);
        }
        panic!(
            "{}: {why}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name,
            tail(&self.stdout.join("\n"), 8000),
            tail(&self.stderr_text(), 8000)
        );
    }

    /// The next stdout line parsed as a JSON object, waiting at most `timeout`.
    pub fn next_json(&mut self, timeout: Duration, what: &str) -> Value {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.stdout.push(line.clone());
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.is_object() => v,
                    _ => self.die(&format!("expected {what} as a JSON line, got {line:?}")),
                }
            }
            Err(RecvTimeoutError::Timeout) => self.die(&format!("no {what} within {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => {
                self.die(&format!("exited before printing {what}"))
            }
        }
    }

    /// Writes one line to the script's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            self.die(&format!("writing {line:?} to its stdin failed: {e}"));
        }
    }

    /// Closes stdin, waits (at most `timeout`) for the script to end and returns its report:
    /// the last stdout line that parses as a JSON object. Panics on a timeout or no report;
    /// a non-zero exit is left to the caller to judge with the report in hand.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.die(&format!("still running after {timeout:?}"))
                }
            }
        }
        let status = loop {
            let child = self.child.as_mut().expect("child");
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => self.die(&format!("did not exit within {timeout:?}")),
                Err(e) => self.die(&format!("waiting for it failed: {e}")),
            }
        };
        self.child = None;
        // stderr's reader ends with the process; wait briefly for its last bytes.
        std::thread::sleep(Duration::from_millis(50));
        let report = self.stdout.iter().rev().find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        });
        let Some(report) = report else {
            let why = format!("exited {status} without a JSON report line");
            self.die(&why)
        };
        let finished = Finished {
            name: self.name.clone(),
            status,
            report,
            stdout: self.stdout.join("\n"),
            stderr: self.stderr_text(),
        };
        if std::env::var_os("FP_CLIENT_REPORTS").is_some() {
            // `FP_CLIENT_REPORTS=1 cargo test --test smart_clients -- --nocapture` shows what
            // every client saw, also when it passed.
            println!("{}", finished.explain());
        }
        finished
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `tests/clients/SCRIPT` with the SMART Python client's venv and returns its report.
pub fn run_python(script: &str, args: &[String]) -> Finished {
    let python = py_smart();
    let mut cmd = Command::new(&python);
    cmd.arg(scripts_dir().join(script))
        .args(args)
        .current_dir(scripts_dir());
    Script::spawn(script, cmd).finish(PYTHON_TIMEOUT)
}

/// Starts `tests/clients/smart_js.js` (the SMART JS client in headless Chromium) with `config`
/// (see the script's header); `chromium` is filled in. The caller reads the `listening` line,
/// registers the client, sends `go`, then [`Script::finish`]es with [`BROWSER_TIMEOUT`].
pub fn start_smart_js(mut config: Value) -> Script {
    let chromium = chromium();
    let node_dir = smart_js();
    config["chromium"] = Value::String(chromium.display().to_string());
    let mut cmd = Command::new("node");
    cmd.arg(scripts_dir().join("smart_js.js"))
        .arg(&node_dir)
        .arg(config.to_string())
        .current_dir(scripts_dir());
    Script::spawn("smart_js.js", cmd)
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
