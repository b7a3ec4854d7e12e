//! Interactive use: a second terminal that gets a cluster's environment back with `ray-hpc env`,
//! a laptop's Ray Client through `ray://`, and `ray-hpc run` from an allocation's shell that is
//! not on one of its nodes. tests/run sets RAY_HPC_E2E=1.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn run(home: &TestHome, args: &[&str]) -> Output {
    home.command(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn job_out(home: &TestHome, name: &str) -> String {
    std::fs::read_to_string(home.path().join("clusters").join(name).join("job.out"))
        .unwrap_or_default()
}

/// A bash in the test's home with the test PATH, as a user's second terminal would be.
fn bash(home: &TestHome, script: &str) -> Output {
    Command::new("bash")
        .args(["-c", script])
        .env("RAY_HPC_HOME", home.path())
        .env("PATH", test_path())
        .env_remove("RAY_ADDRESS")
        .env_remove("RAY_AUTH_TOKEN_PATH")
        .env_remove("RAY_AUTH_MODE")
        .current_dir(home.path())
        .output()
        .unwrap()
}

/// `eval "$(ray-hpc env)"` in a new shell, with no name (the only READY cluster) and a stale
/// token in the environment, points the real `ray status` at the cluster.
#[test]
fn env_without_a_name_round_trips_into_ray_status() {
    let home = TestHome::new();
    let up = run(
        &home,
        &[
            "--scheduler",
            "local",
            "up",
            "--name",
            "e1",
            "--timeout",
            "180",
        ],
    );
    assert!(
        up.status.success(),
        "{}\n{}",
        text(&up),
        job_out(&home, "e1")
    );

    let shell = bash(
        &home,
        r#"set -e
export RAY_AUTH_TOKEN=a-stale-token-of-another-cluster
eval "$(ray-hpc env)"
echo "RAY_ADDRESS=$RAY_ADDRESS token=${RAY_AUTH_TOKEN-unset}"
ray status"#,
    );
    let out = String::from_utf8_lossy(&shell.stdout).into_owned();
    assert!(shell.status.success(), "{}", text(&shell));
    let rec = home.cluster_record();
    let gcs = rec["gcs_address"].as_str().unwrap();
    assert!(
        out.contains(&format!("RAY_ADDRESS={gcs} token=unset")),
        "{}",
        text(&shell)
    );
    assert!(out.contains("Node status"), "{}", text(&shell));
    assert!(
        out.contains(" 1 head"),
        "ray status lists the head node: {out}"
    );

    // The fish and csh forms name the same cluster.
    let fish = run(&home, &["env", "--shell", "fish"]);
    assert!(fish.status.success(), "{}", text(&fish));
    assert!(
        String::from_utf8_lossy(&fish.stdout).contains(&format!("set -gx RAY_ADDRESS {gcs};")),
        "{}",
        text(&fish)
    );
    let csh = run(&home, &["env", "--shell", "csh"]);
    assert!(
        String::from_utf8_lossy(&csh.stdout).contains("unsetenv RAY_AUTH_TOKEN;"),
        "{}",
        text(&csh)
    );

    let down = run(&home, &["down", "e1"]);
    assert!(down.status.success(), "{}", text(&down));
    // No READY cluster left: a clear error that lists what there is, and nothing on stdout.
    let none = run(&home, &["env"]);
    assert_eq!(none.status.code(), Some(1), "{}", text(&none));
    assert!(none.stdout.is_empty(), "{}", text(&none));
    assert!(
        stderr(&none).contains("no READY cluster") && stderr(&none).contains("e1 (ENDED)"),
        "{}",
        text(&none)
    );
    home.assert_no_leftovers(Duration::from_secs(30));
}
