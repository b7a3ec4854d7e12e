//! The LSF stand-in (lsf/testbed: LSF's commands carried out on the real Slurm test bed; not
//! IBM LSF) against lsf/fixtures/README.md, and the LSF adapter against the stand-in: `ray-hpc
//! discover --scheduler lsf` in a stand-in job, on every host, through blaunch and lsrun.
//! tests/run sets RAY_HPC_E2E=1; without the Slurm test bed (or root) these say they were
//! skipped.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const JOB_TIMEOUT: Duration = Duration::from_secs(180);
const FIELDS: &str = "jobid job_name stat pend_reason exit_reason exit_code start_time time_left";

/// One LSF command of a flavour, with the test's marker in its environment (every process a
/// job starts inherits it, which is how leftovers are found).
fn lsf(home: &TestHome, bin: &Path, command: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin.join(command))
        .args(args)
        .env("PATH", LsfStandin::path(bin))
        .env("RAY_HPC_HOME", home.path())
        .env_remove("LSB_JOBID")
        .current_dir(home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A job the test submitted; cancelled (through Slurm, so a broken stand-in cannot keep it)
/// when dropped.
struct Job {
    id: String,
    queue: String,
    out: PathBuf,
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(&self.id).output();
    }
}

/// `bsub` with `script` on stdin; its one line must be exactly LSF's (F10).
fn bsub(home: &TestHome, bin: &Path, args: &[&str], script: &str) -> Job {
    let out = lsf(home, bin, "bsub", args, script);
    assert!(out.status.success(), "bsub: {}", text(&out));
    let line = stdout(&out);
    let (id, rest) = line
        .strip_prefix("Job <")
        .and_then(|r| r.split_once('>'))
        .unwrap_or_else(|| panic!("bsub printed {line:?}"));
    let queue = rest
        .strip_prefix(" is submitted to default queue <")
        .or_else(|| rest.strip_prefix(" is submitted to queue <"))
        .and_then(|q| q.strip_suffix(">.\n"))
        .unwrap_or_else(|| panic!("bsub printed {line:?}"));
    assert!(id.chars().all(|c| c.is_ascii_digit()), "{line:?}");
    Job {
        id: id.to_string(),
        queue: queue.to_string(),
        out: home.path().join(format!("job-{id}.out")),
    }
}

fn job_output(job: &Job) -> String {
    std::fs::read_to_string(&job.out).unwrap_or_default()
}

/// `bjobs -a -o FIELDS -json <id>`: the job's record (as the adapter asks).
fn record(home: &TestHome, bin: &Path, job: &Job) -> Value {
    let out = lsf(
        home,
        bin,
        "bjobs",
        &["-a", "-o", FIELDS, "-json", &job.id],
        "",
    );
    assert!(out.status.success(), "bjobs: {}", text(&out));
    let v: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("bjobs -json printed no JSON ({e}): {}", text(&out)));
    assert_eq!(v["COMMAND"], "bjobs", "{v}");
    assert_eq!(v["JOBS"], 1, "{v}");
    let rec = v["RECORDS"][0].clone();
    for field in FIELDS.split(' ') {
        assert!(
            rec[field.to_uppercase()].is_string(),
            "{field} missing: {rec}"
        );
    }
    rec
}

/// `bjobs -w -a <id>` of the OpenLava flavour: the job's line, split into words.
fn table_line(home: &TestHome, openlava: &Path, job: &Job) -> Vec<String> {
    let out = lsf(home, openlava, "bjobs", &["-w", "-a", &job.id], "");
    assert!(out.status.success(), "bjobs -w -a: {}", text(&out));
    let table = stdout(&out);
    let mut lines = table.lines();
    assert_eq!(
        lines.next(),
        Some("JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME"),
        "{table}"
    );
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no job line: {table}"));
    line.split_whitespace().map(str::to_string).collect()
}

fn wait_stat(home: &TestHome, bin: &Path, job: &Job, stats: &[&str]) -> Value {
    wait_for(
        &format!("job {} to be {stats:?}", job.id),
        JOB_TIMEOUT,
        || {
            let rec = record(home, bin, job);
            stats
                .contains(&rec["STAT"].as_str().unwrap_or(""))
                .then_some(rec)
        },
        || format!("--- job output ---\n{}", job_output(job)),
    )
}

/// `KEY=value` lines after a `--- <section>` line of a job's output, up to the next section.
fn section(output: &str, name: &str) -> Vec<String> {
    output
        .lines()
        .skip_while(|l| *l != format!("--- {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with("--- "))
        .map(str::to_string)
        .collect()
}

fn vars(lines: &[String]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn this_short_hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    name.trim().split('.').next().unwrap().to_string()
}

/// The test bed's node addresses (Slurm's NodeAddr), by node name.
fn node_addrs() -> BTreeMap<String, String> {
    let out = Command::new("scontrol")
        .args(["show", "nodes", "-o"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(str::to_string)
            };
            Some((field("NodeName=")?, field("NodeAddr=")?))
        })
        .collect()
}

fn assert_no_job_files(job: &Job) {
    let spool = Path::new("/run/ray-hpc-lsf/jobs");
    let left: Vec<_> = std::fs::read_dir(spool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(&format!(".{}", job.id)) || n.contains(&format!(".{}.", job.id)))
        .collect();
    assert!(
        left.is_empty(),
        "job files left in {}: {left:?}",
        spool.display()
    );
}

const ENV_SCRIPT: &str = r#"#!/bin/sh
#BSUB -J envtest
#BSUB -n 4
#BSUB -R "span[ptile=2]"
#BSUB -o job-%J.out
#BSUB -W 10
echo "--- batch"
echo "HOSTNAME=$(hostname)"
env | grep -E '^(LSB_|LS_|SLURM|SBATCH_)' | sort
echo "--- hostfile"
cat "$LSB_DJOB_HOSTFILE"
second=$(echo $LSB_MCPU_HOSTS | cut -d' ' -f3)
task='echo "HOSTNAME=$(hostname)"; echo "JOBID=$LSB_JOBID"; echo "SLURM_VARS=$(env | grep -c ^SLURM)"'
echo "--- blaunch"
blaunch -z "$second" sh -c "$task"
echo "--- blaunch every slot"
blaunch sh -c 'echo "SLOT=$(hostname)"'
echo "--- lsrun"
lsrun -m "$second" sh -c "$task"
echo "--- lsrun exit"
lsrun -m "$second" sh -c 'exit 5'
echo "LSRUN_EXIT=$?"
echo "--- end"
"#;

#[test]
fn a_job_gets_lsf_s_environment_hosts_host_file_and_a_hostname_per_task() {
    let Some(sb) = lsf_standin() else { return };
    let home = TestHome::new();
    let job = bsub(&home, &sb.bin, &[], ENV_SCRIPT);
    let rec = wait_stat(&home, &sb.bin, &job, &["DONE", "EXIT"]);
    let output = job_output(&job);
    assert_eq!(rec["STAT"], "DONE", "{rec}\n{output}");

    let batch = vars(&section(&output, "batch"));
    let first = batch["HOSTNAME"].clone();
    let mcpu: Vec<&str> = batch["LSB_MCPU_HOSTS"].split(' ').collect();
    assert_eq!(mcpu.len(), 4, "{batch:?}");
    assert_eq!(
        (mcpu[0], mcpu[1], mcpu[3]),
        (first.as_str(), "2", "2"),
        "{batch:?}"
    );
    let second = mcpu[2].to_string();
    assert_ne!(first, second);
    assert!(node_addrs().contains_key(&second), "{second} is no node");
    assert_eq!(batch["LSB_JOBID"], job.id);
    assert_eq!(batch["LSB_JOBNAME"], "envtest");
    assert_eq!(batch["LSB_QUEUE"], job.queue);
    assert_eq!(batch["LSB_JOBINDEX"], "0");
    assert_eq!(
        batch["LSB_HOSTS"],
        format!("{first} {first} {second} {second}")
    );
    assert_eq!(batch["LSB_SUB_HOST"], this_short_hostname());
    assert_eq!(batch["LS_SUBCWD"], home.path().display().to_string());
    assert!(batch.contains_key("LSB_JOBFILENAME"), "{batch:?}");
    let slurm: Vec<_> = batch
        .keys()
        .filter(|k| k.starts_with("SLURM") || k.starts_with("SBATCH_"))
        .collect();
    assert!(
        slurm.is_empty(),
        "Slurm's variables reach the job: {slurm:?}"
    );
    assert_eq!(
        section(&output, "hostfile"),
        [first.as_str(), &first, &second, &second],
        "one line per slot, in order"
    );

    for launcher in ["blaunch", "lsrun"] {
        let task = vars(&section(&output, launcher));
        assert_eq!(task.get("HOSTNAME"), Some(&second), "{launcher}: {output}");
        assert_eq!(task.get("JOBID"), Some(&job.id), "{launcher}: {output}");
        assert_eq!(task["SLURM_VARS"], "0", "{launcher}: {output}");
    }
    let mut slots: Vec<String> = section(&output, "blaunch every slot")
        .iter()
        .filter_map(|l| l.strip_prefix("SLOT=").map(str::to_string))
        .collect();
    slots.sort();
    let mut want = vec![first.clone(), first, second.clone(), second];
    want.sort();
    assert_eq!(slots, want, "a bare blaunch runs a task per slot: {output}");
    assert!(output.contains("LSRUN_EXIT=5"), "{output}");
    assert_no_job_files(&job);
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn bjobs_follows_a_job_from_pend_to_run_to_done_in_both_formats() {
    let Some(sb) = lsf_standin() else { return };
    let home = TestHome::new();
    let blocker = Blocker::fill("n[1-4]", 4);
    let release = home.path().join("release");
    let job = bsub(
        &home,
        &sb.bin,
        &["-J", "rh-follow", "-o", "job-%J.out", "-W", "10"],
        &format!("while [ ! -e {} ]; do sleep 0.2; done\n", release.display()),
    );

    let rec = wait_stat(&home, &sb.bin, &job, &["PEND"]);
    let reason = rec["PEND_REASON"].as_str().unwrap();
    assert!(reason.ends_with(';') && reason.len() > 1, "{rec}");
    assert_eq!(rec["START_TIME"], "", "{rec}");
    let line = table_line(&home, &sb.openlava, &job);
    assert_eq!(
        (line[2].as_str(), line[5].as_str()),
        ("PEND", "-"),
        "{line:?}"
    );
    // bjobs -p shows the reason under the job.
    let out = lsf(&home, &sb.bin, "bjobs", &["-p", &job.id], "");
    assert!(
        stdout(&out).contains(&format!(" {reason}")),
        "{}",
        text(&out)
    );
    // The adapter asks for this user's jobs of a name too.
    let out = lsf(
        &home,
        &sb.bin,
        "bjobs",
        &["-o", FIELDS, "-json", "-J", "rh-follow"],
        "",
    );
    assert!(
        stdout(&out).contains(&format!("\"JOBID\":\"{}\"", job.id)),
        "{}",
        text(&out)
    );
    // An OpenLava bjobs has no -o: getopt's words, exactly as the fixture has them.
    let out = lsf(
        &home,
        &sb.openlava,
        "bjobs",
        &["-a", "-o", FIELDS, "-json", &job.id],
        "",
    );
    let fixture = std::fs::read_to_string(repo().join("lsf/fixtures/bjobs-no-json.err")).unwrap();
    assert_eq!((out.status.code(), stderr(&out)), (Some(255), fixture));

    blocker.release();
    let rec = wait_stat(&home, &sb.bin, &job, &["RUN"]);
    assert_ne!(rec["START_TIME"], "", "{rec}");
    let left = rec["TIME_LEFT"].as_str().unwrap();
    assert!(
        left == "0:10 L" || left == "0:09 L",
        "a 10-minute limit: {rec}"
    );
    let line = table_line(&home, &sb.openlava, &job);
    assert_eq!(line[2], "RUN", "{line:?}");
    assert!(node_addrs().contains_key(&line[5]), "EXEC_HOST: {line:?}");

    std::fs::write(&release, "").unwrap();
    let rec = wait_stat(&home, &sb.bin, &job, &["DONE", "EXIT"]);
    assert_eq!(
        (&rec["STAT"], &rec["EXIT_CODE"], &rec["EXIT_REASON"]),
        (&"DONE".into(), &"".into(), &"".into()),
        "{rec}"
    );
    assert_eq!(table_line(&home, &sb.openlava, &job)[2], "DONE");
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn bkill_ends_a_running_job_and_its_remote_tasks_as_term_owner() {
    let Some(sb) = lsf_standin() else { return };
    let home = TestHome::new();
    let script = "#BSUB -n 2\n#BSUB -R \"span[ptile=1]\"\n#BSUB -o job-%J.out\n\
                  blaunch -z \"$(echo $LSB_MCPU_HOSTS | cut -d' ' -f3)\" sh -c 'echo TASK UP; exec sleep 600' &\n\
                  echo BATCH UP\n\
                  sleep 600\n";
    let job = bsub(&home, &sb.bin, &[], script);
    wait_for(
        "the job and its remote task to run",
        JOB_TIMEOUT,
        || {
            let out = job_output(&job);
            (out.contains("BATCH UP") && out.contains("TASK UP")).then_some(())
        },
        || job_output(&job),
    );
    let out = lsf(&home, &sb.bin, "bkill", &[&job.id], "");
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), format!("Job <{}> is being terminated\n", job.id)),
        "{}",
        text(&out)
    );
    let rec = wait_stat(&home, &sb.bin, &job, &["EXIT"]);
    assert_eq!(
        rec["EXIT_REASON"], "TERM_OWNER: job killed by owner",
        "{rec}"
    );
    let out = lsf(&home, &sb.bin, "bkill", &[&job.id], "");
    assert_eq!(
        (out.status.code(), stderr(&out)),
        (
            Some(255),
            format!("Job <{}>: Job has already finished\n", job.id)
        )
    );
    home.assert_no_leftovers(Duration::from_secs(60));
    assert_no_job_files(&job);
}

#[test]
fn bsub_k_waits_and_exits_with_the_job_s_exit_code() {
    let Some(sb) = lsf_standin() else { return };
    let home = TestHome::new();
    for (script, code) in [("exit 3\n", 3), ("true\n", 0)] {
        let out = lsf(&home, &sb.bin, "bsub", &["-K", "-o", "job-%J.out"], script);
        assert_eq!(out.status.code(), Some(code), "{script:?}: {}", text(&out));
        let line = stdout(&out);
        assert!(
            line.starts_with("Job <") && line.ends_with(">.\n"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn refusals_and_unknown_jobs_in_lsf_s_words() {
    let Some(sb) = lsf_standin() else { return };
    let home = TestHome::new();
    let cases: [(&Path, &str, &[&str], &str, &str); 6] = [
        (
            &sb.bin,
            "bsub",
            &["-q", "normalx"],
            "true\n",
            "normalx: No such queue. Job not submitted.\n",
        ),
        (
            &sb.bin,
            "bsub",
            &["-n", "9"],
            "true\n",
            "Too many processors requested. Job not submitted.\n",
        ),
        (
            &sb.bin,
            "bsub",
            &["-n", "4", "-R", "span[ptile=4]"],
            "true\n",
            "Too many processors requested. Job not submitted.\n",
        ),
        // OpenLava's bsub has no -wa/-wt (its option template in lsbatch/lib/lsb.sub.c).
        (
            &sb.openlava,
            "bsub",
            &[],
            "#BSUB -wa USR1 -wt 2\ntrue\n",
            "bsub: illegal option -- wa (#BSUB line 1). Job not submitted.\n",
        ),
        (
            &sb.bin,
            "bjobs",
            &["-a", "-o", FIELDS, "-json", "99999999"],
            "",
            "Job <99999999> is not found\n",
        ),
        (
            &sb.bin,
            "bkill",
            &["99999999"],
            "",
            "Job <99999999>: No matching job found\n",
        ),
    ];
    for (bin, command, args, stdin, said) in cases {
        let out = lsf(&home, bin, command, args, stdin);
        assert_eq!(
            (out.status.code(), stderr(&out).as_str()),
            (Some(255), said),
            "{command} {args:?}"
        );
    }
    // The same unknown id in the wide table: stderr only.
    let out = lsf(&home, &sb.openlava, "bjobs", &["-w", "-a", "99999999"], "");
    assert_eq!(
        (out.status.code(), stdout(&out), stderr(&out)),
        (
            Some(255),
            String::new(),
            "Job <99999999> is not found\n".into()
        )
    );
}

#[test]
fn the_run_limit_warning_reaches_every_process_then_the_limit_ends_the_job() {
    let Some(sb) = lsf_standin() else { return };
    let home = TestHome::new();
    // -W 2 -wt 1: the warning a minute in, the run limit a minute later.
    let script = "#BSUB -n 2\n#BSUB -R \"span[ptile=1]\"\n#BSUB -o job-%J.out\n\
                  #BSUB -W 2\n#BSUB -wa USR2 -wt 1\n\
                  blaunch -z \"$(echo $LSB_MCPU_HOSTS | cut -d' ' -f3)\" sh -c \
                  'trap \"echo TASK WARNED on $(hostname)\" USR2; echo TASK UP; while :; do sleep 1; done' &\n\
                  trap 'echo BATCH WARNED' USR2\n\
                  echo BATCH UP\n\
                  while :; do sleep 1; done\n";
    let job = bsub(&home, &sb.bin, &[], script);
    wait_for(
        "the warning signal in the batch script and the remote task",
        JOB_TIMEOUT,
        || {
            let out = job_output(&job);
            (out.contains("BATCH WARNED") && out.contains("TASK WARNED on n")).then_some(())
        },
        || job_output(&job),
    );
    let rec = wait_stat(&home, &sb.bin, &job, &["EXIT", "DONE"]);
    assert_eq!(
        rec["EXIT_REASON"],
        "TERM_RUNLIMIT: job killed after reaching LSF run time limit",
        "{rec}\n{}",
        job_output(&job)
    );
    home.assert_no_leftovers(Duration::from_secs(60));
    assert_no_job_files(&job);
}

#[test]
fn sigterm_to_blaunch_or_lsrun_is_passed_on_to_the_remote_task() {
    let Some(sb) = lsf_standin() else { return };
    let home = TestHome::new();
    let mut script = String::from(
        "#BSUB -n 2\n#BSUB -R \"span[ptile=1]\"\n#BSUB -o job-%J.out\n\
         other=$(echo $LSB_MCPU_HOSTS | cut -d' ' -f3)\n",
    );
    for (launcher, hosts) in [("blaunch", "-z \"$other\""), ("lsrun", "-m \"$other\"")] {
        script += &format!(
            "{launcher} {hosts} sh -c 'trap \"echo {launcher} TASK GOT TERM on $(hostname); exit 0\" TERM; \
             touch ready.{launcher}; while :; do sleep 0.2; done' &\n\
             pid=$!\n\
             while [ ! -e ready.{launcher} ]; do sleep 0.1; done\n\
             kill -TERM $pid\n\
             wait $pid\n\
             echo \"{launcher} EXIT=$?\"\n"
        );
    }
    let job = bsub(&home, &sb.bin, &[], &script);
    let rec = wait_stat(&home, &sb.bin, &job, &["DONE", "EXIT"]);
    let output = job_output(&job);
    assert_eq!(rec["STAT"], "DONE", "{rec}\n{output}");
    for launcher in ["blaunch", "lsrun"] {
        assert!(
            output.contains(&format!("{launcher} TASK GOT TERM on n")),
            "{launcher}: {output}"
        );
        assert!(
            output.contains(&format!("{launcher} EXIT=0")),
            "{launcher}: {output}"
        );
    }
    home.assert_no_leftovers(Duration::from_secs(30));
}

/// What `ray-hpc discover` says on one host: the scheduler's name for it, its hostname,
/// CPUs and address.
#[derive(Debug, PartialEq)]
struct Discovered {
    node: String,
    hostname: String,
    cpus: u64,
    grant: u64,
    address: String,
}

/// `ray-hpc --scheduler lsf discover` (text, for the node the adapter chose) and `--json`, into
/// `<dir>/<tag>-<hostname>.txt` and `.json`, on whichever host runs it.
fn discover_script(dir: &Path, tag: &str) -> String {
    format!(
        "sh -c 'p={dir}/{tag}-$(hostname); {rh} --scheduler lsf discover >$p.txt 2>&1; \
         {rh} --scheduler lsf discover --json >$p.json 2>>$p.txt'",
        dir = dir.display(),
        rh = ray_hpc().display()
    )
}

/// What discover said on each host that ran `discover_script(dir, tag)`, by node.
fn discovered(dir: &Path, tag: &str) -> Vec<Discovered> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(host) = name
            .strip_prefix(&format!("{tag}-"))
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let said = std::fs::read_to_string(dir.join(format!("{tag}-{host}.txt"))).unwrap();
        let node = said
            .lines()
            .find_map(|l| l.strip_prefix("scheduler: lsf ("))
            .and_then(|l| l.split("node ").nth(1))
            .and_then(|n| n.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("{tag} on {host}: no `scheduler: lsf (job N, node X)`: {said}")
            })
            .to_string();
        let json = std::fs::read_to_string(entry.path()).unwrap();
        let v: Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{tag} on {host}: {e}: {json}\n{said}"));
        found.push(Discovered {
            node,
            hostname: v["hostname"].as_str().unwrap().to_string(),
            cpus: v["cpus"].as_u64().unwrap(),
            grant: v["cpu_limits"]["grant"].as_u64().unwrap(),
            address: v["address"].as_str().unwrap().to_string(),
        });
    }
    found.sort_by(|a, b| a.node.cmp(&b.node));
    found
}

/// Runs discover on the first host, via blaunch (LSF 10.1 flavour) and via lsrun on the other
/// hosts, and checks each host's name, CPU grant (its slots) and address.
fn discover_everywhere(sb: &LsfStandin, bin: &Path, slots: u32, ptile: u32, blaunch: bool) {
    let home = TestHome::new();
    let dir = home.path();
    let mut script = format!(
        "#BSUB -n {slots}\n#BSUB -R \"span[ptile={ptile}]\"\n#BSUB -o job-%J.out\n\
         others=$(echo $LSB_MCPU_HOSTS | awk '{{for (i = 3; i <= NF; i += 2) printf \"%s \", $i}}')\n\
         {}\n",
        discover_script(dir, "first")
    );
    if blaunch {
        script += &format!(
            "blaunch -z \"$others\" {}\n",
            discover_script(dir, "blaunch")
        );
    }
    script += &format!(
        "for h in $others; do lsrun -m \"$h\" {}; done\n",
        discover_script(dir, "lsrun")
    );
    let job = bsub(&home, bin, &[], &script);
    // Asked in JSON (the LSF 10.1 flavour): both flavours are the same Slurm jobs.
    let rec = wait_stat(&home, &sb.bin, &job, &["DONE", "EXIT"]);
    let output = job_output(&job);
    assert_eq!(rec["STAT"], "DONE", "{rec}\n{output}");

    let addrs = node_addrs();
    let hosts = (slots / ptile) as usize;
    let first = discovered(dir, "first");
    assert_eq!(first.len(), 1, "{output}");
    let mut launchers = vec!["lsrun"];
    if blaunch {
        launchers.push("blaunch");
    }
    for launcher in launchers {
        let others = discovered(dir, launcher);
        assert_eq!(others.len(), hosts - 1, "{launcher}: {output}");
        let mut nodes: Vec<&str> = others.iter().map(|d| d.node.as_str()).collect();
        nodes.push(&first[0].node);
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), hosts, "a different host each: {output}");
        for d in first.iter().chain(&others) {
            let want = Discovered {
                node: d.node.clone(),
                hostname: d.node.clone(),
                cpus: ptile as u64,
                grant: ptile as u64,
                address: addrs[&d.node].clone(),
            };
            assert_eq!(d, &want, "{launcher}: {output}");
        }
    }
    home.assert_no_leftovers(Duration::from_secs(30));
    assert_no_job_files(&job);
}

#[test]
fn discover_finds_host_cpu_grant_and_address_on_three_hosts_via_blaunch_and_lsrun() {
    let Some(sb) = lsf_standin() else { return };
    discover_everywhere(&sb, &sb.bin, 3, 1, true);
}

#[test]
fn discover_finds_two_slots_on_each_of_two_hosts() {
    let Some(sb) = lsf_standin() else { return };
    discover_everywhere(&sb, &sb.bin, 4, 2, true);
}

#[test]
fn discover_works_on_the_openlava_flavour_without_host_file_or_blaunch() {
    let Some(sb) = lsf_standin() else { return };
    assert!(!sb.openlava.join("blaunch").exists());
    discover_everywhere(&sb, &sb.openlava, 3, 1, false);
}

/// A stand-in command run straight from lsf/testbed/lib (no install, no Slurm): for what it
/// decides before asking Slurm anything.
fn from_source(flavour: &str, command: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("python3")
        .arg("-B") // no __pycache__ in the source tree
        .arg(repo().join("lsf/testbed/lib/main.py"))
        .args([flavour, command])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn openlava_flavour_refuses_what_openlava_lacks_without_a_test_bed() {
    let fixture = std::fs::read_to_string(repo().join("lsf/fixtures/bjobs-no-json.err")).unwrap();
    let out = from_source("openlava", "bjobs", &["-a", "-o", FIELDS, "-json", "1"], "");
    assert_eq!((out.status.code(), stderr(&out)), (Some(255), fixture));
    for option in ["-wa USR1 -wt 2", "-gpu \"num=1\""] {
        let first = option.split(' ').next().unwrap();
        let out = from_source("openlava", "bsub", &[], &format!("#BSUB {option}\ntrue\n"));
        assert_eq!(
            (out.status.code(), stderr(&out)),
            (
                Some(255),
                format!(
                    "bsub: illegal option -- {} (#BSUB line 1). Job not submitted.\n",
                    &first[1..]
                )
            )
        );
    }
    let out = from_source("openlava", "blaunch", &["-z", "n2", "true"], "");
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
}

/// /etc/hosts as `up` leaves it, and the lines it adds.
fn hosts_file() -> String {
    std::fs::read_to_string("/etc/hosts").unwrap()
}

#[test]
fn up_is_idempotent_and_down_removes_exactly_what_up_made() {
    let Some(sb) = lsf_standin() else { return };
    let mark = "# ray-hpc lsf/testbed stand-in";
    let installed = hosts_file();
    let ours: Vec<&str> = installed.lines().filter(|l| l.contains(mark)).collect();
    let addrs = node_addrs();
    assert_eq!(ours.len(), addrs.len(), "one line per node: {installed}");
    for (node, addr) in &addrs {
        assert!(
            ours.contains(&format!("{addr} {node} {mark}").as_str()),
            "{node}: {installed}"
        );
    }
    let again = lsf_standin().unwrap();
    assert_eq!(
        (again.bin, hosts_file()),
        (sb.bin.clone(), installed.clone())
    );

    /// Puts the stand-in back however this test ends: the other tests need it.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = Command::new(repo().join("lsf/testbed/up")).output();
        }
    }
    let _restore = Restore;
    let out = Command::new(repo().join("lsf/testbed/down"))
        .output()
        .unwrap();
    assert!(out.status.success(), "down: {}", text(&out));
    let without = lines_without(&installed, mark);
    assert_eq!(hosts_file(), without);
    assert!(!Path::new("/run/ray-hpc-lsf").exists());
    let out = Command::new(repo().join("lsf/testbed/down"))
        .output()
        .unwrap();
    assert!(out.status.success(), "down twice: {}", text(&out));
    assert_eq!(hosts_file(), without);

    let back = lsf_standin().unwrap();
    assert_eq!(back.bin, sb.bin);
    // `up` appends its lines after whatever else is there (another test bed's lines
    // included), so compare the other lines in order and ours as a set.
    let after = hosts_file();
    assert_eq!(lines_without(&after, mark), without, "{after}");
    assert_eq!(
        sorted_lines_with(&after, mark),
        sorted_lines_with(&installed, mark)
    );
}

fn lines_without(hosts: &str, mark: &str) -> String {
    hosts
        .lines()
        .filter(|l| !l.contains(mark))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sorted_lines_with<'a>(hosts: &'a str, mark: &str) -> Vec<&'a str> {
    let mut ours: Vec<&str> = hosts.lines().filter(|l| l.contains(mark)).collect();
    ours.sort_unstable();
    ours
}
