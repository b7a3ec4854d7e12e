//! A client for Ray's Jobs REST API on the dashboard, as Ray 2.60 serves it
//! (`ray/dashboard/modules/job/job_head.py`), and the working-dir upload that
//! `ray job submit --working-dir` does (`ray/dashboard/modules/dashboard_sdk.py`).
//!
//! Endpoints used:
//! - `POST /api/jobs/` with a `JobSubmitRequest` (None fields left out, as the SDK does) →
//!   `{"submission_id": ..., "job_id": ...}`;
//! - `GET /api/jobs/{id}` → the job's details (`status`, `message`, `driver_exit_code`, ...);
//! - `GET /api/jobs/{id}/logs` → `{"logs": "<the whole driver log so far>"}` (the `/logs/tail`
//!   variant is a WebSocket; we poll this one and print only what is new);
//! - `POST /api/jobs/{id}/stop` → `{"stopped": bool}`;
//! - `GET` / `PUT /api/packages/{protocol}/{name}`: does the package exist (200/404), upload it.
//!
//! Auth: with token auth on, every request carries `Authorization: Bearer <token>` (Ray's
//! `authentication_constants.py`). Ray answers 401 when the header is missing and 403 when the
//! token is wrong.
//!
//! Working dir packages (`ray/_private/runtime_env/packaging.py`): a zip whose entries are paths
//! relative to the directory, with no top-level directory (`include_parent_dir=False` for
//! working dirs; a `gcs://` zip is unpacked with `remove_top_level_directory=False`), file modes
//! in the upper 16 bits of the external attributes (Ray restores them with `chmod`), named
//! `gcs://_ray_pkg_<hash>.zip`. Ray's name is a hash of the contents; ours is too (SHA-256 of the
//! paths, modes and contents), so an unchanged directory is not uploaded twice. The dashboard
//! takes request bodies of at most 100 MiB (`DASHBOARD_CLIENT_MAX_SIZE`), which bounds the package.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Files larger than this are left out of a working dir package, with a warning.
pub const FILE_SKIP_BYTES: u64 = 100 * 1024 * 1024;
/// The dashboard refuses request bodies larger than this with 413 (Ray's
/// `DASHBOARD_CLIENT_MAX_SIZE`; checked with 2.60: 100 MiB is taken, one byte more is not).
pub const PACKAGE_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Names never packaged, at any depth: Ray 2.60's `RAY_RUNTIME_ENV_DEFAULT_EXCLUDES`.
pub const DEFAULT_EXCLUDES: [&str; 4] = [".git", ".venv", "venv", "__pycache__"];
/// Ray's prefix for content-addressed packages (`RAY_PKG_PREFIX`).
pub const PACKAGE_PREFIX: &str = "_ray_pkg_";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("cannot reach the Ray dashboard at {url}: {why}")]
    Unreachable { url: String, why: String },
    /// 401 (no token sent) or 403 (a wrong token).
    #[error("the Ray dashboard at {url} refused the request (HTTP {status}): {body}")]
    Unauthorized {
        url: String,
        status: u16,
        body: String,
    },
    /// Any other non-2xx answer; `body` is Ray's text, verbatim.
    #[error("{method} {url} failed with HTTP {status}: {body}")]
    Api {
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    #[error("unexpected answer from {url}: {why}")]
    BadResponse { url: String, why: String },
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: std::io::Error },
    #[error("{0}")]
    Package(String),
}

impl JobsError {
    /// True for failures that may pass (the dashboard busy or restarting), false for answers
    /// that will not change (refused token, unknown job, bad request).
    pub fn is_transient(&self) -> bool {
        match self {
            JobsError::Unreachable { .. } | JobsError::BadResponse { .. } => true,
            JobsError::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JobsError + '_ {
    move |why| JobsError::Io {
        path: path.to_path_buf(),
        why,
    }
}

/// A job's status (`JobStatus` in `ray/dashboard/modules/job/common.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Running,
    Stopped,
    Succeeded,
    Failed,
    /// A status this client does not know (a newer Ray); never terminal.
    Other(String),
}

impl JobStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "PENDING" => JobStatus::Pending,
            "RUNNING" => JobStatus::Running,
            "STOPPED" => JobStatus::Stopped,
            "SUCCEEDED" => JobStatus::Succeeded,
            "FAILED" => JobStatus::Failed,
            other => JobStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Running => "RUNNING",
            JobStatus::Stopped => "STOPPED",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Other(s) => s,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobStatus::Stopped | JobStatus::Succeeded | JobStatus::Failed
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(JobStatus::parse(&String::deserialize(d)?))
    }
}

/// The parts of `GET /api/jobs/{id}` (`JobDetails`) that we use.
#[derive(Debug, Clone, Deserialize)]
pub struct JobInfo {
    pub status: JobStatus,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub submission_id: Option<String>,
    #[serde(default)]
    pub driver_exit_code: Option<i64>,
}

/// `runtime_env` of a submission.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RuntimeEnv {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
}

/// The body of `POST /api/jobs/` (`JobSubmitRequest`); unset fields are left out, as Ray's SDK
/// does, so that older servers accept it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubmitRequest {
    pub entrypoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    pub runtime_env: RuntimeEnv,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_gpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_memory: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub entrypoint_resources: BTreeMap<String, f64>,
}

// Ray's `ray job submit` joins the entrypoint with `shlex.join` and the job supervisor runs it
// with `shell=True`; our quoting matches shlex exactly.
pub use crate::scheduler::{shell_join, shell_quote};

/// Why a path of a working dir was left out of its package.
#[derive(Debug, Clone, PartialEq)]
pub enum Skipped {
    TooLarge { path: PathBuf, bytes: u64 },
    BrokenLink { path: PathBuf },
    LinkLoop { path: PathBuf },
    NotUtf8 { path: PathBuf },
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::TooLarge { path, bytes } => write!(
                f,
                "left out {} ({}): files over {} are not uploaded; put large data on a shared filesystem",
                path.display(),
                human_bytes(*bytes),
                human_bytes(FILE_SKIP_BYTES)
            ),
            Skipped::BrokenLink { path } => {
                write!(f, "left out {}: a symbolic link to nothing", path.display())
            }
            Skipped::LinkLoop { path } => write!(
                f,
                "left out {}: a symbolic link to a directory that contains it",
                path.display()
            ),
            Skipped::NotUtf8 { path } => write!(
                f,
                "left out {}: its name is not UTF-8, which a zip entry needs",
                path.display()
            ),
        }
    }
}

/// `512 B`, `3.2 KiB`, `100.0 MiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.1} KiB", b / K)
    } else if b < K * K * K {
        format!("{:.1} MiB", b / (K * K))
    } else {
        format!("{:.1} GiB", b / (K * K * K))
    }
}

#[derive(Debug, Clone)]
enum EntryKind {
    Dir,
    File { mode: u32, bytes: u64 },
}

#[derive(Debug, Clone)]
struct Entry {
    /// Path inside the zip, `/`-separated, relative to the working dir.
    name: String,
    path: PathBuf,
    kind: EntryKind,
}

/// A working dir, scanned and hashed: what its zip will hold and the package's name.
#[derive(Debug, Clone)]
pub struct DirPackage {
    pub root: PathBuf,
    entries: Vec<Entry>,
    pub skipped: Vec<Skipped>,
    /// `_ray_pkg_<32 hex digits>.zip`
    pub name: String,
}

impl DirPackage {
    /// Walks `dir` (following symbolic links, as Ray does), leaving out [`DEFAULT_EXCLUDES`]
    /// and files larger than [`FILE_SKIP_BYTES`], and hashes what remains.
    pub fn scan(dir: &Path) -> Result<Self, JobsError> {
        let meta = fs::metadata(dir).map_err(io_err(dir))?;
        if !meta.is_dir() {
            return Err(JobsError::Package(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let root = fs::canonicalize(dir).map_err(io_err(dir))?;
        let mut pkg = DirPackage {
            root: root.clone(),
            entries: vec![],
            skipped: vec![],
            name: String::new(),
        };
        let mut ancestors = vec![root.clone()];
        pkg.walk(&root, "", &mut ancestors)?;
        pkg.name = pkg.hash()?;
        Ok(pkg)
    }

    fn walk(
        &mut self,
        dir: &Path,
        prefix: &str,
        ancestors: &mut Vec<PathBuf>,
    ) -> Result<(), JobsError> {
        let mut children: Vec<_> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir))?;
        children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for file_name in children {
            let path = dir.join(&file_name);
            let Some(name) = file_name.to_str() else {
                self.skipped.push(Skipped::NotUtf8 { path });
                continue;
            };
            if DEFAULT_EXCLUDES.contains(&name) {
                continue;
            }
            let zip_name = format!("{prefix}{name}");
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(why) => {
                    if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                        self.skipped.push(Skipped::BrokenLink { path });
                        continue;
                    }
                    return Err(JobsError::Io { path, why });
                }
            };
            if meta.is_dir() {
                let real = fs::canonicalize(&path).map_err(io_err(&path))?;
                if ancestors.contains(&real) {
                    self.skipped.push(Skipped::LinkLoop { path });
                    continue;
                }
                self.entries.push(Entry {
                    name: format!("{zip_name}/"),
                    path: path.clone(),
                    kind: EntryKind::Dir,
                });
                ancestors.push(real);
                self.walk(&path, &format!("{zip_name}/"), ancestors)?;
                ancestors.pop();
            } else if meta.is_file() {
                if meta.len() > FILE_SKIP_BYTES {
                    self.skipped.push(Skipped::TooLarge {
                        path,
                        bytes: meta.len(),
                    });
                    continue;
                }
                self.entries.push(Entry {
                    name: zip_name,
                    path,
                    kind: EntryKind::File {
                        mode: meta.permissions().mode() & 0o7777,
                        bytes: meta.len(),
                    },
                });
            }
            // Sockets, FIFOs and devices are left out, as Ray does.
        }
        Ok(())
    }

    /// SHA-256 over every entry's kind, name, mode and contents, in name order.
    fn hash(&self) -> Result<String, JobsError> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        for e in &self.entries {
            match e.kind {
                EntryKind::Dir => {
                    h.update(b"D");
                    h.update(e.name.as_bytes());
                    h.update([0]);
                }
                EntryKind::File { mode, .. } => {
                    h.update(b"F");
                    h.update(e.name.as_bytes());
                    h.update([0]);
                    h.update(mode.to_le_bytes());
                    let mut f = fs::File::open(&e.path).map_err(io_err(&e.path))?;
                    let mut total: u64 = 0;
                    loop {
                        let n = f.read(&mut buf).map_err(io_err(&e.path))?;
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                        h.update(&buf[..n]);
                    }
                    h.update(total.to_le_bytes());
                }
            }
        }
        let digest = h.finalize();
        Ok(format!(
            "{PACKAGE_PREFIX}{}.zip",
            hex::encode(&digest[..16])
        ))
    }

    /// `gcs://_ray_pkg_<hash>.zip`, what `runtime_env.working_dir` names.
    pub fn uri(&self) -> String {
        format!("gcs://{}", self.name)
    }

    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .count()
    }

    /// Total size of the files, uncompressed.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { bytes, .. } => bytes,
                EntryKind::Dir => 0,
            })
            .sum()
    }

    /// The zip, deflated, entries relative to the directory, modes kept, fixed timestamps.
    /// Stops with an error as soon as it grows past `cap` bytes, so a huge directory is never
    /// held in memory.
    pub fn zip(&self, cap: u64) -> Result<Vec<u8>, JobsError> {
        let over = Arc::new(AtomicBool::new(false));
        let sink = Capped {
            inner: std::io::Cursor::new(Vec::new()),
            cap,
            over: over.clone(),
        };
        let too_large = || JobsError::Package(self.too_large_message(cap));
        let zerr = |e: zip::result::ZipError| {
            if over.load(Ordering::Relaxed) {
                too_large()
            } else {
                JobsError::Package(format!("building the zip: {e}"))
            }
        };
        let mut w = zip::ZipWriter::new(sink);
        let base = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default());
        for e in &self.entries {
            match e.kind {
                EntryKind::Dir => w.add_directory(e.name.as_str(), base).map_err(zerr)?,
                EntryKind::File { mode, .. } => {
                    w.start_file(e.name.as_str(), base.unix_permissions(mode))
                        .map_err(zerr)?;
                    let mut f = fs::File::open(&e.path).map_err(io_err(&e.path))?;
                    if let Err(why) = std::io::copy(&mut f, &mut w) {
                        if over.load(Ordering::Relaxed) {
                            return Err(too_large());
                        }
                        return Err(JobsError::Io {
                            path: e.path.clone(),
                            why,
                        });
                    }
                }
            }
        }
        Ok(w.finish().map_err(zerr)?.inner.into_inner())
    }

    fn too_large_message(&self, cap: u64) -> String {
        let mut msg = format!(
            "the working dir {} zips to more than {}, the most Ray's dashboard takes in one upload. Largest files:",
            self.root.display(),
            human_bytes(cap)
        );
        for (name, bytes) in self.largest(5) {
            let _ = write!(msg, "\n  {:>10}  {name}", human_bytes(bytes));
        }
        msg.push_str(
            "\nMove large data to a shared filesystem and read it from there, or pass a smaller directory.",
        );
        msg
    }

    /// The largest files, for a message about a package that is too big.
    fn largest(&self, n: usize) -> Vec<(String, u64)> {
        let mut files: Vec<_> = self
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                EntryKind::File { bytes, .. } => Some((e.name.clone(), bytes)),
                EntryKind::Dir => None,
            })
            .collect();
        files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        files.truncate(n);
        files
    }
}

/// What `upload_working_dir` did.
#[derive(Debug, Clone)]
pub struct UploadedDir {
    /// `gcs://_ray_pkg_<hash>.zip`, for `runtime_env.working_dir`.
    pub uri: String,
    pub files: usize,
    pub file_bytes: u64,
    /// The zip's size when it was uploaded; None when the cluster already had it.
    pub uploaded_bytes: Option<u64>,
    pub skipped: Vec<Skipped>,
}

/// `protocol` and `name` of a package URI (`uri_to_http_components`).
pub fn uri_components(uri: &str) -> Option<(&str, &str)> {
    let (protocol, name) = uri.split_once("://")?;
    (!protocol.is_empty() && !name.is_empty() && !name.contains('/') && name.ends_with(".zip"))
        .then_some((protocol, name))
}

/// A client for one cluster's dashboard.
#[derive(Debug, Clone)]
pub struct JobsClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl JobsClient {
    /// `dashboard_url` is `http://host:port`; `token` is sent as `Authorization: Bearer` on
    /// every request when given. Proxy variables are ignored: the dashboard is on the
    /// cluster's own network.
    pub fn new(dashboard_url: &str, token: Option<String>) -> Result<Self, JobsError> {
        let base = dashboard_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.contains(' ') {
            return Err(JobsError::Package(format!(
                "`{dashboard_url}` is not a dashboard URL (http://host:port)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| JobsError::Unreachable {
                url: base.clone(),
                why: error_chain(&e),
            })?;
        Ok(JobsClient { base, token, http })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends one request; 2xx and 404 come back as (status, body), 401/403 and other
    /// statuses as errors.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<(u16, String), JobsError> {
        let url = self.url(path);
        let mut req = self.http.request(method.clone(), &url).timeout(timeout);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Bytes(b)) => req
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(b),
            None => req,
        };
        let resp = req.send().await.map_err(|e| JobsError::Unreachable {
            url: self.base.clone(),
            why: no_answer(&e, timeout),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| JobsError::BadResponse {
            url: url.clone(),
            why: error_chain(&e),
        })?;
        match status {
            200..=299 | 404 => Ok((status, text)),
            401 | 403 => Err(JobsError::Unauthorized {
                url: self.base.clone(),
                status,
                body: text.trim().to_string(),
            }),
            _ => Err(JobsError::Api {
                method: method.to_string(),
                url,
                status,
                body: text.trim().to_string(),
            }),
        }
    }

    /// Like `send`, but a 404 is an error too.
    async fn send_found(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<String, JobsError> {
        let (status, text) = self.send(method.clone(), path, body, timeout).await?;
        if status == 404 {
            return Err(JobsError::Api {
                method: method.to_string(),
                url: self.url(path),
                status,
                body: text.trim().to_string(),
            });
        }
        Ok(text)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        text: &str,
    ) -> Result<T, JobsError> {
        serde_json::from_str(text).map_err(|e| JobsError::BadResponse {
            url: self.url(path),
            why: format!("{e} in {:?}", truncate(text, 300)),
        })
    }

    /// The dashboard's Ray version (`GET /api/version`).
    pub async fn ray_version(&self) -> Result<String, JobsError> {
        #[derive(Deserialize)]
        struct Version {
            ray_version: String,
        }
        let path = "/api/version";
        let text = self
            .send_found(reqwest::Method::GET, path, None, REQUEST_TIMEOUT)
            .await?;
        Ok(self.parse::<Version>(path, &text)?.ray_version)
    }

    /// Submits a job; returns its submission id.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<String, JobsError> {
        #[derive(Deserialize)]
        struct Submitted {
            submission_id: String,
        }
        let path = "/api/jobs/";
        let body = serde_json::to_value(req).map_err(|e| JobsError::Package(e.to_string()))?;
        let text = self
            .send_found(
                reqwest::Method::POST,
                path,
                Some(Body::Json(body)),
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok(self.parse::<Submitted>(path, &text)?.submission_id)
    }

    pub async fn status(&self, id: &str) -> Result<JobInfo, JobsError> {
        let path = format!("/api/jobs/{id}");
        let text = self
            .send_found(reqwest::Method::GET, &path, None, REQUEST_TIMEOUT)
            .await?;
        self.parse(&path, &text)
    }

    /// The job's whole log so far.
    pub async fn logs(&self, id: &str) -> Result<String, JobsError> {
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        let path = format!("/api/jobs/{id}/logs");
        let text = self
            .send_found(reqwest::Method::GET, &path, None, REQUEST_TIMEOUT)
            .await?;
        Ok(self.parse::<Logs>(&path, &text)?.logs)
    }

    /// Asks Ray to stop the job; true if it was running.
    pub async fn stop(&self, id: &str) -> Result<bool, JobsError> {
        #[derive(Deserialize)]
        struct Stopped {
            stopped: bool,
        }
        let path = format!("/api/jobs/{id}/stop");
        let text = self
            .send_found(reqwest::Method::POST, &path, None, REQUEST_TIMEOUT)
            .await?;
        Ok(self.parse::<Stopped>(&path, &text)?.stopped)
    }

    /// Whether the cluster holds the package (`GET /api/packages/...`: 200 or 404). Ray also
    /// pins the package for a while when asked, so it is not collected before the job starts.
    pub async fn package_exists(&self, uri: &str) -> Result<bool, JobsError> {
        let (protocol, name) = uri_components(uri)
            .ok_or_else(|| JobsError::Package(format!("`{uri}` is not a package URI")))?;
        let path = format!("/api/packages/{protocol}/{name}");
        let (status, _) = self
            .send(reqwest::Method::GET, &path, None, REQUEST_TIMEOUT)
            .await?;
        Ok(status != 404)
    }

    pub async fn upload_package(&self, uri: &str, zip: Vec<u8>) -> Result<(), JobsError> {
        let (protocol, name) = uri_components(uri)
            .ok_or_else(|| JobsError::Package(format!("`{uri}` is not a package URI")))?;
        let path = format!("/api/packages/{protocol}/{name}");
        self.send_found(
            reqwest::Method::PUT,
            &path,
            Some(Body::Bytes(zip)),
            UPLOAD_TIMEOUT,
        )
        .await?;
        Ok(())
    }

    /// Packages `dir` and uploads it unless the cluster already has the same contents; the
    /// returned URI goes into `runtime_env.working_dir`.
    pub async fn upload_working_dir(&self, dir: &Path) -> Result<UploadedDir, JobsError> {
        let dir_owned = dir.to_path_buf();
        let pkg = tokio::task::spawn_blocking(move || DirPackage::scan(&dir_owned))
            .await
            .map_err(|e| JobsError::Package(format!("scanning {}: {e}", dir.display())))??;
        let uri = pkg.uri();
        let mut done = UploadedDir {
            uri: uri.clone(),
            files: pkg.file_count(),
            file_bytes: pkg.file_bytes(),
            uploaded_bytes: None,
            skipped: pkg.skipped.clone(),
        };
        if self.package_exists(&uri).await? {
            return Ok(done);
        }
        let pkg2 = pkg.clone();
        let zip = tokio::task::spawn_blocking(move || pkg2.zip(PACKAGE_MAX_BYTES))
            .await
            .map_err(|e| JobsError::Package(format!("zipping {}: {e}", dir.display())))??;
        let size = zip.len() as u64;
        self.upload_package(&uri, zip).await?;
        done.uploaded_bytes = Some(size);
        Ok(done)
    }
}

/// A seekable in-memory sink that refuses to grow past `cap` bytes.
struct Capped {
    inner: std::io::Cursor<Vec<u8>>,
    cap: u64,
    over: Arc<AtomicBool>,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.inner.position() + buf.len() as u64;
        if end > self.cap {
            self.over.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("the package is over its size cap"));
        }
        std::io::Write::write(&mut self.inner, buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Capped {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

enum Body {
    Json(serde_json::Value),
    Bytes(Vec<u8>),
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Why a request got no answer: the innermost cause ("Connection refused (os error 111)"),
/// which is what a person can act on.
fn no_answer(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", timeout.as_secs());
    }
    let mut cur: &dyn std::error::Error = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// An error and its causes on one line (reqwest's own message omits "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Keeps track of how much of a job's log was printed; `new_text` gives what was not.
#[derive(Debug, Default)]
pub struct LogCursor {
    printed: usize,
}

impl LogCursor {
    /// The part of `logs` (the whole log so far) after what was already returned. A log that
    /// got shorter (replaced) gives nothing until it grows past the old end.
    pub fn new_text<'a>(&mut self, logs: &'a str) -> &'a str {
        if logs.len() <= self.printed || !logs.is_char_boundary(self.printed) {
            return "";
        }
        let new = &logs[self.printed..];
        self.printed = logs.len();
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_shlex() {
        assert_eq!(shell_quote("python"), "python");
        assert_eq!(shell_quote("a/b.py"), "a/b.py");
        assert_eq!(shell_quote("--x=1,2"), "--x=1,2");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r#"'it'"'"'s'"#);
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("a;b"), "'a;b'");
        assert_eq!(shell_quote("é"), "'é'");
        assert_eq!(
            shell_join(&["python", "-c", "print('hello from ray job')"]),
            r#"python -c 'print('"'"'hello from ray job'"'"')'"#
        );
    }

    #[test]
    fn joined_arguments_survive_the_shell() {
        let args = [
            "printf",
            "%s\\n",
            "two words",
            "it's",
            "",
            "$HOME",
            "a\"b",
            "*",
            "x\ny",
        ];
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &shell_join(&args)])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "two words\nit's\n\n$HOME\na\"b\n*\nx\ny\n"
        );
    }

    #[test]
    fn submit_request_json_leaves_out_unset_fields() {
        let req = SubmitRequest {
            entrypoint: "python x.py".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"entrypoint": "python x.py", "runtime_env": {}})
        );
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "1".to_string());
        let req = SubmitRequest {
            entrypoint: "true".into(),
            submission_id: Some("s1".into()),
            runtime_env: RuntimeEnv {
                working_dir: Some("gcs://_ray_pkg_ab.zip".into()),
                env_vars: env,
            },
            entrypoint_num_cpus: Some(1.0),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({
                "entrypoint": "true",
                "submission_id": "s1",
                "runtime_env": {"working_dir": "gcs://_ray_pkg_ab.zip", "env_vars": {"A": "1"}},
                "entrypoint_num_cpus": 1.0
            })
        );
    }

    #[test]
    fn parses_job_details() {
        let info: JobInfo = serde_json::from_str(
            r#"{"type":"SUBMISSION","job_id":null,"submission_id":"raysubmit_1","driver_info":null,
            "status":"FAILED","entrypoint":"false","message":"Job entrypoint command failed with exit code 1",
            "error_type":null,"start_time":1,"end_time":2,"metadata":{},"runtime_env":{},
            "driver_exit_code":1,"new_field":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(info.status, JobStatus::Failed);
        assert!(info.status.is_terminal());
        assert_eq!(info.driver_exit_code, Some(1));
        assert_eq!(info.submission_id.as_deref(), Some("raysubmit_1"));
        let info: JobInfo = serde_json::from_str(r#"{"status":"QUEUED_SOMEWHERE"}"#).unwrap();
        assert_eq!(info.status, JobStatus::Other("QUEUED_SOMEWHERE".into()));
        assert!(!info.status.is_terminal());
        for s in ["PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED"] {
            assert_eq!(JobStatus::parse(s).as_str(), s);
        }
    }

    #[test]
    fn log_cursor_gives_only_new_text() {
        let mut c = LogCursor::default();
        assert_eq!(c.new_text(""), "");
        assert_eq!(c.new_text("a\n"), "a\n");
        assert_eq!(c.new_text("a\n"), "");
        assert_eq!(c.new_text("a\nbé"), "bé");
        assert_eq!(c.new_text("a\nbé\n"), "\n");
        assert_eq!(c.new_text("x"), "", "a shorter log gives nothing");
        // The old end falls inside a multi-byte character: wait for more.
        let mut c = LogCursor { printed: 1 };
        assert_eq!(c.new_text("é"), "");
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(FILE_SKIP_BYTES), "100.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn package_uri_components() {
        assert_eq!(
            uri_components("gcs://_ray_pkg_abc.zip"),
            Some(("gcs", "_ray_pkg_abc.zip"))
        );
        assert_eq!(uri_components("gcs://a/b.zip"), None);
        assert_eq!(uri_components("/tmp/x.zip"), None);
        assert_eq!(uri_components("gcs://x.tar"), None);
    }

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        fs::create_dir_all(dir.join("empty")).unwrap();
        fs::create_dir_all(dir.join(".git/objects")).unwrap();
        fs::create_dir_all(dir.join("sub/__pycache__")).unwrap();
        fs::create_dir_all(dir.join("venv/bin")).unwrap();
        fs::write(dir.join("data.txt"), "payload\n").unwrap();
        fs::write(dir.join("sub/deeper/m.py"), "X = 1\n").unwrap();
        fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join(".git/HEAD"), "ref").unwrap();
        fs::write(dir.join("sub/__pycache__/m.pyc"), "pyc").unwrap();
        fs::write(dir.join("venv/bin/python"), "py").unwrap();
    }

    fn zip_names(bytes: &[u8]) -> Vec<(String, Option<u32>)> {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        (0..z.len())
            .map(|i| {
                let f = z.by_index(i).unwrap();
                (f.name().unwrap().to_string(), f.unix_mode())
            })
            .collect()
    }

    #[test]
    fn package_layout_matches_ray() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wd");
        tree(&dir);
        let pkg = DirPackage::scan(&dir).unwrap();
        assert!(pkg.name.starts_with("_ray_pkg_") && pkg.name.ends_with(".zip"));
        assert_eq!(pkg.name.len(), "_ray_pkg_".len() + 32 + ".zip".len());
        assert_eq!(pkg.uri(), format!("gcs://{}", pkg.name));
        assert_eq!(pkg.file_count(), 3);
        assert!(pkg.skipped.is_empty());
        let zip = pkg.zip(PACKAGE_MAX_BYTES).unwrap();
        let names = zip_names(&zip);
        let just: Vec<_> = names.iter().map(|(n, _)| n.as_str()).collect();
        // Relative to the directory, no top-level directory, excludes left out.
        assert_eq!(
            just,
            [
                "data.txt",
                "empty/",
                "run.sh",
                "sub/",
                "sub/deeper/",
                "sub/deeper/m.py"
            ]
        );
        let mode = |n: &str| names.iter().find(|(x, _)| x == n).unwrap().1.unwrap();
        assert_eq!(mode("run.sh") & 0o777, 0o755);
        assert_eq!(mode("data.txt") & 0o777, 0o644 & !umask());
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(&zip[..])).unwrap();
        let mut s = String::new();
        z.by_name("data.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "payload\n");
        // Same contents, same bytes.
        assert_eq!(pkg.zip(PACKAGE_MAX_BYTES).unwrap(), zip);
    }

    fn umask() -> u32 {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("probe");
        fs::write(&p, "").unwrap();
        0o666 & !(fs::metadata(&p).unwrap().permissions().mode() & 0o777)
    }

    #[test]
    fn package_name_follows_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        tree(&a);
        tree(&b);
        let name = |d: &Path| DirPackage::scan(d).unwrap().name;
        assert_eq!(name(&a), name(&b), "same contents elsewhere, same name");
        // Excluded files do not count.
        fs::write(b.join(".git/HEAD"), "other").unwrap();
        fs::write(b.join("sub/__pycache__/n.pyc"), "x").unwrap();
        assert_eq!(name(&a), name(&b));
        // Contents, names and modes do.
        fs::write(b.join("data.txt"), "payload!\n").unwrap();
        assert_ne!(name(&a), name(&b));
        fs::write(b.join("data.txt"), "payload\n").unwrap();
        assert_eq!(name(&a), name(&b));
        fs::set_permissions(b.join("data.txt"), fs::Permissions::from_mode(0o700)).unwrap();
        assert_ne!(name(&a), name(&b));
        fs::set_permissions(b.join("data.txt"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(a.join("data.txt"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(name(&a), name(&b));
        fs::rename(b.join("data.txt"), b.join("data2.txt")).unwrap();
        assert_ne!(name(&a), name(&b));
    }

    #[test]
    fn package_skips_big_files_broken_links_and_loops() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wd");
        fs::create_dir_all(dir.join("d")).unwrap();
        let big = dir.join("big.bin");
        fs::File::create(&big)
            .unwrap()
            .set_len(FILE_SKIP_BYTES + 1)
            .unwrap(); // sparse
        fs::write(dir.join("small.txt"), "s").unwrap();
        std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
        std::os::unix::fs::symlink("..", dir.join("d/up")).unwrap();
        std::os::unix::fs::symlink("small.txt", dir.join("alias.txt")).unwrap();
        let pkg = DirPackage::scan(&dir).unwrap();
        assert_eq!(
            pkg.skipped,
            [
                Skipped::TooLarge {
                    path: fs::canonicalize(&dir).unwrap().join("big.bin"),
                    bytes: FILE_SKIP_BYTES + 1
                },
                Skipped::LinkLoop {
                    path: fs::canonicalize(&dir).unwrap().join("d/up")
                },
                Skipped::BrokenLink {
                    path: fs::canonicalize(&dir).unwrap().join("dangling")
                },
            ]
        );
        assert!(pkg.skipped[0].to_string().contains("over 100.0 MiB"));
        assert_eq!(pkg.file_count(), 2);
        assert_eq!(pkg.file_bytes(), 2);
        let names: Vec<_> = zip_names(&pkg.zip(PACKAGE_MAX_BYTES).unwrap())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        // A link to a file is packaged as the file, as Ray does.
        assert_eq!(names, ["alias.txt", "d/", "small.txt"]);
    }

    #[test]
    fn package_over_the_cap_stops_early_and_names_the_largest_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wd");
        fs::create_dir_all(&dir).unwrap();
        // Incompressible bytes (a xorshift stream), so the zip is as large as the files.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        fs::write(dir.join("a.bin"), noise(300_000)).unwrap();
        fs::write(dir.join("b.bin"), noise(200_000)).unwrap();
        fs::write(dir.join("c.txt"), "c").unwrap();
        let pkg = DirPackage::scan(&dir).unwrap();
        let zip = pkg.zip(600_000).unwrap();
        assert!(zip.len() > 500_000 && zip.len() <= 600_000, "{}", zip.len());
        let err = pkg.zip(400_000).unwrap_err().to_string();
        assert!(err.contains("more than 390.6 KiB"), "{err}");
        let a = err.find("a.bin").unwrap();
        let b = err.find("b.bin").unwrap();
        assert!(a < b, "largest first: {err}");
    }

    #[test]
    fn package_of_a_missing_or_plain_file_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = DirPackage::scan(&tmp.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let f = tmp.path().join("f");
        fs::write(&f, "").unwrap();
        let err = DirPackage::scan(&f).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn client_rejects_a_non_url() {
        assert!(JobsClient::new("127.0.0.1:8265", None).is_err());
        let c = JobsClient::new("http://127.0.0.1:8265/", None).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8265");
    }

    /// A stand-in dashboard: records the Authorization header and answers as Ray does.
    async fn fake_dashboard() -> (String, tokio::task::JoinHandle<()>) {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::{get, post};
        async fn check(h: &HeaderMap) -> Result<(), (StatusCode, String)> {
            match h.get("authorization").and_then(|v| v.to_str().ok()) {
                None => Err((
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized: Missing authentication token".into(),
                )),
                Some("Bearer good") => Ok(()),
                Some(_) => Err((
                    StatusCode::FORBIDDEN,
                    "Forbidden: Invalid authentication token".into(),
                )),
            }
        }
        let app = axum::Router::new()
            .route(
                "/api/jobs/",
                post(|h: HeaderMap, body: String| async move {
                    check(&h).await?;
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    if v["entrypoint"] == "bad" {
                        return Err((
                            StatusCode::BAD_REQUEST,
                            "Traceback ...\nTypeError: nope".to_string(),
                        ));
                    }
                    Ok(r#"{"job_id":null,"submission_id":"raysubmit_x"}"#.to_string())
                }),
            )
            .route(
                "/api/jobs/{id}",
                get(|h: HeaderMap, axum::extract::Path(id): axum::extract::Path<String>| async move {
                    check(&h).await?;
                    if id != "raysubmit_x" {
                        return Err((StatusCode::NOT_FOUND, format!("Job {id} does not exist")));
                    }
                    Ok(r#"{"status":"RUNNING","message":"Job is currently running."}"#.to_string())
                }),
            )
            .route(
                "/api/jobs/{id}/logs",
                get(|h: HeaderMap| async move {
                    check(&h).await?;
                    Ok::<_, (StatusCode, String)>(r#"{"logs":"line 1\n"}"#.to_string())
                }),
            )
            .route(
                "/api/jobs/{id}/stop",
                post(|h: HeaderMap| async move {
                    check(&h).await?;
                    Ok::<_, (StatusCode, String)>(r#"{"stopped":true}"#.to_string())
                }),
            )
            .route(
                "/api/packages/{protocol}/{name}",
                get(|| async { (StatusCode::NOT_FOUND, "Package does not exist") })
                    .put(|h: HeaderMap, body: axum::body::Bytes| async move {
                        check(&h).await?;
                        assert!(body.starts_with(b"PK"));
                        Ok::<_, (StatusCode, String)>(String::new())
                    }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (url, task)
    }

    #[tokio::test]
    async fn client_talks_to_a_dashboard() {
        let (url, task) = fake_dashboard().await;
        let good = JobsClient::new(&url, Some("good".into())).unwrap();
        let req = SubmitRequest {
            entrypoint: "true".into(),
            ..Default::default()
        };
        assert_eq!(good.submit(&req).await.unwrap(), "raysubmit_x");
        let info = good.status("raysubmit_x").await.unwrap();
        assert_eq!(info.status, JobStatus::Running);
        assert_eq!(good.logs("raysubmit_x").await.unwrap(), "line 1\n");
        assert!(good.stop("raysubmit_x").await.unwrap());

        // Ray's message comes back verbatim.
        let err = good.status("raysubmit_y").await.unwrap_err();
        assert!(
            matches!(&err, JobsError::Api { status: 404, body, .. } if body == "Job raysubmit_y does not exist"),
            "{err}"
        );
        let bad = SubmitRequest {
            entrypoint: "bad".into(),
            ..Default::default()
        };
        let err = good.submit(&bad).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 400"), "{err}");
        assert!(err.to_string().contains("TypeError: nope"), "{err}");
        assert!(!err.is_transient());

        // No token: 401; a wrong one: 403.
        let none = JobsClient::new(&url, None).unwrap();
        let err = none.submit(&req).await.unwrap_err();
        assert!(
            matches!(err, JobsError::Unauthorized { status: 401, .. }),
            "{err}"
        );
        let wrong = JobsClient::new(&url, Some("bad".into())).unwrap();
        let err = wrong.status("raysubmit_x").await.unwrap_err();
        assert!(
            matches!(&err, JobsError::Unauthorized { status: 403, body, .. } if body.contains("Invalid")),
            "{err}"
        );

        // Upload of a directory the fake does not have.
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f.txt"), "x").unwrap();
        let up = good.upload_working_dir(tmp.path()).await.unwrap();
        assert!(up.uri.starts_with("gcs://_ray_pkg_"));
        assert_eq!(up.files, 1);
        assert!(up.uploaded_bytes.is_some());
        task.abort();
    }

    #[tokio::test]
    async fn unreachable_dashboard_names_the_url() {
        // A port nobody listens on: bind, take the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let c = JobsClient::new(&url, None).unwrap();
        let err = c.status("x").await.unwrap_err();
        assert!(matches!(err, JobsError::Unreachable { .. }), "{err}");
        assert!(err.is_transient());
        let msg = err.to_string();
        assert!(msg.contains(&url), "{msg}");
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
    }
}
