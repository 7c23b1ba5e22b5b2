//! A deliberately small HTTP/1.1 keep-alive client for the timed workloads. Client and server
//! share two cores, so every microsecond the client spends is taken from the server: this one
//! writes a request from a reused buffer in one syscall, reads the status line and the few
//! headers it needs, and skips the body (Content-Length or chunked) without copying or parsing
//! it, unless asked to keep its start (for error messages) or all of it (for a page whose `next`
//! link is followed). It speaks plain HTTP only; loading and set-up go through reqwest.

use std::io::{self, Write as _};
use std::net::SocketAddr;

use reqwest::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Result;
use super::http::{FHIR_JSON, Target};

/// Where and how to send raw requests: derived once from a [`Target`].
pub struct Endpoint {
    addr: SocketAddr,
    /// `Host` header value.
    host: String,
    /// Path of the FHIR base, e.g. `/fhir` (empty when the base is the root).
    base_path: String,
    /// `Authorization` header value, if any; replaced when the token is renewed.
    authorization: std::sync::RwLock<Option<Vec<u8>>>,
}

impl Endpoint {
    pub async fn new(target: &Target) -> Result<Self> {
        let url = target.url("");
        if url.scheme() != "http" {
            return Err(format!("workloads need a plain http:// base, not {url}").into());
        }
        let host = url.host_str().ok_or("base URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        Ok(Self {
            addr,
            host: match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            },
            base_path: url.path().trim_end_matches('/').to_owned(),
            authorization: std::sync::RwLock::new(
                target.authorization().map(|v| v.as_bytes().to_vec()),
            ),
        })
    }

    /// Send the `Authorization` that `target` carries now (after a token renewal).
    pub fn refresh_authorization(&self, target: &Target) {
        *self.authorization.write().expect("lock") =
            target.authorization().map(|v| v.as_bytes().to_vec());
    }

    /// Write a complete request for `{base}/{path}` into `out` (cleared first).
    pub fn write_request(
        &self,
        out: &mut Vec<u8>,
        method: &str,
        path: &str,
        if_match: Option<&HeaderValue>,
        body: Option<&[u8]>,
    ) {
        out.clear();
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.base_path.as_bytes());
        out.push(b'/');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\nAccept: ");
        out.extend_from_slice(FHIR_JSON.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(auth) = &*self.authorization.read().expect("lock") {
            out.extend_from_slice(b"Authorization: ");
            out.extend_from_slice(auth);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(etag) = if_match {
            out.extend_from_slice(b"If-Match: ");
            out.extend_from_slice(etag.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(body) = body {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(FHIR_JSON.as_bytes());
            // Writing to a Vec cannot fail.
            let _ = write!(out, "\r\nContent-Length: {}\r\n\r\n", body.len());
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl Endpoint {
    /// The path of `url` (a link the server returned) relative to the base, with its query:
    /// what [`Endpoint::write_request`] takes. `None` if the link is not under the base path.
    pub fn relative_path(&self, url: &str) -> Option<String> {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(_) => reqwest::Url::parse("http://base.invalid/")
                .ok()?
                .join(url)
                .ok()?,
        };
        let path = parsed
            .path()
            .strip_prefix(self.base_path.as_str())?
            .trim_start_matches('/');
        Some(match parsed.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        })
    }
}

pub struct Reply {
    pub status: u16,
    /// The `ETag` header, when asked for.
    pub etag: Option<HeaderValue>,
    /// The body up to the length asked for, when asked for.
    pub body: Option<Vec<u8>>,
}

/// One keep-alive connection, reopened after the server closes it or an error.
pub struct Connection {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

const BUF: usize = 64 * 1024;

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Connection {
    pub fn new() -> Self {
        Self {
            stream: None,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
        }
    }

    /// Send `request` (from [`Endpoint::write_request`]) and read the whole response, keeping
    /// the first `keep_body` bytes of its body (none for 0).
    pub async fn exchange(
        &mut self,
        endpoint: &Endpoint,
        request: &[u8],
        want_etag: bool,
        keep_body: usize,
    ) -> io::Result<Reply> {
        let result = self
            .try_exchange(endpoint, request, want_etag, keep_body)
            .await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn try_exchange(
        &mut self,
        endpoint: &Endpoint,
        request: &[u8],
        want_etag: bool,
        keep_body: usize,
    ) -> io::Result<Reply> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(endpoint.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.start = 0;
            self.end = 0;
        }
        self.stream
            .as_mut()
            .expect("connected above")
            .write_all(request)
            .await?;

        // Status line and headers.
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                break self.start + i + 4;
            }
            self.fill().await?;
        };
        let head = &self.buf[self.start..head_end];
        let status = head
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| head.starts_with(b"HTTP/1."))
            .ok_or_else(|| bad("malformed status line"))?;
        let (mut length, mut chunked, mut close, mut etag) = (None, false, false, None);
        for line in head.split(|&b| b == b'\n').skip(1) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                let text = std::str::from_utf8(value).map_err(|_| bad("bad Content-Length"))?;
                length = Some(
                    text.parse::<usize>()
                        .map_err(|_| bad("bad Content-Length"))?,
                );
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.to_ascii_lowercase().ends_with(b"chunked");
            } else if name.eq_ignore_ascii_case(b"connection") {
                close = value.eq_ignore_ascii_case(b"close");
            } else if want_etag && name.eq_ignore_ascii_case(b"etag") {
                etag = HeaderValue::from_bytes(value).ok();
            }
        }
        self.start = head_end;

        let mut body = (keep_body > 0).then(Vec::new);
        let keep = keep_body;
        if status == 204 || status == 304 || (100..200).contains(&status) {
            // No body.
        } else if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                        break self.start + i;
                    }
                    self.fill().await?;
                };
                let line = &self.buf[self.start..line_end];
                let hex = line
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                let size = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| usize::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("bad chunk size"))?;
                self.start = line_end + 2;
                if size == 0 {
                    // Trailers, up to an empty line.
                    loop {
                        let line_end = loop {
                            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                                break self.start + i;
                            }
                            self.fill().await?;
                        };
                        let empty = line_end == self.start;
                        self.start = line_end + 2;
                        if empty {
                            break;
                        }
                    }
                    break;
                }
                self.skip(size, body.as_mut(), keep).await?;
                self.skip(2, None, 0).await?;
            }
        } else if let Some(n) = length {
            self.skip(n, body.as_mut(), keep).await?;
        } else {
            // Body runs to the end of the connection.
            loop {
                self.skip(self.end - self.start, body.as_mut(), keep)
                    .await?;
                if !self.read_more().await? {
                    break;
                }
            }
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok(Reply { status, etag, body })
    }

    /// Consume `n` body bytes, keeping them in `keep` while it holds fewer than `limit`.
    async fn skip(
        &mut self,
        mut n: usize,
        mut keep: Option<&mut Vec<u8>>,
        limit: usize,
    ) -> io::Result<()> {
        loop {
            let take = n.min(self.end - self.start);
            if let Some(keep) = keep.as_deref_mut() {
                let room = limit.saturating_sub(keep.len()).min(take);
                keep.extend_from_slice(&self.buf[self.start..self.start + room]);
            }
            self.start += take;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Read more bytes; end of stream is an error.
    async fn fill(&mut self) -> io::Result<()> {
        if self.read_more().await? {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// Read more bytes into the buffer; `false` at end of stream.
    async fn read_more(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                // A header block larger than the buffer.
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let stream = self.stream.as_mut().ok_or_else(|| bad("not connected"))?;
        let n = stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
