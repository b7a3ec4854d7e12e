//! The installed Ray: found where ray-hpc looks for it, and the release ray-hpc is tested with.

use std::path::PathBuf;

use serde_json::json;

use super::{CheckResult, Status};

/// What looking for and running `ray --version` gave.
#[derive(Debug, Clone, PartialEq)]
pub enum RayProbe {
    /// `find_ray` found nothing; its message.
    NotFound(String),
    /// `ray --version` ran: its stdout, or why it failed.
    Ran {
        path: PathBuf,
        output: Result<String, String>,
    },
}

/// The version in `ray --version`'s output ("ray, version 2.60.0").
pub fn parse_ray_version(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix("ray, version ")?
            .split_whitespace()
            .next()?;
        Some(v.to_string())
    })
}

/// `ray-version`: is there a `ray`, and is it the release ray-hpc is tested with?
pub fn ray_version(probe: &RayProbe, tested: &str) -> CheckResult {
    const ID: &str = "ray-version";
    const TITLE: &str = "Ray version";
    let install = format!(
        "install it: `python3 -m venv .venv && .venv/bin/pip install 'ray[default]=={tested}'`, \
         then activate the venv (`. .venv/bin/activate`) or set `ray.bin` in the config"
    );
    match probe {
        RayProbe::NotFound(why) => CheckResult::new(ID, TITLE, Status::Fail, why.clone())
            .fix(install)
            .values(json!({ "path": null, "version": null, "tested": tested })),
        RayProbe::Ran { path, output } => {
            let values = |version: Option<&str>| json!({ "path": path, "version": version, "tested": tested });
            match output {
                Err(why) => CheckResult::new(
                    ID,
                    TITLE,
                    Status::Fail,
                    format!("`{} --version` failed: {why}", path.display()),
                )
                .fix(format!("reinstall Ray; {install}"))
                .values(values(None)),
                Ok(out) => match parse_ray_version(out) {
                    None => CheckResult::new(
                        ID,
                        TITLE,
                        Status::Warn,
                        format!(
                            "`{} --version` printed no \"ray, version X\": {:?}",
                            path.display(),
                            out.trim()
                        ),
                    )
                    .fix(format!("check that it is Ray's `ray`; {install}"))
                    .values(values(None)),
                    Some(v) if v == tested => CheckResult::new(
                        ID,
                        TITLE,
                        Status::Ok,
                        format!(
                            "{} is Ray {v}, the release ray-hpc is tested with",
                            path.display()
                        ),
                    )
                    .values(values(Some(&v))),
                    Some(v) => CheckResult::new(
                        ID,
                        TITLE,
                        Status::Warn,
                        format!(
                            "{} is Ray {v}, but ray-hpc is tested with {tested}: Ray's GCS \
                             protocol and `ray start` flags change between releases",
                            path.display()
                        ),
                    )
                    .fix(format!(
                        "in the venv that holds it: `pip install 'ray[default]=={tested}'`"
                    ))
                    .values(values(Some(&v))),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(out: Result<&str, &str>) -> RayProbe {
        RayProbe::Ran {
            path: "/venv/bin/ray".into(),
            output: out.map(String::from).map_err(String::from),
        }
    }

    #[test]
    fn ray_version_passes_with_the_tested_release() {
        assert_eq!(
            parse_ray_version("ray, version 2.60.0\n").as_deref(),
            Some("2.60.0")
        );
        let r = ray_version(&ran(Ok("ray, version 2.60.0\n")), "2.60.0");
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert_eq!(r.values["version"], "2.60.0");
        assert!(r.fix.is_none());
    }

    #[test]
    fn ray_version_fails_without_ray_and_warns_on_another_release() {
        let r = ray_version(
            &RayProbe::NotFound("cannot find the `ray` command".into()),
            "2.60.0",
        );
        assert_eq!(r.status, Status::Fail);
        assert!(
            r.fix
                .unwrap()
                .contains("pip install 'ray[default]==2.60.0'")
        );
        let r = ray_version(&ran(Ok("ray, version 2.9.3\n")), "2.60.0");
        assert_eq!(r.status, Status::Warn);
        assert!(r.finding.contains("Ray 2.9.3") && r.finding.contains("tested with 2.60.0"));
        assert_eq!(
            ray_version(&ran(Err("exit status 1")), "2.60.0").status,
            Status::Fail
        );
        assert_eq!(
            ray_version(&ran(Ok("Usage: ray")), "2.60.0").status,
            Status::Warn
        );
    }
}
