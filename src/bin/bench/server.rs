//! Starting our server as a child process, and the temporary directory it works in. Both clean
//! up in `Drop`, so an error or a panic anywhere in the benchmark still kills the server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Result;

/// A fresh directory under the system temp dir, removed on drop.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn create() -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("foster-passport-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `foster-passport serve`, killed on drop.
pub struct ServerProcess {
    child: Child,
    /// FHIR base from the server's `listening on …` line.
    pub base: String,
    log: PathBuf,
}

const LISTENING: &str = "listening on ";

impl ServerProcess {
    /// Start `bin serve --listen 127.0.0.1:0 --database db` and wait for its listening line.
    /// Its log (stderr) goes to `log`.
    pub fn start(bin: &Path, database: &str, log: &Path, wait: Duration) -> Result<Self> {
        let stderr = std::fs::File::create(log)?;
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // Reads the first line, then keeps draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines.by_ref() {}
        });
        let mut server = Self {
            child,
            base: String::new(),
            log: log.to_owned(),
        };
        let first = match rx.recv_timeout(wait) {
            Ok(Some(Ok(line))) => line,
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(server.failure("exited before printing its listening line"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(server.failure(&format!("printed nothing within {wait:?}")));
            }
        };
        match first.strip_prefix(LISTENING) {
            Some(base) => server.base = base.trim().to_owned(),
            None => {
                return Err(server.failure(&format!("first stdout line was {first:?}")));
            }
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn failure(&mut self, what: &str) -> super::Error {
        self.kill();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("server {what}; last log lines:\n{}", tail.join("\n")).into()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("server did not exit within {grace:?} of SIGTERM; killing it");
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A backend client registered on the benchmark's own server, whose short-lived tokens (300 s)
/// are fetched with `foster-passport token` and renewed while the run lasts.
pub struct BenchClient {
    bin: std::path::PathBuf,
    id: &'static str,
    scope: &'static str,
    key: std::path::PathBuf,
    token_url: String,
}

/// How a bench client is registered.
pub struct Registration {
    pub id: &'static str,
    pub scope: &'static str,
    pub role: &'static str,
    /// `Organization/ID` the client acts for.
    pub organization: Option<String>,
    /// Default purpose of use.
    pub purpose: Option<&'static str>,
}

impl Registration {
    /// The custodian: every permission, consent does not restrict it.
    pub fn custodian() -> Self {
        Self {
            id: "bench",
            scope: "system/*.cruds",
            role: "custodian",
            organization: None,
            purpose: None,
        }
    }

    /// A provider acting for `Organization/{org}` for treatment: reads and searches only, and
    /// the youth's privacy Consents decide what it sees.
    pub fn provider(org: &str) -> Self {
        Self {
            id: "bench-provider",
            scope: "system/*.rs",
            role: "provider",
            organization: Some(format!("Organization/{org}")),
            purpose: Some("TREAT"),
        }
    }
}

impl BenchClient {
    /// Make a key pair in `dir` and register the client in `database` (works before or while
    /// the server runs).
    pub fn register(bin: &Path, database: &str, dir: &Path, reg: Registration) -> Result<Self> {
        let key = dir.join(format!("{}-key", reg.id));
        run(
            bin,
            &[
                "keygen",
                "--alg",
                "es384",
                "--out",
                &key.display().to_string(),
            ],
        )?;
        let jwks = format!("{}.jwks.json", key.display());
        let mut args: Vec<&str> = vec![
            "client",
            "add",
            "--id",
            reg.id,
            "--scope",
            reg.scope,
            "--role",
            reg.role,
            "--jwks",
            &jwks,
            "--database",
            database,
        ];
        if let Some(org) = &reg.organization {
            args.extend(["--organization", org.as_str()]);
        }
        if let Some(purpose) = reg.purpose {
            args.extend(["--purpose", purpose]);
        }
        run(bin, &args)?;
        Ok(Self {
            bin: bin.to_path_buf(),
            id: reg.id,
            scope: reg.scope,
            key,
            token_url: String::new(),
        })
    }

    /// Point at the running server.
    pub fn for_server(mut self, base: &str) -> Self {
        let origin = base.strip_suffix("/fhir").unwrap_or(base);
        self.token_url = format!("{origin}/auth/token");
        self
    }

    /// A fresh access token.
    pub fn token(&self) -> Result<String> {
        let out = run(
            &self.bin,
            &[
                "token",
                "--token-url",
                &self.token_url,
                "--client-id",
                self.id,
                "--key",
                &self.key.display().to_string(),
                "--scope",
                self.scope,
            ],
        )?;
        Ok(out.trim().to_string())
    }
}

fn run(bin: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(bin)
        .args(args)
        .env("FP_LOG", "warn")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} {} failed: {}",
            bin.display(),
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
