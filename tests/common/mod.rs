//! Harness shared by every integration test: starts the real `foster-passport` binary on a fresh
//! SQLite database, talks to it over HTTP(S) and checks every FHIR body it receives against the
//! HL7 R4 JSON Schema (a judge we did not write).
//!
//! Each test file includes it with `mod common;`; not every file uses every helper.
#![allow(dead_code)]

pub mod auth;
pub mod clients;
pub mod schema;
pub mod search;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// How long the binary may take to print its `listening on …` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub const FHIR_JSON: &str = "application/fhir+json";
pub const JSON_PATCH: &str = "application/json-patch+json";

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

/// Options for starting a server: extra command-line arguments, environment and TLS material.
#[derive(Default, Clone)]
pub struct ServerBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    tls: Option<Tls>,
    sqlite: bool,
}

/// PEM certificate and key the server is started with; the certificate is also trusted by
/// [`Server::client`].
#[derive(Clone)]
pub struct Tls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl ServerBuilder {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// On SQLite whatever `FP_TEST_BACKEND` says (a source for `migrate`).
    pub fn sqlite(mut self) -> Self {
        self.sqlite = true;
        self
    }

    pub fn tls(mut self, cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        self.tls = Some(Tls {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }

    /// Starts the server on a fresh database in a new temporary directory.
    pub fn start(self) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("fp-test-")
            .tempdir()
            .expect("create temp dir");
        let db_path = dir.path().join("db.sqlite");
        let mut server = Server {
            child: None,
            base: String::new(),
            dir,
            db_path,
            pg: if self.sqlite {
                None
            } else {
                PgDatabase::create_if_selected()
            },
            options: self,
            starts: 0,
            admin: None,
            shared: None,
        };
        // Every test talks through a real token: register an all-powerful custodian backend
        // client with its own key before the server starts.
        let key = auth::BackendKey::generate(
            server.dir.path(),
            ADMIN_CLIENT,
            jsonwebtoken::Algorithm::ES384,
        );
        let jwks = auth::BackendKey::jwks_path(
            server.dir.path(),
            ADMIN_CLIENT,
            jsonwebtoken::Algorithm::ES384,
        );
        server.cli(&[
            "client",
            "add",
            "--id",
            ADMIN_CLIENT,
            "--scope",
            "system/*.cruds",
            "--role",
            "custodian",
            "--jwks",
            jwks.to_str().unwrap(),
        ]);
        server.admin = Some(key);
        server.spawn();
        server
    }
}

/// A running `foster-passport serve` process. Killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    /// FHIR base URL as printed by the server, e.g. `http://127.0.0.1:40123/fhir`.
    pub base: String,
    dir: tempfile::TempDir,
    db_path: PathBuf,
    options: ServerBuilder,
    starts: u32,
    admin: Option<auth::BackendKey>,
    /// The server's own PostgreSQL database under `FP_TEST_BACKEND=postgres` (else SQLite at
    /// `db_path`); dropped after the process is killed.
    pg: Option<PgDatabase>,
    /// For a [`sibling`](Self::sibling): the first instance's database, and the address this
    /// instance listens on while announcing the first one's public base URL.
    shared: Option<Shared>,
}

struct Shared {
    database_url: String,
    /// A sibling's own address (it announces the first instance's base URL).
    listen: Option<std::net::SocketAddr>,
}

/// Where `FP_TEST_BACKEND=postgres` creates databases (trust auth; database `test` exists).
const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432/";

/// A fresh PostgreSQL database for one test server, dropped (best effort) with it.
pub struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    /// A new database when the suite runs against PostgreSQL.
    fn create_if_selected() -> Option<PgDatabase> {
        if std::env::var("FP_TEST_BACKEND").as_deref() != Ok("postgres") {
            return None;
        }
        Some(PgDatabase::create())
    }

    /// A new, empty database on the local PostgreSQL.
    pub fn create() -> PgDatabase {
        let name = format!("fp_t_{}", uuid::Uuid::new_v4().simple());
        pg_admin(format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!("FP_TEST_BACKEND=postgres: cannot create {name} on {PG_SERVER}: {e}")
        });
        PgDatabase {
            url: format!("{PG_SERVER}{name}"),
            name,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) = pg_admin(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

/// Runs an administrative statement on the `test` database, on a thread of its own because the
/// synchronous client may not block inside the tests' async runtime.
fn pg_admin(sql: String) -> Result<(), String> {
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&format!("{PG_SERVER}test"), postgres::NoTls)?;
        client.batch_execute(&sql)
    })
    .join()
    .map_err(|_| "admin thread panicked".to_string())?
    .map_err(|e| e.to_string())
}

fn run_cli(args: Vec<String>) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_foster-passport"))
        .args(&args)
        .env("FP_LOG", "warn")
        .output()
        .expect("run foster-passport");
    assert!(
        output.status.success(),
        "foster-passport {} failed: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// The custodian backend client every test server has.
pub const ADMIN_CLIENT: &str = "test-admin";

impl Server {
    /// Starts a plain HTTP server on a fresh database.
    pub fn start() -> Server {
        Server::builder().start()
    }

    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// `http://127.0.0.1:PORT` (the base without `/fhir`).
    pub fn origin(&self) -> String {
        self.base
            .strip_suffix("/fhir")
            .unwrap_or_else(|| panic!("base URL {} does not end in /fhir", self.base))
            .to_string()
    }

    /// Runs `foster-passport ARGS --database <this server's database>` (the admin CLI, which
    /// works while the server runs) and returns its stdout; panics when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--database".to_string(), self.database_url()]);
        run_cli(all)
    }

    /// Runs `foster-passport ARGS --database <this server's>` and returns what it did, whether
    /// it succeeded or not.
    pub fn cli_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_foster-passport"))
            .args(args)
            .args(["--database", &self.database_url()])
            .env("FP_LOG", "warn")
            .output()
            .expect("run foster-passport")
    }

    /// Runs `foster-passport ARGS` (no `--database`: `token`, `keygen`) and returns stdout.
    pub fn cli_plain(&self, args: &[&str]) -> String {
        run_cli(args.iter().map(|a| a.to_string()).collect())
    }

    pub fn database_url(&self) -> String {
        if let Some(shared) = &self.shared {
            return shared.database_url.clone();
        }
        if let Some(pg) = &self.pg {
            return pg.url.clone();
        }
        format!("sqlite://{}", self.db_path.display())
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join(format!("stderr-{}.log", self.starts))
    }

    /// Everything the current (or last) process wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let stderr_path = self.stderr_path();
        let stderr_file = File::create(&stderr_path).expect("create stderr log");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_foster-passport"));
        let listen = self
            .shared
            .as_ref()
            .and_then(|s| s.listen)
            .map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--database")
            .arg(self.database_url());
        if !self.database_url().starts_with("sqlite://") {
            // The server writes files "next to the database" (demo keys) in its working directory
            // when the database is not a file.
            cmd.current_dir(self.dir.path());
        }
        if let Some(tls) = &self.options.tls {
            let cert = self.dir.path().join("cert.pem");
            let key = self.dir.path().join("key.pem");
            std::fs::write(&cert, &tls.cert_pem).expect("write cert");
            std::fs::write(&key, &tls.key_pem).expect("write key");
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        cmd.args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .env_remove("FP_LISTEN")
            .env_remove("FP_DATABASE")
            .env_remove("FP_BASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_file));
        let mut child = cmd.spawn().expect("spawn foster-passport");

        // Read the first stdout line on a thread (with a timeout), then keep draining stdout so
        // the server never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let result = reader.read_line(&mut first).map(|_| first);
            let _ = tx.send(result);
            let mut sink = String::new();
            while matches!(reader.read_line(&mut sink), Ok(n) if n > 0) {
                sink.clear();
            }
        });

        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => self.fail_start(&mut child, &format!("reading stdout failed: {e}")),
            Err(_) => self.fail_start(
                &mut child,
                &format!("no `listening on` line within {STARTUP_TIMEOUT:?}"),
            ),
        };
        let line = line.trim_end();
        let Some(base) = line.strip_prefix("listening on ") else {
            self.fail_start(
                &mut child,
                &format!("first stdout line is {line:?}, expected `listening on <url>/fhir`"),
            )
        };
        let scheme = if self.options.tls.is_some() {
            "https://"
        } else {
            "http://"
        };
        if !base.starts_with(scheme) || !base.ends_with("/fhir") {
            self.fail_start(
                &mut child,
                &format!("listening line {line:?} should be `listening on {scheme}HOST:PORT/fhir`"),
            );
        }
        self.base = match self.shared.as_ref().and_then(|s| s.listen) {
            // Announced: the shared public base; reached: this instance's own port.
            Some(listen) => format!("{scheme}{listen}/fhir"),
            None => base.to_string(),
        };
        self.child = Some(child);
    }

    fn fail_start(&self, child: &mut Child, why: &str) -> ! {
        let _ = child.kill();
        let status = child.wait().ok();
        panic!(
            "foster-passport did not start: {why}\nexit status: {status:?}\n--- stderr ---\n{}",
            std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
        );
    }

    /// A client for this server (trusting its test certificate when TLS is on).
    pub fn client(&self) -> Client {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = &self.options.tls {
            let cert = reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).expect("test cert");
            builder = builder.tls_certs_only([cert]);
        }
        let mut client = Client::new(builder.build().expect("build reqwest client"), &self.base);
        client.auth = Auth::Backend(auth::TokenSource::new(
            self.admin.clone().expect("admin key"),
            self.token_url(),
            "system/*.cruds",
        ));
        client
    }

    /// A client with no token at all.
    pub fn anonymous_client(&self) -> Client {
        self.client().with_auth(Auth::None)
    }

    /// `{origin}/auth/token`, as the server announces it (a sibling's names the first
    /// instance, whose public base URL it shares).
    pub fn token_url(&self) -> String {
        format!("{}/auth/token", self.public_origin())
    }

    /// SIGKILL (no chance to clean up) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL server");
            child.wait().expect("reap server");
        }
    }

    /// Sends a signal by name (`TERM`, `INT`) through the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM, then wait up to 20 s for the process to exit on its own.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends the signal and waits up to 20 s for the process to exit.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
            self.kill9();
            panic!(
                "server did not exit within 20 s of SIG{signal}\n--- stderr ---\n{}",
                self.stderr()
            )
        })
    }

    /// Waits for the process to exit; `None` on timeout (the process keeps running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("server is not running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A second gateway instance on this server's database, as behind a load balancer: its
    /// own process, port and log, the same public base URL (so tokens and client assertions
    /// made for one are valid at both), clients and keys. [`base`](Self::base) is where this
    /// instance listens; bundle links name the shared public base. Drop it before `self`.
    pub fn sibling(&self) -> Server {
        self.sibling_with(&[])
    }

    /// [`sibling`](Self::sibling) with more `serve` arguments.
    pub fn sibling_with(&self, extra: &[&str]) -> Server {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("pick a free port");
        let mut options = self.options.clone();
        options
            .args
            .extend(["--base-url".to_string(), self.base.clone()]);
        options.args.extend(extra.iter().map(|a| a.to_string()));
        let mut sibling = Server {
            child: None,
            base: String::new(),
            dir: tempfile::Builder::new()
                .prefix("fp-test-sibling-")
                .tempdir()
                .expect("create temp dir"),
            db_path: self.db_path.clone(),
            pg: None,
            options,
            starts: 0,
            admin: self.admin.clone(),
            shared: Some(Shared {
                database_url: self.database_url(),
                listen: Some(listen),
            }),
        };
        sibling.spawn();
        sibling
    }

    /// A server like this one (options, admin client key) on another database that already
    /// holds this one's clients, such as a `migrate` copy. Drop it before `self`.
    pub fn successor(&self, database_url: &str) -> Server {
        let mut successor = Server {
            child: None,
            base: String::new(),
            dir: tempfile::Builder::new()
                .prefix("fp-test-successor-")
                .tempdir()
                .expect("create temp dir"),
            db_path: self.db_path.clone(),
            pg: None,
            options: self.options.clone(),
            starts: 0,
            admin: self.admin.clone(),
            shared: Some(Shared {
                database_url: database_url.to_string(),
                listen: None,
            }),
        };
        successor.spawn();
        successor
    }

    /// This server's public token endpoint (a sibling's is the first instance's).
    fn public_origin(&self) -> String {
        match &self.shared {
            Some(Shared {
                listen: Some(_), ..
            }) => self
                .options
                .args
                .iter()
                .skip_while(|a| *a != "--base-url")
                .nth(1)
                .and_then(|b| b.strip_suffix("/fhir"))
                .expect("a sibling is started with --base-url")
                .to_string(),
            _ => self.origin(),
        }
    }

    /// Starts the binary again on the same database (after [`kill9`](Self::kill9) or
    /// [`terminate`](Self::terminate); a still running process is killed first). The port
    /// changes: take a new [`client`](Self::client).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- foster-passport stderr (last 8 KiB) ---\n{}",
                tail(&self.stderr(), 8192)
            );
        }
    }
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

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// A reqwest client bound to a FHIR base URL. Every FHIR JSON body it receives is checked with
/// the HL7 R4 JSON Schema; a body the schema rejects makes the test panic.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub auth: Auth,
}

/// How a [`Client`] authenticates its requests.
#[derive(Clone)]
pub enum Auth {
    /// No Authorization header.
    None,
    /// This bearer token.
    Bearer(String),
    /// Backend-services tokens, fetched and renewed as needed.
    Backend(std::sync::Arc<auth::TokenSource>),
}

/// A response with its body read and, when it is JSON, parsed.
#[derive(Debug, Clone)]
pub struct Resp {
    pub method: Method,
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// Parsed JSON body; `Value::Null` when the body is empty or not JSON.
    pub body: Value,
}

/// A request being built; finish it with [`send`](Req::send).
pub struct Req {
    client: Client,
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Vec<u8>>,
}

impl Client {
    pub fn new(http: reqwest::Client, base: &str) -> Client {
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth: Auth::None,
        }
    }

    /// The same client authenticating another way.
    pub fn with_auth(mut self, auth: Auth) -> Client {
        self.auth = auth;
        self
    }

    /// The same client with a fixed bearer token.
    pub fn with_token(self, token: &str) -> Client {
        self.with_auth(Auth::Bearer(token.to_string()))
    }

    /// The bearer token this client would send now.
    pub async fn token(&self) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Bearer(t) => Some(t.clone()),
            Auth::Backend(source) => Some(source.token(&self.http).await),
        }
    }

    /// Resolves `path` against the FHIR base; absolute URLs are used as they are and paths
    /// starting with `/` are taken from the server origin (`/healthz`).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            let origin = self.base.strip_suffix("/fhir").unwrap_or(&self.base);
            format!("{origin}{path}")
        } else if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path)
        }
    }

    pub fn request(&self, method: Method, path: &str) -> Req {
        Req {
            client: self.clone(),
            method,
            url: self.url(path),
            headers: vec![(reqwest::header::ACCEPT, HeaderValue::from_static(FHIR_JSON))],
            body: None,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path).send().await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::POST, path).json(body).send().await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::PUT, path).json(body).send().await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path).send().await
    }

    /// PATCH with a JSON Patch document (`application/json-patch+json`).
    pub async fn patch(&self, path: &str, patch: &Value) -> Resp {
        self.request(Method::PATCH, path)
            .body(JSON_PATCH, to_bytes(patch))
            .send()
            .await
    }

    /// Creates a resource and returns the stored resource as read back (asserting 201).
    pub async fn create(&self, resource: &Value) -> Value {
        let ty = resource_type(resource);
        let resp = self.post_json(ty, resource).await.expect_status(201);
        let id = resp.location_id().unwrap_or_else(|| {
            panic!(
                "201 without a usable Location header: {:?}",
                resp.header("location")
            )
        });
        self.read(ty, &id).await
    }

    /// Reads `{type}/{id}` asserting 200.
    pub async fn read(&self, ty: &str, id: &str) -> Value {
        self.get(&format!("{ty}/{id}"))
            .await
            .expect_status(200)
            .body
    }

    /// Creates or updates `{type}/{id}` with PUT, asserting 200 or 201.
    pub async fn upsert(&self, resource: &Value) -> Resp {
        let ty = resource_type(resource);
        let id = resource["id"]
            .as_str()
            .expect("resource needs an id for PUT");
        let resp = self.put_json(&format!("{ty}/{id}"), resource).await;
        assert!(
            resp.status == 200 || resp.status == 201,
            "PUT {ty}/{id}: expected 200/201, got {}\n{}",
            resp.status,
            resp.text
        );
        resp
    }
}

impl Req {
    /// Sends to this URL instead (an absolute one).
    pub fn url(mut self, url: &str) -> Self {
        self.url = url.to_string();
        self
    }

    /// Sets a header, replacing one of the same name (`Accept` defaults to FHIR JSON).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        self.headers.retain(|(n, _)| n != name);
        self.headers
            .push((name, HeaderValue::from_str(value).expect("header value")));
        self
    }

    /// JSON body with `Content-Type: application/fhir+json`.
    pub fn json(self, body: &Value) -> Self {
        self.body(FHIR_JSON, to_bytes(body))
    }

    /// Raw body with the given Content-Type (an empty `content_type` sends none).
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        if !content_type.is_empty() {
            self = self.header("content-type", content_type);
        }
        self.body = Some(body.into());
        self
    }

    /// Sends the request; panics when a FHIR body fails the R4 JSON Schema.
    pub async fn send(self) -> Resp {
        let resp = self.send_unchecked().await;
        if let Err(problems) = resp.check_schema() {
            panic!(
                "{} {} -> {}: response body fails the HL7 R4 JSON Schema:\n{}\n--- body ---\n{}",
                resp.method,
                resp.url,
                resp.status,
                problems,
                tail(&resp.text, 8000)
            );
        }
        resp
    }

    /// Sends the request without judging the body (callers check [`Resp::check_schema`]).
    pub async fn send_unchecked(self) -> Resp {
        let mut builder = self.client.http.request(self.method.clone(), &self.url);
        let explicit = self
            .headers
            .iter()
            .any(|(n, _)| *n == reqwest::header::AUTHORIZATION);
        if !explicit && let Some(token) = self.client.token().await {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = self.body {
            builder = builder.body(body);
        }
        let response = builder
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {} failed: {e:?}", self.method, self.url));
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{} {}: reading body failed: {e:?}", self.method, self.url));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let is_json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let body = if is_json && !text.trim().is_empty() {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!(
                    "{} {} -> {status}: body labelled JSON does not parse: {e}\n{}",
                    self.method,
                    self.url,
                    tail(&text, 4000)
                )
            })
        } else {
            Value::Null
        };
        Resp {
            method: self.method,
            url: self.url,
            status,
            headers,
            text,
            body,
        }
    }
}

impl Resp {
    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Resp {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{} {}: expected {status}, got {}\n--- body ---\n{}",
            self.method,
            self.url,
            self.status,
            tail(&self.text, 4000)
        );
        self
    }

    /// Asserts an error status and that the body is an OperationOutcome with an error issue.
    #[track_caller]
    pub fn expect_outcome(self, status: u16) -> Resp {
        let resp = self.expect_status(status);
        resp.assert_operation_outcome();
        resp
    }

    /// Whether the body is an OperationOutcome with at least one error or fatal issue.
    pub fn check_outcome(&self) -> Result<(), String> {
        if self.body["resourceType"] != "OperationOutcome" {
            return Err(format!(
                "not an OperationOutcome: {}",
                tail(&self.text, 2000)
            ));
        }
        let issues = self.body["issue"].as_array().cloned().unwrap_or_default();
        if !issues
            .iter()
            .any(|i| i["severity"] == "error" || i["severity"] == "fatal")
        {
            return Err(format!("no error issue: {}", tail(&self.text, 2000)));
        }
        Ok(())
    }

    /// Asserts that the body is an OperationOutcome with at least one error or fatal issue.
    #[track_caller]
    pub fn assert_operation_outcome(&self) {
        assert_eq!(
            self.body["resourceType"], "OperationOutcome",
            "{} {} -> {}: expected an OperationOutcome body, got:\n{}",
            self.method, self.url, self.status, self.text
        );
        let issues = self.body["issue"].as_array().cloned().unwrap_or_default();
        assert!(
            issues
                .iter()
                .any(|i| i["severity"] == "error" || i["severity"] == "fatal"),
            "{} {} -> {}: OperationOutcome has no error issue:\n{}",
            self.method,
            self.url,
            self.status,
            self.text
        );
    }

    /// All of the OperationOutcome's issue text (diagnostics, details, expression) in one
    /// lowercase string, to check that it names what is wrong.
    pub fn outcome_text(&self) -> String {
        let mut out = String::new();
        for issue in self.body["issue"].as_array().into_iter().flatten() {
            out.push_str(&issue.to_string());
            out.push('\n');
        }
        out.to_lowercase()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location").or(self.header("content-location"))
    }

    /// The logical id in a `…/{type}/{id}[/_history/{vid}]` Location header.
    pub fn location_id(&self) -> Option<String> {
        parse_location(self.location()?).map(|l| l.id)
    }

    /// Schema-checks every FHIR resource in the body (see [`schema::check_resource`]).
    pub fn check_schema(&self) -> Result<(), String> {
        if self.body.is_null() {
            return Ok(());
        }
        let fhir = self
            .header("content-type")
            .is_some_and(|ct| ct.starts_with(FHIR_JSON));
        if self.body.get("resourceType").is_none() {
            if fhir {
                return Err("application/fhir+json body has no resourceType".into());
            }
            return Ok(());
        }
        let problems = schema::check_resource(&self.body);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// Parts of a Location such as `http://h/fhir/Patient/123/_history/2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub resource_type: String,
    pub id: String,
    pub version: Option<String>,
}

pub fn parse_location(location: &str) -> Option<Location> {
    let path = location.split(['?', '#']).next()?;
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let n = parts.len();
    if n >= 4 && parts[n - 2] == "_history" {
        return Some(Location {
            resource_type: parts[n - 4].to_string(),
            id: parts[n - 3].to_string(),
            version: Some(parts[n - 1].to_string()),
        });
    }
    if n >= 2 {
        return Some(Location {
            resource_type: parts[n - 2].to_string(),
            id: parts[n - 1].to_string(),
            version: None,
        });
    }
    None
}

pub fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

pub fn resource_type(resource: &Value) -> &str {
    resource["resourceType"]
        .as_str()
        .expect("resource has a resourceType")
}

/// Percent-encodes a query parameter value (`|`, `:`, `+` …).
pub fn enc(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fresh unique token for identifiers so tests never collide.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A small valid Patient with a unique identifier in system `urn:fp-test`.
pub fn patient(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{ "system": "urn:fp-test", "value": unique("p") }],
        "active": true,
        "name": [{ "family": family, "given": ["Test"] }],
        "gender": "female",
        "birthDate": "2011-04-05"
    })
}

/// The resource with server-owned `meta.versionId` and `meta.lastUpdated` removed (and `meta`
/// dropped when nothing else is left in it), for comparing with what was sent.
pub fn without_server_meta(resource: &Value) -> Value {
    let mut out = resource.clone();
    if let Some(meta) = out.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            out.as_object_mut().unwrap().remove("meta");
        }
    }
    out
}

/// JSON paths where `a` and `b` differ (at most `limit`), for readable failure messages.
pub fn json_diff(a: &Value, b: &Value, limit: usize) -> Vec<String> {
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>, limit: usize) {
        if out.len() >= limit || a == b {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = format!("{path}/{k}");
                    match (x.get(k), y.get(k)) {
                        (Some(u), Some(v)) => walk(u, v, &p, out, limit),
                        (Some(u), None) => out.push(format!("{p}: only in expected: {u}")),
                        (None, Some(v)) => out.push(format!("{p}: only in actual: {v}")),
                        (None, None) => {}
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (u, v)) in x.iter().zip(y).enumerate() {
                    walk(u, v, &format!("{path}/{i}"), out, limit);
                }
            }
            _ => out.push(format!("{path}: expected {a}, got {b}")),
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out, limit);
    out
}

/// Asserts `actual` equals `expected` apart from server-owned meta, with a path-level diff.
#[track_caller]
pub fn assert_same_content(expected: &Value, actual: &Value) {
    let e = without_server_meta(expected);
    let a = without_server_meta(actual);
    if e != a {
        panic!(
            "stored resource differs from what was sent:\n{}",
            json_diff(&e, &a, 20).join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `../shared/data` beside the checkout.
pub fn shared_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

pub fn load_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// A JSON file from `tests/fixtures/`.
pub fn fixture(name: &str) -> Value {
    load_json(&fixtures_dir().join(name))
}

/// A JSON file from `../shared/data/`.
pub fn shared_fixture(relative: &str) -> Value {
    load_json(&shared_data_dir().join(relative))
}

// ---------------------------------------------------------------------------------------------
// Store snapshots
// ---------------------------------------------------------------------------------------------

/// Everything the store holds as seen through the API: every version in the system history
/// (identified by type, id, version and method) and the number of versions per resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub versions: BTreeSet<String>,
    pub per_type: BTreeMap<String, usize>,
}

impl Snapshot {
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

/// Resource types the snapshot also counts through type-level history.
pub const SNAPSHOT_TYPES: &[&str] = &["Patient", "Observation", "Organization", "Bundle"];

impl Client {
    /// Follows `next` links from `first`, returning every entry of every page. Panics on
    /// duplicate pages, a loop, or more than 10,000 pages.
    pub async fn all_pages(&self, first: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut url = self.url(first);
        let mut seen = BTreeSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(url.clone()), "paging loops back to {url}");
            let page = self.get(&url).await.expect_status(200).body;
            assert_eq!(page["resourceType"], "Bundle", "page {url} is not a Bundle");
            entries.extend(page["entry"].as_array().cloned().unwrap_or_default());
            match next_link(&page) {
                Some(next) => url = next,
                None => return entries,
            }
        }
        panic!("more than 10,000 pages from {first}");
    }

    /// Reads the whole store through system and type history.
    pub async fn snapshot(&self) -> Snapshot {
        let mut versions = BTreeSet::new();
        for entry in self.all_pages("_history?_count=100").await {
            let key = history_key(&entry);
            // The audit trail grows with every request, the snapshot's own included.
            if key.starts_with("AuditEvent/") {
                continue;
            }
            assert!(versions.insert(key.clone()), "system history repeats {key}");
        }
        let mut per_type = BTreeMap::new();
        for ty in SNAPSHOT_TYPES {
            let n = self
                .all_pages(&format!("{ty}/_history?_count=100"))
                .await
                .len();
            per_type.insert(ty.to_string(), n);
        }
        Snapshot { versions, per_type }
    }

    /// Asserts that the store still holds exactly `before` (for rejected requests).
    pub async fn assert_unchanged(&self, before: &Snapshot, what: &str) {
        let after = self.snapshot().await;
        if &after != before {
            let added: Vec<_> = after.versions.difference(&before.versions).collect();
            let removed: Vec<_> = before.versions.difference(&after.versions).collect();
            panic!(
                "{what}: the store changed although the request was rejected\n\
                 added versions: {added:?}\nremoved versions: {removed:?}\n\
                 per type before {:?}, after {:?}",
                before.per_type, after.per_type
            );
        }
    }
}

/// The `next` link of a Bundle, if any.
pub fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

/// Identifies one history entry: `Type/id/_history/vid METHOD`.
pub fn history_key(entry: &Value) -> String {
    let method = entry["request"]["method"].as_str().unwrap_or("?");
    if let Some(resource) = entry.get("resource") {
        return format!(
            "{}/{}/_history/{} {method}",
            resource["resourceType"].as_str().unwrap_or("?"),
            resource["id"].as_str().unwrap_or("?"),
            resource["meta"]["versionId"].as_str().unwrap_or("?"),
        );
    }
    // A deleted version carries no resource: identify it by request URL and ETag.
    let url = entry["request"]["url"]
        .as_str()
        .or(entry["fullUrl"].as_str())
        .unwrap_or("?");
    let etag = entry["response"]["etag"].as_str().unwrap_or("?");
    format!("{url} {etag} {method}")
}

/// `W/"3"` → `3`.
pub fn etag_version(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

/// Checks the FHIR id rule `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

// ---------------------------------------------------------------------------------------------
// Third-party test data
// ---------------------------------------------------------------------------------------------

/// The extracted official R4 examples (npm `hl7.fhir.r4.examples@4.0.1`, its `package/`
/// folder): `$FP_R4_EXAMPLES_DIR` when set, otherwise fetched once with npm into
/// `target/third-party/r4-examples/`. Panics with what went wrong, never skips.
pub fn r4_examples_dir() -> PathBuf {
    let dir = match std::env::var_os("FP_R4_EXAMPLES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/third-party/r4-examples");
            if !dir.join("package/Patient-example.json").is_file() {
                std::fs::create_dir_all(&dir).expect("create target/third-party/r4-examples");
                let run = |program: &str, args: &[&str]| {
                    let status = Command::new(program)
                        .args(args)
                        .current_dir(&dir)
                        .status()
                        .unwrap_or_else(|e| panic!("the R4 example corpus needs `{program}`: {e}"));
                    assert!(
                        status.success(),
                        "`{program} {}` failed: {status}",
                        args.join(" ")
                    );
                };
                run("npm", &["pack", "--silent", "hl7.fhir.r4.examples@4.0.1"]);
                run("tar", &["xzf", "hl7.fhir.r4.examples-4.0.1.tgz"]);
            }
            dir
        }
    };
    for candidate in [dir.join("package"), dir.clone()] {
        if candidate.join("Patient-example.json").is_file() {
            return candidate;
        }
    }
    panic!(
        "{} holds no extracted hl7.fhir.r4.examples package (no Patient-example.json)",
        dir.display()
    );
}

/// The third-party FHIRPath engine, npm `fhirpath@5.2.0` (pinned: later versions need a UCUM
/// package the registry lacks), installed once into `target/third-party/fhirpath-node/`;
/// returns the directory holding `node_modules/fhirpath`. Panics without npm, never skips.
pub fn fhirpath_js() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/third-party/fhirpath-node");
    let package = dir.join("node_modules/fhirpath/package.json");
    let installed = std::fs::read_to_string(&package)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .is_some_and(|p| p["version"] == "5.2.0");
    if !installed {
        std::fs::create_dir_all(&dir).expect("create target/third-party/fhirpath-node");
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("fhirpath@5.2.0")
            .status()
            .unwrap_or_else(|e| {
                panic!("the FHIRPath oracle needs npm to install fhirpath@5.2.0: {e}")
            });
        assert!(
            status.success() && package.exists(),
            "`npm install --prefix {} fhirpath@5.2.0` failed ({status}); the oracle cannot run",
            dir.display()
        );
    }
    dir
}

/// Run a node script of `tests/fixtures/` with fhirpath.js's folder as its argument, `input` on
/// stdin, and its stdout parsed as one JSON answer list per input item.
pub fn run_node_json(script: &Path, node_dir: &Path, input: Vec<u8>) -> Vec<Vec<Value>> {
    use std::io::Write;
    let name = script
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut child = Command::new("node")
        .arg(script)
        .arg(node_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} needs node to run fhirpath.js: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("run node");
    writer.join().expect("stdin writer").expect("write to node");
    assert!(
        output.status.success(),
        "node {name} failed: {}",
        output.status
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{name} output is not JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver (Subscription notifications)
// ---------------------------------------------------------------------------------------------

/// What a [`webhook_receiver`] got: the path's last segment, headers and body of each POST.
pub type Received =
    std::sync::Arc<parking_lot::Mutex<Vec<(String, axum::http::HeaderMap, String)>>>;

/// An HTTP server on a free loopback port taking POSTs at `/hook/{name}`; returns its
/// `http://…/hook` base and what it receives.
pub async fn webhook_receiver() -> (String, Received) {
    use axum::extract::{Path as UrlPath, State};
    let got: Received = Default::default();
    let app = axum::Router::new()
        .route(
            "/hook/{name}",
            axum::routing::post(
                |State(got): State<Received>,
                 UrlPath(name): UrlPath<String>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    got.lock().push((name, headers, body));
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}
