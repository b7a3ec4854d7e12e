//! LSF's words as ours: the host lists of a job's environment, and what `bsub`, `bjobs` and
//! `bkill` print. Every parser here takes outside input: it is bounded, and garbage is an error
//! naming where it came from, never a panic. The formats are the ones lsf/fixtures/README.md
//! gives, with their sources.

use std::collections::BTreeMap;
use std::io::Read;

use crate::scheduler::{EndReason, Host, JobInfo, JobState, MAX_HOSTS, SchedulerError};

/// Longest host file we read: one line per slot, so a large allocation of many-core hosts runs
/// to megabytes, never to this.
pub const MAX_HOSTFILE_BYTES: u64 = 64 * 1024 * 1024;

/// Longest line of a host file (a host name is at most 255 bytes).
const MAX_LINE_BYTES: usize = 1024;

/// What `bjobs -o` is asked for in the JSON form: id, name, state, why it waits, why it ended,
/// its exit code, when it started, and the walltime it has left.
pub const BJOBS_FIELDS: &str =
    "jobid job_name stat pend_reason exit_reason exit_code start_time time_left";

fn bad(variable: &str, value: &str, why: impl Into<String>) -> SchedulerError {
    SchedulerError::BadVariable {
        variable: variable.into(),
        value: shorten(value),
        why: why.into(),
    }
}

fn bad_output(command: &str, why: impl Into<String>) -> SchedulerError {
    SchedulerError::BadOutput {
        command: command.into(),
        why: why.into(),
    }
}

/// A value quoted in a message: long ones cut, so an error never repeats megabytes of input.
pub fn shorten(value: &str) -> String {
    const MAX: usize = 200;
    match value.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &value[..at]),
        None => value.to_string(),
    }
}

/// Why `name` is not a host name, if it is not one: LSF names hosts by their (short or fully
/// qualified) DNS names, `host@cluster` for leased-in hosts.
fn host_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 255 {
        return Some(format!(
            "{:?} is not a host name (1 to 255 bytes)",
            shorten(name)
        ));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._@".contains(&b));
    (!ok).then(|| format!("{:?} is not a host name", shorten(name)))
}

/// The allocation's hosts in order of first appearance, each with its slot count, built from
/// one host name per slot. Refuses more than [`MAX_HOSTS`] hosts as soon as it sees them.
#[derive(Debug, Default)]
struct SlotCounter {
    hosts: Vec<Host>,
    index: BTreeMap<String, usize>,
}

impl SlotCounter {
    /// Counts `slots` more slots on `name`; the why of an error when it cannot.
    fn add(&mut self, name: &str, slots: u32) -> Result<(), String> {
        if let Some(why) = host_name_problem(name) {
            return Err(why);
        }
        match self.index.get(name) {
            Some(&i) => {
                let cpus = self.hosts[i].cpus.unwrap_or(0);
                self.hosts[i].cpus = Some(
                    cpus.checked_add(slots)
                        .ok_or_else(|| format!("host {name} has more slots than any host has"))?,
                );
            }
            None => {
                if self.hosts.len() >= MAX_HOSTS {
                    return Err(format!(
                        "it names more than {MAX_HOSTS} hosts, more than any real allocation"
                    ));
                }
                self.index.insert(name.to_string(), self.hosts.len());
                self.hosts.push(Host {
                    name: name.to_string(),
                    cpus: Some(slots),
                });
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<Host>, String> {
        if self.hosts.is_empty() {
            return Err("it names no host".into());
        }
        Ok(self.hosts)
    }
}

/// LSB_MCPU_HOSTS (`hostA 4 hostB 4`): hosts in order, each with its slots.
pub fn parse_mcpu_hosts(variable: &str, value: &str) -> Result<Vec<Host>, SchedulerError> {
    let mut counter = SlotCounter::default();
    let mut words = value.split_whitespace();
    while let Some(name) = words.next() {
        let Some(count) = words.next() else {
            return Err(bad(
                variable,
                value,
                format!("host {name:?} has no slot count (expected `host count` pairs)"),
            ));
        };
        let slots: u32 = count
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(variable, value, format!("{count:?} is not a slot count")))?;
        counter
            .add(name, slots)
            .map_err(|why| bad(variable, value, why))?;
    }
    counter.finish().map_err(|why| bad(variable, value, why))
}

/// LSB_HOSTS (`hostA hostA hostB`): one name per slot.
pub fn parse_slot_list(variable: &str, value: &str) -> Result<Vec<Host>, SchedulerError> {
    let mut counter = SlotCounter::default();
    for name in value.split_whitespace() {
        counter
            .add(name, 1)
            .map_err(|why| bad(variable, value, why))?;
    }
    counter.finish().map_err(|why| bad(variable, value, why))
}

/// The lines of a file LSF wrote (`what` names it in messages), read with a bound on its size
/// and on each line: (line number, its text trimmed), blank lines and `#` lines left out.
fn bounded_lines(reader: impl Read, what: &str) -> Result<Vec<(usize, String)>, String> {
    let mut reader = reader.take(MAX_HOSTFILE_BYTES + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut lines = Vec::new();
    let mut total: u64 = 0;
    let mut take_line = |line: &mut Vec<u8>, line_no: usize| -> Result<(), String> {
        let text = std::str::from_utf8(line)
            .map_err(|_| format!("line {line_no} of the {what} is not text"))?
            .trim();
        if !text.is_empty() && !text.starts_with('#') {
            lines.push((line_no, text.to_string()));
        }
        line.clear();
        Ok(())
    };
    let mut line_no = 1usize;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the {what}: {e}")),
        };
        total += n as u64;
        if total > MAX_HOSTFILE_BYTES {
            return Err(format!(
                "the {what} is larger than {MAX_HOSTFILE_BYTES} bytes, larger than any real allocation's"
            ));
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                take_line(&mut line, line_no)?;
                line_no += 1;
            } else {
                line.push(b);
                if line.len() > MAX_LINE_BYTES {
                    return Err(format!(
                        "line {line_no} of the {what} is longer than {MAX_LINE_BYTES} bytes, longer than any host name"
                    ));
                }
            }
        }
    }
    take_line(&mut line, line_no)?;
    Ok(lines)
}

/// The host file LSB_DJOB_HOSTFILE names (one host name a line, one line per slot), read from
/// `reader` with a bound on its size and on each line.
pub fn parse_hostfile(
    variable: &str,
    path: &str,
    reader: impl Read,
) -> Result<Vec<Host>, SchedulerError> {
    let fail = |why: String| bad(variable, path, why);
    let mut counter = SlotCounter::default();
    for (line_no, text) in bounded_lines(reader, "host file").map_err(&fail)? {
        counter
            .add(&text, 1)
            .map_err(|why| fail(format!("line {line_no} of the host file: {why}")))?;
    }
    counter
        .finish()
        .map_err(|why| fail(format!("the host file: {why}")))
}

/// The CPU ids the affinity host file (LSB_AFFINITY_HOSTFILE: `host cpu_list [numa_list
/// [memory_policy]]`, one line per task) gives `host`'s tasks, all of them together; None when
/// it lists no task on `host`.
pub fn parse_affinity_hostfile(
    variable: &str,
    path: &str,
    reader: impl Read,
    host: &str,
) -> Result<Option<Vec<u32>>, SchedulerError> {
    let fail = |why: String| bad(variable, path, why);
    let mut ids: Option<Vec<u32>> = None;
    for (line_no, text) in bounded_lines(reader, "affinity host file").map_err(&fail)? {
        let mut fields = text.split_whitespace();
        let (Some(name), Some(cpus)) = (fields.next(), fields.next()) else {
            return Err(fail(format!(
                "line {line_no} of the affinity host file is not `host cpu_list ...`"
            )));
        };
        if !name.eq_ignore_ascii_case(host) {
            continue;
        }
        let listed = crate::discovery::parse_cpu_list(cpus)
            .map_err(|why| fail(format!("line {line_no} of the affinity host file: {why}")))?;
        ids.get_or_insert_with(Vec::new).extend(listed);
    }
    Ok(ids.map(|mut ids| {
        ids.sort_unstable();
        ids.dedup();
        ids
    }))
}

/// The job id in what `bsub` printed (`Job <123> is submitted to queue <normal>.`, or `to
/// default queue`), whatever lines come before it ("Cannot connect to LSF. Please wait ...").
pub fn parse_bsub_id(stdout: &str) -> Result<String, SchedulerError> {
    for line in stdout.lines() {
        let Some(rest) = line.trim().strip_prefix("Job <") else {
            continue;
        };
        let Some((id, tail)) = rest.split_once('>') else {
            continue;
        };
        if tail.trim_start().starts_with("is submitted") && is_job_id(id) {
            return Ok(id.to_string());
        }
    }
    Err(bad_output(
        "bsub",
        format!(
            "expected `Job <ID> is submitted to queue <QUEUE>.`, got {:?}",
            shorten(stdout)
        ),
    ))
}

/// A job id as LSF prints it: digits, with an array index in brackets for array elements.
/// Zero is no job: to `bkill` and `bjobs` it means all of the user's jobs.
pub fn is_job_id(id: &str) -> bool {
    let (number, index) = match id.split_once('[') {
        Some((n, rest)) => match rest.strip_suffix(']') {
            Some(i) => (n, Some(i)),
            None => return false,
        },
        None => (id, None),
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    digits(number) && number.bytes().any(|b| b != b'0') && index.is_none_or(digits)
}

/// LSF's job states (bjobs' STAT) as ours. An EXIT's end reason comes from its exit reason.
pub fn job_state(stat: &str, exit_reason: Option<&str>) -> JobState {
    match stat {
        "PEND" | "WAIT" => JobState::Pending,
        "RUN" => JobState::Running,
        // LSF lost contact with the execution host: the job still holds it, and may run on.
        "UNKWN" => JobState::Running,
        "PSUSP" | "USUSP" | "SSUSP" => JobState::Suspended,
        "DONE" | "POST_DONE" => JobState::Ended(EndReason::Completed),
        "POST_ERR" => JobState::Ended(EndReason::Failed),
        "EXIT" => JobState::Ended(exit_reason.map(end_reason).unwrap_or(EndReason::Failed)),
        // Killed while its host was unreachable.
        "ZOMBI" => JobState::Ended(EndReason::NodeFailure),
        other => JobState::Ended(EndReason::Other(other.to_string())),
    }
}

/// An EXIT's reason (`TERM_RUNLIMIT: job killed after reaching LSF run time limit`) as ours.
pub fn end_reason(exit_reason: &str) -> EndReason {
    let keyword = exit_reason.split(':').next().unwrap_or("").trim();
    match keyword {
        "TERM_RUNLIMIT" | "TERM_DEADLINE" => EndReason::Timeout,
        "TERM_OWNER" | "TERM_ADMIN" | "TERM_FORCE_OWNER" | "TERM_FORCE_ADMIN"
        | "TERM_BUCKET_KILL" => EndReason::Cancelled,
        "TERM_MEMLIMIT" => EndReason::OutOfMemory,
        "TERM_PREEMPT" => EndReason::Preempted,
        // "Job exited while LSF is not available": its host crashed.
        "TERM_ZOMBIE" => EndReason::NodeFailure,
        _ => EndReason::Failed,
    }
}

/// bjobs' time left (`time_left`: `H:MM` with a status letter, `L` for a run limit, `E` for an
/// estimate, `X` when exceeded; `hh:mm:ss` with `-hms`) in seconds.
pub fn parse_time_left(s: &str) -> Option<u64> {
    let clock = s.split_whitespace().next()?;
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let (h, m, sec) = match parts[..] {
        [h, m] => (h, m, 0),
        [h, m, sec] => (h, m, sec),
        _ => return None,
    };
    h.checked_mul(60)?
        .checked_add(m)?
        .checked_mul(60)?
        .checked_add(sec)
}

/// A field's text, or None when LSF left it empty (or wrote `-`).
fn optional(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches(';').trim();
    (!s.is_empty() && s != "-").then(|| s.to_string())
}

/// What a bjobs message says about a job it does not know (any more): not a failure of ours.
pub fn says_not_found(line: &str) -> bool {
    let l = line.trim();
    l.is_empty()
        || l.contains("is not found")
        || l.starts_with("No job found")
        || l.starts_with("No unfinished job found")
        || l.starts_with("No matching job found")
}

/// bkill's words for jobs that are gone or finished already: not a failure of ours.
pub fn bkill_says_gone(stderr: &str) -> bool {
    stderr.lines().all(|l| {
        says_not_found(l)
            || l.contains("Job has already finished")
            || l.contains("No matching job found")
    })
}

/// An option bjobs does not have: an LSF before 10.1 (no `-json`) or an OpenLava-family
/// scheduler (no `-o`), answered with its usage.
pub fn says_unknown_option(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "illegal option",
        "invalid option",
        "unknown option",
        "unrecognized option",
    ]
    .iter()
    .any(|w| s.contains(w))
}

/// Parses `bjobs -o "BJOBS_FIELDS" -json`: `{"COMMAND":"bjobs","JOBS":N,"RECORDS":[{...}]}`,
/// every value a string. A record that only says a job is not found is left out.
pub fn parse_bjobs_json(stdout: &str) -> Result<Vec<JobInfo>, SchedulerError> {
    const CMD: &str = "bjobs -json";
    let doc: serde_json::Value = serde_json::from_str(stdout).map_err(|e| {
        bad_output(
            CMD,
            format!("not the JSON bjobs writes ({e}): {:?}", shorten(stdout)),
        )
    })?;
    let records = doc
        .get("RECORDS")
        .and_then(|r| r.as_array())
        .ok_or_else(|| bad_output(CMD, format!("no RECORDS list in {:?}", shorten(stdout))))?;
    let mut jobs = Vec::with_capacity(records.len());
    for record in records {
        let field =
            |name: &str| -> &str { record.get(name).and_then(|v| v.as_str()).unwrap_or("") };
        let error = field("ERROR");
        if !error.is_empty() {
            if says_not_found(error) {
                continue;
            }
            return Err(bad_output(CMD, format!("bjobs says {:?}", shorten(error))));
        }
        let id = field("JOBID").trim();
        let stat = field("STAT").trim();
        if !is_job_id(id) || stat.is_empty() {
            return Err(bad_output(
                CMD,
                format!(
                    "expected a record with JOBID and STAT, got {}",
                    shorten(&record.to_string())
                ),
            ));
        }
        jobs.push(job_info(JobFields {
            id,
            name: field("JOB_NAME"),
            stat,
            pend_reason: field("PEND_REASON"),
            exit_reason: field("EXIT_REASON"),
            exit_code: field("EXIT_CODE"),
            start_time: field("START_TIME"),
            time_left: field("TIME_LEFT"),
        }));
    }
    Ok(jobs)
}

/// One job's fields as bjobs wrote them.
struct JobFields<'a> {
    id: &'a str,
    name: &'a str,
    stat: &'a str,
    pend_reason: &'a str,
    exit_reason: &'a str,
    exit_code: &'a str,
    start_time: &'a str,
    time_left: &'a str,
}

fn job_info(f: JobFields<'_>) -> JobInfo {
    let exit_reason = optional(f.exit_reason);
    let state = job_state(f.stat, exit_reason.as_deref());
    let reason = match &state {
        JobState::Pending | JobState::Suspended => optional(f.pend_reason),
        JobState::Ended(_) if f.stat == "EXIT" => {
            exit_reason.or_else(|| optional(f.exit_code).map(|code| format!("exit code {code}")))
        }
        JobState::Running if f.stat == "UNKWN" => {
            Some("UNKWN: LSF lost contact with the execution host".to_string())
        }
        _ => None,
    };
    JobInfo {
        id: f.id.to_string(),
        name: f.name.trim().to_string(),
        state,
        reason,
        start_time: optional(f.start_time),
        time_left_s: parse_time_left(f.time_left),
    }
}

/// Parses the plain `bjobs -w` table (the OpenLava family, and LSF without `-o`):
/// `JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME`, one job a line, the
/// submit time three words (`Oct 22 13:51`), EXEC_HOST `-` or empty while pending. A job name
/// with spaces is read whole when EXEC_HOST is there.
pub fn parse_bjobs_table(stdout: &str) -> Result<Vec<JobInfo>, SchedulerError> {
    let mut jobs = Vec::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || words[0] == "JOBID" {
            continue;
        }
        // A non-wide table puts each further execution host on a line of its own.
        if words.len() == 1 && line.starts_with(char::is_whitespace) {
            continue;
        }
        if words.len() < 9 || !is_job_id(words[0]) {
            return Err(bad_output(
                "bjobs -w",
                format!(
                    "expected `JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME` lines, got {:?}",
                    shorten(line)
                ),
            ));
        }
        let middle = &words[5..words.len() - 3];
        let name = if middle.len() >= 2 {
            middle[1..].join(" ")
        } else {
            middle[0].to_string()
        };
        jobs.push(job_info(JobFields {
            id: words[0],
            name: &name,
            stat: words[2],
            pend_reason: "",
            exit_reason: "",
            exit_code: "",
            start_time: "",
            time_left: "",
        }));
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(hosts: &[Host]) -> Vec<(&str, u32)> {
        hosts
            .iter()
            .map(|h| (h.name.as_str(), h.cpus.unwrap()))
            .collect()
    }

    #[test]
    fn host_lists_give_hosts_in_order_with_their_slots() {
        let h = parse_mcpu_hosts("LSB_MCPU_HOSTS", "hostA 4 hostB 4 ").unwrap();
        assert_eq!(names(&h), [("hostA", 4), ("hostB", 4)]);
        let h = parse_mcpu_hosts("LSB_MCPU_HOSTS", "b.example.com 2 a 1 b.example.com 1").unwrap();
        assert_eq!(names(&h), [("b.example.com", 3), ("a", 1)]);
        let h = parse_slot_list("LSB_HOSTS", "hostA hostA hostB").unwrap();
        assert_eq!(names(&h), [("hostA", 2), ("hostB", 1)]);
        let file = "hostA\nhostA\nhostB\r\nhostB\n\nhostC";
        let h = parse_hostfile("LSB_DJOB_HOSTFILE", "/f", file.as_bytes()).unwrap();
        assert_eq!(names(&h), [("hostA", 2), ("hostB", 2), ("hostC", 1)]);
    }

    #[test]
    fn malformed_host_lists_name_the_variable() {
        for v in [
            "",
            "hostA",
            "hostA 0",
            "hostA -1",
            "hostA x",
            "host;A 1",
            "hostA 4294967296",
        ] {
            let err = parse_mcpu_hosts("LSB_MCPU_HOSTS", v).unwrap_err();
            assert!(err.to_string().contains("LSB_MCPU_HOSTS"), "{v:?}: {err}");
        }
        let err = parse_mcpu_hosts("LSB_MCPU_HOSTS", "a 4294967295 a 1").unwrap_err();
        assert!(err.to_string().contains("more slots"), "{err}");
        for v in ["", "   ", "a $(b)"] {
            let err = parse_slot_list("LSB_HOSTS", v).unwrap_err();
            assert!(err.to_string().contains("LSB_HOSTS"), "{v:?}: {err}");
        }
        for file in [&b""[..], b"a\nb\xff\n", b"a\n\0\n"] {
            let err = parse_hostfile("LSB_DJOB_HOSTFILE", "/f", file).unwrap_err();
            assert!(
                err.to_string().contains("LSB_DJOB_HOSTFILE=\"/f\""),
                "{err}"
            );
        }
    }

    #[test]
    fn huge_host_lists_are_refused_quickly() {
        let started = std::time::Instant::now();
        let many: String = (0..=MAX_HOSTS).map(|i| format!("h{i} 1 ")).collect();
        let err = parse_mcpu_hosts("LSB_MCPU_HOSTS", &many).unwrap_err();
        assert!(err.to_string().contains("more than 100000 hosts"), "{err}");
        let many: String = (0..=MAX_HOSTS).map(|i| format!("h{i} ")).collect();
        let err = parse_slot_list("LSB_HOSTS", &many).unwrap_err();
        assert!(err.to_string().contains("more than 100000 hosts"), "{err}");
        let many: String = (0..=MAX_HOSTS).map(|i| format!("h{i}\n")).collect();
        let err = parse_hostfile("LSB_DJOB_HOSTFILE", "/f", many.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("more than 100000 hosts"), "{err}");
        // Exactly the limit is fine.
        let limit: String = (0..MAX_HOSTS).map(|i| format!("h{i}\n")).collect();
        let hosts = parse_hostfile("LSB_DJOB_HOSTFILE", "/f", limit.as_bytes()).unwrap();
        assert_eq!(hosts.len(), MAX_HOSTS);
        // A file that never ends, and one that is one endless line.
        let endless = std::io::repeat(b'a');
        let err = parse_hostfile("LSB_DJOB_HOSTFILE", "/f", endless).unwrap_err();
        assert!(err.to_string().contains("longer than 1024 bytes"), "{err}");
        let endless_lines = std::io::repeat(b'\n');
        let err = parse_hostfile("LSB_DJOB_HOSTFILE", "/f", endless_lines).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn bsub_ids() {
        for (out, id) in [
            ("Job <123> is submitted to queue <normal>.\n", "123"),
            ("Job <9> is submitted to default queue <short>.\n", "9"),
            (
                "Cannot connect to LSF. Please wait ...\nJob <77> is submitted to queue <q>.\n",
                "77",
            ),
        ] {
            assert_eq!(parse_bsub_id(out).unwrap(), id);
        }
        for garbage in [
            "",
            "Job <> is submitted",
            "Job <0> is submitted to queue <q>.",
            "123",
        ] {
            let err = parse_bsub_id(garbage).unwrap_err();
            assert!(err.to_string().contains("bsub"), "{err}");
        }
    }

    #[test]
    fn job_ids_never_mean_all_jobs() {
        for id in ["1", "123", "123[4]", "007"] {
            assert!(is_job_id(id), "{id}");
        }
        for id in [
            "0",
            "000",
            "",
            "1a",
            "-1",
            "1[",
            "1[]",
            "1[x]",
            "123456789012345678901",
        ] {
            assert!(!is_job_id(id), "{id}");
        }
    }

    #[test]
    fn every_state_and_end_reason() {
        let cases = [
            ("PEND", None, JobState::Pending),
            ("WAIT", None, JobState::Pending),
            ("RUN", None, JobState::Running),
            ("UNKWN", None, JobState::Running),
            ("PSUSP", None, JobState::Suspended),
            ("USUSP", None, JobState::Suspended),
            ("SSUSP", None, JobState::Suspended),
            ("DONE", None, JobState::Ended(EndReason::Completed)),
            ("EXIT", None, JobState::Ended(EndReason::Failed)),
            ("ZOMBI", None, JobState::Ended(EndReason::NodeFailure)),
            (
                "EXIT",
                Some("TERM_RUNLIMIT: job killed after reaching LSF run time limit"),
                JobState::Ended(EndReason::Timeout),
            ),
            (
                "EXIT",
                Some("TERM_OWNER: job killed by owner"),
                JobState::Ended(EndReason::Cancelled),
            ),
            (
                "EXIT",
                Some("TERM_ADMIN"),
                JobState::Ended(EndReason::Cancelled),
            ),
            (
                "EXIT",
                Some("TERM_MEMLIMIT"),
                JobState::Ended(EndReason::OutOfMemory),
            ),
            (
                "EXIT",
                Some("TERM_PREEMPT"),
                JobState::Ended(EndReason::Preempted),
            ),
            (
                "EXIT",
                Some("TERM_CPULIMIT"),
                JobState::Ended(EndReason::Failed),
            ),
            (
                "EXIT",
                Some("TERM_ZOMBIE: job exited while LSF is not available"),
                JobState::Ended(EndReason::NodeFailure),
            ),
            (
                "NEWSTATE",
                None,
                JobState::Ended(EndReason::Other("NEWSTATE".into())),
            ),
        ];
        for (stat, why, want) in cases {
            assert_eq!(job_state(stat, why), want, "{stat} {why:?}");
        }
    }

    #[test]
    fn time_left() {
        for (s, want) in [
            ("0:54 L", Some(54 * 60)),
            ("12:05 E", Some((12 * 60 + 5) * 60)),
            ("01:02:03", Some(3723)),
            ("", None),
            ("-", None),
            ("1:2:3:4", None),
            ("99999999999999999999:00 L", None),
        ] {
            assert_eq!(parse_time_left(s), want, "{s:?}");
        }
    }

    #[test]
    fn bjobs_json_records() {
        let out = r#"{
  "COMMAND":"bjobs",
  "JOBS":4,
  "RECORDS":[
    {"JOBID":"11","JOB_NAME":"rh-a","STAT":"PEND","PEND_REASON":"New job is waiting for scheduling;","EXIT_REASON":"","EXIT_CODE":"","START_TIME":"","TIME_LEFT":""},
    {"JOBID":"12","JOB_NAME":"rh-a","STAT":"RUN","PEND_REASON":"","EXIT_REASON":"","EXIT_CODE":"","START_TIME":"Nov 22 07:00","TIME_LEFT":"0:54 L"},
    {"JOBID":"13","JOB_NAME":"rh-a","STAT":"EXIT","PEND_REASON":"","EXIT_REASON":"","EXIT_CODE":"3","START_TIME":"Nov 22 07:00","TIME_LEFT":""},
    {"ERROR":"Job <14> is not found"}
  ]
}"#;
        let jobs = parse_bjobs_json(out).unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(
            jobs[0].reason.as_deref(),
            Some("New job is waiting for scheduling")
        );
        assert_eq!(jobs[1].start_time.as_deref(), Some("Nov 22 07:00"));
        assert_eq!(jobs[1].time_left_s, Some(54 * 60));
        assert_eq!(jobs[2].state, JobState::Ended(EndReason::Failed));
        assert_eq!(jobs[2].reason.as_deref(), Some("exit code 3"));
        for garbage in [
            "",
            "{}",
            "[1]",
            r#"{"RECORDS":[{"STAT":"RUN"}]}"#,
            r#"{"RECORDS":[{"JOBID":"0","STAT":"RUN"}]}"#,
            r#"{"RECORDS":[{"ERROR":"Permission denied"}]}"#,
        ] {
            let err = parse_bjobs_json(garbage).unwrap_err();
            assert!(err.to_string().contains("bjobs"), "{garbage}: {err}");
        }
    }

    #[test]
    fn bjobs_tables() {
        let out = "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME\n\
                   21      u1      RUN   normal     login1      hostA:hostA:hostB rh-a Oct 22 13:51\n\
                   22      u1      PEND  normal     login1         -    rh-a       Oct 22 13:52\n\
                   23      u1      DONE  normal     login1      hostC       my job     Oct 22 13:53\n\
                   24      u1      PEND  normal     login1      rh-b       Oct 22 13:54\n";
        let jobs = parse_bjobs_table(out).unwrap();
        let got: Vec<(&str, &str, String)> = jobs
            .iter()
            .map(|j| (j.id.as_str(), j.name.as_str(), j.state.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("21", "rh-a", "running".to_string()),
                ("22", "rh-a", "pending".to_string()),
                ("23", "my job", "ended (completed)".to_string()),
                ("24", "rh-b", "pending".to_string()),
            ]
        );
        for garbage in ["garbage", "x u RUN q h e n a b c", "1 u RUN q h"] {
            let err = parse_bjobs_table(garbage).unwrap_err();
            assert!(err.to_string().contains("bjobs -w"), "{err}");
        }
    }

    #[test]
    fn gone_and_unknown_option_messages() {
        assert!(says_not_found("Job <5> is not found"));
        assert!(says_not_found("No unfinished job found"));
        assert!(!says_not_found("LSF is down; try later"));
        assert!(bkill_says_gone(
            "Job <5>: Job has already finished\nJob <6>: No matching job found\n"
        ));
        assert!(!bkill_says_gone("Job <7>: User permission denied\n"));
        assert!(says_unknown_option(
            "bjobs: invalid option -- 'o'\nUsage: ..."
        ));
        assert!(says_unknown_option("-json: Illegal option\n"));
        assert!(!says_unknown_option("Job <1> is not found"));
    }

    /// Every parser here on arbitrary bytes: an answer or an error, never a panic, and quickly.
    #[test]
    fn affinity_host_files_give_this_hosts_cpus_together() {
        let file = b"hostA 0,1 0 1\nhostB 4-7 0 1\n\nHOSTA 8 1 1\n";
        let a = parse_affinity_hostfile("LSB_AFFINITY_HOSTFILE", "/f", &file[..], "hostA");
        assert_eq!(a.unwrap(), Some(vec![0, 1, 8]));
        let b = parse_affinity_hostfile("LSB_AFFINITY_HOSTFILE", "/f", &file[..], "hostB");
        assert_eq!(b.unwrap(), Some(vec![4, 5, 6, 7]));
        // No task here, or an empty file (a job without affinity): no list.
        let c = parse_affinity_hostfile("LSB_AFFINITY_HOSTFILE", "/f", &file[..], "hostC");
        assert_eq!(c.unwrap(), None);
        let empty = parse_affinity_hostfile("LSB_AFFINITY_HOSTFILE", "/f", &b""[..], "hostA");
        assert_eq!(empty.unwrap(), None);
        for bad in [
            &b"hostA\n"[..],
            b"hostA x,y 0\n",
            b"hostA 9-1 0\n",
            b"hostA 99999999 0\n",
        ] {
            let err = parse_affinity_hostfile("LSB_AFFINITY_HOSTFILE", "/f", bad, "hostA")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("LSB_AFFINITY_HOSTFILE") && err.contains("line 1"),
                "{err}"
            );
        }
    }

    #[test]
    fn parsers_survive_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let alphabet =
            b"hostAB0123456789 \n\t\r:;<>[]{}\",#-.@_JobRUNPENDEXITSUSPTERM_OWNERRECORDS\xff\0";
        for _ in 0..20_000 {
            let len = rng.random_range(0..60);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse_mcpu_hosts("X", &s);
            let _ = parse_slot_list("X", &s);
            let _ = parse_hostfile("X", "/f", &bytes[..]);
            let _ = parse_affinity_hostfile("X", "/f", &bytes[..], "hostA");
            let _ = parse_bsub_id(&s);
            let _ = parse_bjobs_json(&s);
            let _ = parse_bjobs_table(&s);
            let _ = parse_time_left(&s);
            let _ = is_job_id(&s);
            let _ = job_state(&s, Some(&s));
        }
        // JSON-shaped garbage reaches the record walk.
        for _ in 0..5_000 {
            let fields = ["JOBID", "STAT", "ERROR", "TIME_LEFT", "x"];
            let values = [
                "",
                "1",
                "0",
                "RUN",
                "EXIT",
                "1:2",
                "Job <1> is not found",
                "[",
                "\u{0}",
            ];
            let n = rng.random_range(0..4);
            let record: Vec<String> = (0..n)
                .map(|_| {
                    format!(
                        "{:?}:{:?}",
                        fields[rng.random_range(0..fields.len())],
                        values[rng.random_range(0..values.len())]
                    )
                })
                .collect();
            let _ = parse_bjobs_json(&format!("{{\"RECORDS\":[{{{}}}]}}", record.join(",")));
        }
    }
}
