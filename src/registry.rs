//! Cluster records on the (shared) home filesystem, so that commands run later or elsewhere
//! (`status`, `down`, `submit`, `agent --join`) can find a cluster.
//!
//! Layout: `<root>/clusters/<name>/` (mode 0700) holds `cluster.json` and `token` (0600).
//! The root is `$RAY_HPC_HOME`, else `~/.ray-hpc`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Version of the cluster.json layout; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot find the registry root: neither RAY_HPC_HOME nor HOME is set")]
    NoHome,
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: std::io::Error },
    #[error("{path} is not a valid cluster record: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "a cluster named `{name}` is still {state:?} (job {job_id}); choose another name or end it first"
    )]
    NameTaken {
        name: String,
        state: ClusterState,
        job_id: String,
    },
    #[error("`{0}` is not a valid cluster name: use 1-64 letters, digits, `-`, `_` or `.`")]
    BadName(String),
    #[error("no cluster named `{name}`; known clusters: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    Unknown { name: String, known: Vec<String> },
    #[error("refusing {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |why| RegistryError::Io {
        path: path.to_path_buf(),
        why,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterState {
    Queued,
    Starting,
    Ready,
    Ended,
    Failed,
}

impl ClusterState {
    pub fn is_over(self) -> bool {
        matches!(self, ClusterState::Ended | ClusterState::Failed)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub rank: u32,
    pub node_name: String,
    pub address: String,
    pub instance_id: String,
    pub cpus: u32,
    pub gpus: u32,
    pub memory_bytes: u64,
    pub temp_dir: String,
    /// Ray's node id (hex), once the node joined.
    #[serde(default)]
    pub node_id: Option<String>,
    /// The ports the node's Ray uses, by name (gcs, node_manager, min_worker, ...).
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub schema: u32,
    pub name: String,
    pub scheduler: String,
    pub job_id: String,
    pub state: ClusterState,
    /// Why the cluster failed or ended, for `status`.
    #[serde(default)]
    pub message: Option<String>,
    pub created_unix: u64,
    pub updated_unix: u64,
    pub expected_nodes: u32,
    pub head_node: String,
    #[serde(default)]
    pub head_address: Option<String>,
    /// host:port of the GCS (what RAY_ADDRESS holds).
    #[serde(default)]
    pub gcs_address: Option<String>,
    #[serde(default)]
    pub dashboard_url: Option<String>,
    #[serde(default)]
    pub client_server_address: Option<String>,
    /// host:port of the head agent's control service.
    #[serde(default)]
    pub control_address: Option<String>,
    pub auth: String,
    /// The token file Ray clients use (RAY_AUTH_TOKEN_PATH) when auth is on.
    #[serde(default)]
    pub token_path: Option<PathBuf>,
    #[serde(default)]
    pub nodes: Vec<NodeRecord>,
    /// Nodes alive in the GCS, as last seen by the head agent.
    #[serde(default)]
    pub nodes_joined: u32,
    /// host:port of the head agent's Prometheus endpoint.
    #[serde(default)]
    pub metrics_address: Option<String>,
    /// The batch script's output file, when ray-hpc submitted the job.
    #[serde(default)]
    pub job_output: Option<PathBuf>,
    /// Worker jobs the autoscaler submitted and has not seen end.
    #[serde(default)]
    pub worker_jobs: Vec<String>,
    /// What the autoscaler wants the user to know: infeasible demand, refused submissions.
    #[serde(default)]
    pub autoscaler_notes: Vec<String>,
    /// Set while the autoscaler cannot get answers from the scheduler.
    #[serde(default)]
    pub scheduler_outage: Option<SchedulerOutage>,
    /// Scheduler settings given on `up`'s command line (the ResourceManager's address): they
    /// win over the config's section for everything that reaches this cluster's scheduler.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scheduler_settings: BTreeMap<String, String>,
}

/// The autoscaler cannot get answers from the scheduler: what failed, since when, and when it
/// tries again. The head keeps serving meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SchedulerOutage {
    /// The command that failed last, as a user would type it.
    pub command: String,
    /// Its error: stderr and exit status, or that it did not answer in time.
    pub error: String,
    /// When the failures began.
    pub since_unix: u64,
    /// Failed calls in a row.
    pub failures: u32,
    /// When the autoscaler asks the scheduler again.
    pub retry_unix: u64,
}

impl ClusterRecord {
    /// A new record: what is known when a cluster is created, everything else still unknown.
    pub fn new(
        name: &str,
        scheduler: &str,
        job_id: &str,
        state: ClusterState,
        expected_nodes: u32,
        auth: &str,
    ) -> Self {
        let now = now_unix();
        ClusterRecord {
            schema: SCHEMA_VERSION,
            name: name.to_string(),
            scheduler: scheduler.to_string(),
            job_id: job_id.to_string(),
            state,
            message: None,
            created_unix: now,
            updated_unix: now,
            expected_nodes,
            head_node: String::new(),
            head_address: None,
            gcs_address: None,
            dashboard_url: None,
            client_server_address: None,
            control_address: None,
            auth: auth.to_string(),
            token_path: None,
            nodes: vec![],
            nodes_joined: 0,
            metrics_address: None,
            job_output: None,
            worker_jobs: vec![],
            autoscaler_notes: vec![],
            scheduler_outage: None,
            scheduler_settings: BTreeMap::new(),
        }
    }
}

/// One cluster's directory in the registry.
#[derive(Debug, Clone)]
pub struct ClusterDir {
    pub name: String,
    pub path: PathBuf,
}

pub fn root_from(
    ray_hpc_home: Option<String>,
    home: Option<String>,
) -> Result<PathBuf, RegistryError> {
    match (
        ray_hpc_home.filter(|s| !s.is_empty()),
        home.filter(|s| !s.is_empty()),
    ) {
        (Some(root), _) => Ok(PathBuf::from(root)),
        (None, Some(home)) => Ok(Path::new(&home).join(".ray-hpc")),
        (None, None) => Err(RegistryError::NoHome),
    }
}

pub fn root() -> Result<PathBuf, RegistryError> {
    root_from(
        std::env::var("RAY_HPC_HOME").ok(),
        std::env::var("HOME").ok(),
    )
}

pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadName(name.to_string()))
    }
}

fn mkdir_private(path: &Path) -> Result<(), RegistryError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(path))?;
    // DirBuilder's mode is filtered by the umask and skipped for existing dirs.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io(path))
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ClusterDir {
    pub fn open(root: &Path, name: &str) -> Result<Self, RegistryError> {
        validate_name(name)?;
        Ok(ClusterDir {
            name: name.to_string(),
            path: root.join("clusters").join(name),
        })
    }

    /// Creates a cluster directory for a new cluster, or takes over an ended one, or (for the
    /// head agent of a job `ray-hpc up` submitted) a queued one.
    pub fn create(root: &Path, name: &str) -> Result<Self, RegistryError> {
        let dir = Self::open(root, name)?;
        if let Ok(old) = dir.load() {
            if !old.state.is_over() && old.state != ClusterState::Queued {
                return Err(RegistryError::NameTaken {
                    name: name.to_string(),
                    state: old.state,
                    job_id: old.job_id,
                });
            }
        }
        mkdir_private(&root.join("clusters"))?;
        mkdir_private(&dir.path)?;
        Ok(dir)
    }

    /// Opens an existing cluster for reading or control, refusing one that another user owns or
    /// that others can read (its token would be exposed).
    pub fn open_existing(root: &Path, name: &str) -> Result<Self, RegistryError> {
        let dir = Self::open(root, name)?;
        if !dir.record_path().exists() {
            return Err(RegistryError::Unknown {
                name: name.to_string(),
                known: list_names(root),
            });
        }
        dir.check_private()?;
        Ok(dir)
    }

    /// The directory and its files must be ours and closed to others.
    pub fn check_private(&self) -> Result<(), RegistryError> {
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::geteuid().as_raw();
        for (path, is_dir) in [
            (self.path.clone(), true),
            (self.record_path(), false),
            (self.token_path(), false),
        ] {
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue; // the token may not exist yet
            };
            if meta.uid() != me {
                return Err(RegistryError::Unsafe {
                    path,
                    why: format!(
                        "it belongs to uid {}, not to you (uid {me}); a cluster record is only used by its owner",
                        meta.uid()
                    ),
                });
            }
            if meta.file_type().is_symlink() {
                return Err(RegistryError::Unsafe {
                    path,
                    why: "it is a symbolic link".into(),
                });
            }
            let mode = meta.mode() & 0o777;
            if mode & 0o077 != 0 {
                let want = if is_dir { "0700" } else { "0600" };
                return Err(RegistryError::Unsafe {
                    path: path.clone(),
                    why: format!(
                        "its mode is {mode:04o}, so other users can read it; run `chmod {want} {}` if you trust its contents",
                        path.display()
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn record_path(&self) -> PathBuf {
        self.path.join("cluster.json")
    }

    pub fn token_path(&self) -> PathBuf {
        self.path.join("token")
    }

    pub fn load(&self) -> Result<ClusterRecord, RegistryError> {
        let path = self.record_path();
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|e| RegistryError::Corrupt {
            path,
            why: e.to_string(),
        })
    }

    /// Writes the record atomically (temp file + rename) so readers never see half of it, under
    /// the directory's lock so it never interleaves with an `update`.
    pub fn save(&self, record: &ClusterRecord) -> Result<(), RegistryError> {
        let _lock = self.lock()?;
        self.save_locked(record)
    }

    fn save_locked(&self, record: &ClusterRecord) -> Result<(), RegistryError> {
        let path = self.record_path();
        let tmp = self.path.join(".cluster.json.tmp");
        let text = serde_json::to_string_pretty(record).expect("records always serialize");
        write_private(&tmp, text.as_bytes())?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Read-modify-write of the record under the directory's lock: `ray-hpc up` and the head
    /// agent both write it.
    pub fn update(
        &self,
        change: impl FnOnce(&mut ClusterRecord),
    ) -> Result<ClusterRecord, RegistryError> {
        let _lock = self.lock()?;
        let mut record = self.load()?;
        change(&mut record);
        record.updated_unix = now_unix();
        self.save_locked(&record)?;
        Ok(record)
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, RegistryError> {
        let path = self.path.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            RegistryError::Io {
                path,
                why: e.into(),
            }
        })
    }

    /// Writes a fresh random token (0600) and returns it.
    pub fn write_new_token(&self) -> Result<String, RegistryError> {
        let token = new_token();
        write_private(&self.token_path(), token.as_bytes())?;
        Ok(token)
    }
}

/// Names of every cluster in the registry, sorted.
pub fn list_names(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root.join("clusters")) else {
        return vec![];
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("cluster.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Writes `data` to a new file only the owner can read.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), RegistryError> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))
}

/// 32 random bytes, hex: the cluster's secret (Ray auth token and control-protocol bearer).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, state: ClusterState) -> ClusterRecord {
        ClusterRecord {
            schema: SCHEMA_VERSION,
            name: name.into(),
            scheduler: "local".into(),
            job_id: "1".into(),
            state,
            message: None,
            created_unix: 1,
            updated_unix: 1,
            expected_nodes: 1,
            head_node: "n1".into(),
            head_address: None,
            gcs_address: None,
            dashboard_url: None,
            client_server_address: None,
            control_address: None,
            auth: "token".into(),
            token_path: None,
            nodes: vec![],
            nodes_joined: 0,
            metrics_address: None,
            job_output: None,
            worker_jobs: vec![],
            autoscaler_notes: vec![],
            scheduler_outage: None,
            scheduler_settings: BTreeMap::new(),
        }
    }

    #[test]
    fn records_round_trip_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClusterDir::create(tmp.path(), "c1").unwrap();
        dir.save(&record("c1", ClusterState::Starting)).unwrap();
        let token = dir.write_new_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(fs::read_to_string(dir.token_path()).unwrap(), token);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path), 0o700);
        assert_eq!(mode(&dir.token_path()), 0o600);
        assert_eq!(mode(&dir.record_path()), 0o600);
        assert_eq!(dir.load().unwrap().state, ClusterState::Starting);
    }

    #[test]
    fn a_queued_record_is_taken_over_and_updates_keep_other_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClusterDir::create(tmp.path(), "q").unwrap();
        let mut r = record("q", ClusterState::Queued);
        r.job_output = Some("/x/job.out".into());
        dir.save(&r).unwrap();
        let again = ClusterDir::create(tmp.path(), "q").unwrap();
        let updated = again.update(|r| r.job_id = "99".into()).unwrap();
        assert_eq!(updated.job_id, "99");
        assert_eq!(
            dir.load().unwrap().job_output,
            Some(PathBuf::from("/x/job.out"))
        );
    }

    #[test]
    fn a_live_name_cannot_be_taken_but_an_ended_one_can() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClusterDir::create(tmp.path(), "c1").unwrap();
        dir.save(&record("c1", ClusterState::Ready)).unwrap();
        let err = ClusterDir::create(tmp.path(), "c1").unwrap_err();
        assert!(err.to_string().contains("still Ready"), "{err}");
        dir.save(&record("c1", ClusterState::Ended)).unwrap();
        ClusterDir::create(tmp.path(), "c1").unwrap();
    }

    #[test]
    fn unknown_names_list_the_known_ones_and_open_records_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for n in ["b", "a"] {
            let d = ClusterDir::create(tmp.path(), n).unwrap();
            d.save(&record(n, ClusterState::Ended)).unwrap();
        }
        let err = ClusterDir::open_existing(tmp.path(), "c").unwrap_err();
        assert!(err.to_string().contains("known clusters: a, b"), "{err}");
        let a = ClusterDir::open_existing(tmp.path(), "a").unwrap();
        fs::set_permissions(&a.path, fs::Permissions::from_mode(0o755)).unwrap();
        let err = ClusterDir::open_existing(tmp.path(), "a").unwrap_err();
        assert!(
            err.to_string().contains("mode is 0755") && err.to_string().contains("chmod 0700"),
            "{err}"
        );
    }

    #[test]
    fn names_and_roots() {
        for bad in ["", "a/b", "..", ".x", &"x".repeat(65), "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        validate_name("ray-1234.a_b").unwrap();
        assert_eq!(
            root_from(Some("/r".into()), Some("/h".into())).unwrap(),
            Path::new("/r")
        );
        assert_eq!(
            root_from(None, Some("/h".into())).unwrap(),
            Path::new("/h/.ray-hpc")
        );
        assert!(root_from(None, None).is_err());
    }
}
