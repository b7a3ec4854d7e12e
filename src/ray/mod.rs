//! Everything that talks to or starts the real Ray.

pub mod gcs;
pub mod jobs_api;
pub mod launch;
pub mod ports;

use std::path::{Path, PathBuf};

/// The Ray release ray-hpc is tested with.
pub const TESTED_RAY_VERSION: &str = "2.60.0";

#[derive(Debug, thiserror::Error)]
pub enum FindRayError {
    #[error("ray.bin = {0:?} in the config does not exist or is not executable")]
    Configured(PathBuf),
    #[error(
        "cannot find the `ray` command: it is not in $VIRTUAL_ENV/bin nor on PATH. Install it with `python3 -m venv .venv && .venv/bin/pip install 'ray[default]=={TESTED_RAY_VERSION}'` and activate the venv, or set `ray.bin` in the config"
    )]
    Missing,
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Config `ray.bin`, else `$VIRTUAL_ENV/bin/ray`, else `ray` on PATH.
pub fn find_ray(
    configured: Option<&Path>,
    virtual_env: Option<&str>,
    path: Option<&str>,
) -> Result<PathBuf, FindRayError> {
    if let Some(p) = configured {
        return if executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(FindRayError::Configured(p.to_path_buf()))
        };
    }
    if let Some(venv) = virtual_env.filter(|v| !v.is_empty()) {
        let p = Path::new(venv).join("bin/ray");
        if executable(&p) {
            return Ok(p);
        }
    }
    for dir in std::env::split_paths(path.unwrap_or_default()) {
        let p = dir.join("ray");
        if executable(&p) {
            return Ok(p);
        }
    }
    Err(FindRayError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ray_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let venv = tmp.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        let ray = venv.join("bin/ray");
        std::fs::write(&ray, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&ray, std::fs::Permissions::from_mode(0o755)).unwrap();
        let venv_s = venv.to_str().unwrap();
        assert_eq!(find_ray(None, Some(venv_s), None).unwrap(), ray);
        let on_path = venv.join("bin");
        assert_eq!(find_ray(None, None, on_path.to_str()).unwrap(), ray);
        let err = find_ray(None, None, Some("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("pip install"), "{err}");
        let bad = tmp.path().join("nope");
        assert!(find_ray(Some(&bad), Some(venv_s), None).is_err());
    }
}
