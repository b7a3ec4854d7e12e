//! Batch jobs of `job-scripts/ray-cluster.sbatch` on the Slurm test bed: submitting, watching
//! and checking what they leave. Shared by the tests that run whole clusters as jobs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

pub const JOB_TIMEOUT: Duration = Duration::from_secs(240);

pub struct Job {
    pub id: String,
    pub out: PathBuf,
}

pub fn submit(home: &TestHome, nodes: u32, cpus: u32, driver: &[&str]) -> Job {
    submit_with(home, nodes, cpus, driver, &[])
}

pub fn submit_with(
    home: &TestHome,
    nodes: u32,
    cpus: u32,
    driver: &[&str],
    env: &[(&str, &Path)],
) -> Job {
    submit_script(
        home,
        &repo().join("job-scripts/ray-cluster.sbatch"),
        nodes,
        cpus,
        driver,
        env,
    )
}

pub fn submit_script(
    home: &TestHome,
    script: &Path,
    nodes: u32,
    cpus: u32,
    driver: &[&str],
    env: &[(&str, &Path)],
) -> Job {
    let out_pattern = home.path().join("job-%j.out");
    let mut cmd = Command::new("sbatch");
    cmd.args([
        "--parsable",
        "-N",
        &nodes.to_string(),
        "-c",
        &cpus.to_string(),
        "--time=10",
        "-o",
        out_pattern.to_str().unwrap(),
    ])
    .arg(script)
    .args(driver)
    .env("RAY_HPC_HOME", home.path())
    .env("PATH", test_path())
    .env("RAY_HPC_BIN", ray_hpc())
    .envs(env.iter().copied())
    .current_dir(home.path());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "sbatch: {}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let out = home.path().join(format!("job-{id}.out"));
    Job { id, out }
}

impl Job {
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// (JobState, ExitCode) from scontrol (the test bed keeps ended jobs for MinJobAge).
    pub fn state(&self) -> (String, String) {
        let out = Command::new("scontrol")
            .args(["-o", "show", "job", &self.id])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or("")
                .to_string()
        };
        (field("JobState="), field("ExitCode="))
    }

    pub fn explain(&self) -> String {
        format!(
            "job {} state {:?}\n--- job output ---\n{}",
            self.id,
            self.state(),
            self.output()
        )
    }

    pub fn wait_ended(&self) -> (String, String) {
        wait_for(
            &format!("job {} to end", self.id),
            JOB_TIMEOUT,
            || {
                let (state, code) = self.state();
                matches!(
                    state.as_str(),
                    "COMPLETED"
                        | "FAILED"
                        | "CANCELLED"
                        | "TIMEOUT"
                        | "NODE_FAIL"
                        | "OUT_OF_MEMORY"
                )
                .then_some((state, code))
            },
            || self.explain(),
        )
    }

    pub fn wait_output(&self, needle: &str) {
        wait_for(
            &format!("{needle:?} in job {}'s output", self.id),
            JOB_TIMEOUT,
            || self.output().contains(needle).then_some(()),
            || self.explain(),
        );
    }

    pub fn cancel(&self) {
        let st = Command::new("scancel").arg(&self.id).status().unwrap();
        assert!(st.success());
    }
}

pub fn driver(args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "python".to_string(),
        repo()
            .join("tests/drivers/cluster_check.py")
            .display()
            .to_string(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub fn record_for(home: &TestHome, job: &Job) -> serde_json::Value {
    home.cluster_records()
        .into_iter()
        .find(|r| r["job_id"] == job.id.as_str())
        .unwrap_or_else(|| panic!("no cluster record for job {}\n{}", job.id, job.explain()))
}

pub fn assert_clean(home: &TestHome, job: &Job) {
    home.assert_no_leftovers(Duration::from_secs(30));
    let rec = record_for(home, job);
    let dirs = temp_dirs(&rec);
    assert!(!dirs.is_empty(), "the record names no temp dirs: {rec}");
    for dir in dirs {
        assert!(
            !dir.exists(),
            "temp dir {} was not removed\n{}",
            dir.display(),
            job.explain()
        );
        assert!(
            !Path::new(&format!("{}.token", dir.display())).exists(),
            "token copy of {} left",
            dir.display()
        );
    }
}
