//! Finding this process's cgroup directories: the v2 unified one and the v1 one per controller.
//!
//! `/proc/self/cgroup` names each cgroup relative to its hierarchy's root. Inside a container
//! without a cgroup namespace that path may not exist under the container's mount (the mount *is*
//! the container's cgroup); then the longest suffix of the path that exists is used, down to the
//! mount itself.

use std::path::{Path, PathBuf};

use super::{DiscoveryError, HostPaths, read_optional};

/// One cgroup directory, and the root of the hierarchy it lives in.
#[derive(Debug, Clone)]
pub(crate) struct CgroupDir {
    pub mount: PathBuf,
    pub leaf: PathBuf,
}

impl CgroupDir {
    /// The leaf, then each parent up to and including the mount.
    pub fn walk_up(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let mut dir = Some(self.leaf.as_path());
        while let Some(d) = dir {
            if !d.starts_with(&self.mount) {
                break;
            }
            dirs.push(d.to_path_buf());
            if d == self.mount {
                break;
            }
            dir = d.parent();
        }
        dirs
    }

    /// The first of `walk_up` that has `file`, with the file's text.
    pub fn nearest(&self, file: &str) -> Result<Option<(PathBuf, String)>, DiscoveryError> {
        for dir in self.walk_up() {
            let path = dir.join(file);
            if let Some(text) = read_optional(&path)? {
                return Ok(Some((path, text)));
            }
        }
        Ok(None)
    }

    /// Every one of `walk_up` that has `file`, with the file's text.
    pub fn all(&self, file: &str) -> Result<Vec<(PathBuf, String)>, DiscoveryError> {
        let mut found = Vec::new();
        for dir in self.walk_up() {
            let path = dir.join(file);
            if let Some(text) = read_optional(&path)? {
                found.push((path, text));
            }
        }
        Ok(found)
    }
}

/// This process's cgroups.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cgroups {
    pub v2: Option<CgroupDir>,
    /// (controller, directory) for the v1 controllers we use, when mounted.
    v1: Vec<(String, CgroupDir)>,
}

const V1_CONTROLLERS: [&str; 3] = ["cpuset", "cpu", "memory"];

impl Cgroups {
    pub fn read(paths: &HostPaths) -> Result<Self, DiscoveryError> {
        let file = paths.proc.join("self/cgroup");
        let Some(text) = read_optional(&file)? else {
            return Ok(Cgroups::default());
        };
        let mut cgroups = Cgroups::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // "hierarchy-id:controller,list:/path"; the path may itself contain ':'.
            let mut parts = line.splitn(3, ':');
            let (Some(_id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(DiscoveryError::Parse {
                    path: file,
                    value: line.to_string(),
                    reason: "expected `id:controllers:path`".to_string(),
                });
            };
            if controllers.is_empty() {
                if let Some(mount) = v2_mount(&paths.sys_fs_cgroup) {
                    cgroups.v2 = Some(resolve(mount, path));
                }
                continue;
            }
            for controller in controllers.split(',') {
                if !V1_CONTROLLERS.contains(&controller) {
                    continue;
                }
                if let Some(mount) = v1_mount(&paths.sys_fs_cgroup, controller) {
                    cgroups
                        .v1
                        .push((controller.to_string(), resolve(mount, path)));
                }
            }
        }
        Ok(cgroups)
    }

    pub fn v1(&self, controller: &str) -> Option<&CgroupDir> {
        self.v1
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, dir)| dir)
    }
}

/// The unified hierarchy: /sys/fs/cgroup itself (pure v2) or /sys/fs/cgroup/unified (hybrid).
fn v2_mount(sys_fs_cgroup: &Path) -> Option<PathBuf> {
    [sys_fs_cgroup.to_path_buf(), sys_fs_cgroup.join("unified")]
        .into_iter()
        .find(|dir| dir.join("cgroup.controllers").is_file())
}

/// A v1 controller's hierarchy: /sys/fs/cgroup/<controller>, or a co-mounted directory such as
/// /sys/fs/cgroup/cpu,cpuacct.
fn v1_mount(sys_fs_cgroup: &Path, controller: &str) -> Option<PathBuf> {
    let direct = sys_fs_cgroup.join(controller);
    if direct.is_dir() {
        return Some(direct);
    }
    let entries = std::fs::read_dir(sys_fs_cgroup).ok()?;
    entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.is_dir()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split(',').any(|c| c == controller))
    })
}

/// `mount` joined with the longest suffix of `path` that exists (the whole path normally).
fn resolve(mount: PathBuf, path: &str) -> CgroupDir {
    let components: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();
    for start in 0..components.len() {
        let candidate = components[start..]
            .iter()
            .fold(mount.clone(), |p, c| p.join(c));
        if candidate.is_dir() {
            return CgroupDir {
                mount,
                leaf: candidate,
            };
        }
    }
    CgroupDir {
        leaf: mount.clone(),
        mount,
    }
}
