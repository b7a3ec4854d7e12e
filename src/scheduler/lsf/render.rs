//! A typed job request as an LSF batch script (lsf/ray-cluster.lsf.in): `#BSUB` lines in
//! LSF's own syntax, then the user's own lines, all before the first command (bsub reads its
//! options from the script it is given on stdin).

use std::time::Duration;

use crate::scheduler::{JobRequest, SchedulerError, export_lines, header_line_problem};

/// The job script template.
const TEMPLATE: &str = include_str!("../../../lsf/ray-cluster.lsf.in");

/// What LSF writes for the job's id in `-o`.
const JOB_ID_TOKEN: &str = "%J";

/// What is wrong with a user's header line, if anything: it must be one `#BSUB ` line.
pub fn directive_problem(line: &str) -> Option<String> {
    header_line_problem(line, "#BSUB ")
}

/// A walltime as `-W` takes it: `[hour:]minute`, whole minutes rounded up (at least one).
pub fn walltime(d: Duration) -> String {
    let minutes = d.as_secs().div_ceil(60).max(1);
    format!("{}:{:02}", minutes / 60, minutes % 60)
}

/// Memory as `rusage[mem=]` takes it: whole MB, rounded up (LSF's default unit for it).
fn memory_mb(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

fn refuse(field: &str, value: &str, why: &str) -> SchedulerError {
    SchedulerError::BadRequest(format!(
        "the job request's {field} {value:?} cannot be written as an #BSUB line: {why}"
    ))
}

/// `value` as one argument of a `#BSUB` line: quoted when it holds spaces. Quotes and line
/// breaks cannot be written there at all.
fn argument(field: &str, value: &str) -> Result<String, SchedulerError> {
    if value.is_empty() {
        return Err(refuse(field, value, "it is empty"));
    }
    if value.contains(['"', '\n', '\r']) {
        return Err(refuse(field, value, "it holds a quote or a line break"));
    }
    Ok(if value.contains(char::is_whitespace) {
        format!("\"{value}\"")
    } else {
        value.to_string()
    })
}

/// Refuses a request field LSF has no word for, pointing at extra_directives.
fn no_equivalent(field: &str, value: &str) -> SchedulerError {
    SchedulerError::BadRequest(format!(
        "the job request's {field} ({value:?}) has no LSF equivalent; leave {field} unset and \
         write the #BSUB line you need in [lsf] extra_directives (or the node type's \
         extra_directives)"
    ))
}

/// The `-R` resource requirement: the constraint as a select[] section, memory per host as a
/// reservation, and one slot per granted CPU on each host.
fn resource_requirement(req: &JobRequest) -> Result<String, SchedulerError> {
    let mut sections = Vec::new();
    if let Some(c) = &req.constraint {
        if c.trim().is_empty() || c.contains(['"', '[', ']', '\n', '\r']) {
            return Err(refuse(
                "constraint",
                c,
                "a select[] expression cannot hold quotes, brackets or line breaks",
            ));
        }
        sections.push(format!("select[{c}]"));
    }
    if let Some(bytes) = req.memory_per_node {
        sections.push(format!("rusage[mem={}]", memory_mb(bytes)));
    }
    sections.push(format!("span[ptile={}]", req.cpus_per_node.unwrap_or(1)));
    Ok(sections.join(" "))
}

/// The walltime warning: LSF sends `signal` to every process of the job 2 minutes before its
/// run limit, so it must be one that Ray's processes ignore (SIGURG: ignored unless handled)
/// and ray-hpc's agents take as the warning. None leaves it out (OpenLava-family schedulers
/// have no `-wa`).
fn warning_lines(signal: Option<&str>) -> String {
    match signal {
        Some(sig) => format!(
            "# ray-hpc stops the cluster cleanly on this warning, 2 minutes before the run limit.\n\
             #BSUB -wa {sig} -wt 2\n"
        ),
        None => String::new(),
    }
}

/// Renders `req` into the template. `req.directives` are the user's own lines, in order;
/// `warning` the walltime warning's signal, if any.
pub fn render(req: &JobRequest, warning: Option<&str>) -> Result<String, SchedulerError> {
    req.check_directives(directive_problem)?;
    if let Some(qos) = &req.qos {
        return Err(no_equivalent("qos", qos));
    }
    // A name with brackets would submit a job array.
    if req.name.contains(['[', ']']) {
        return Err(refuse("name", &req.name, "brackets make it a job array"));
    }
    let name = argument("name", &req.name)?;
    let output = argument("output", &req.output.with_job_id_as(JOB_ID_TOKEN))?;
    // One agent per host: as many slots on each host as CPUs it should grant.
    let per_host = req.cpus_per_node.unwrap_or(1);
    if per_host == 0 || req.nodes == 0 {
        return Err(SchedulerError::BadRequest(format!(
            "a job of {} host(s) with {per_host} CPU(s) each asks LSF for no slots",
            req.nodes
        )));
    }
    let slots = u64::from(req.nodes) * u64::from(per_host);
    let mut directives = vec![format!("#BSUB -R \"{}\"", resource_requirement(req)?)];
    if let Some(g) = req.gpus_per_node.filter(|g| *g > 0) {
        directives.push(format!("#BSUB -gpu \"num={g}\""));
    }
    if let Some(q) = &req.queue {
        directives.push(format!("#BSUB -q {}", argument("queue", q)?));
    }
    if let Some(a) = &req.account {
        directives.push(format!("#BSUB -P {}", argument("account", a)?));
    }
    if let Some(w) = req.walltime {
        directives.push(format!("#BSUB -W {}", walltime(w)));
    }
    directives.extend(req.directives.iter().cloned());
    Ok(TEMPLATE
        .replace("@NAME@", &name)
        .replace("@SLOTS@", &slots.to_string())
        .replace("@WARNING@\n", &warning_lines(warning))
        .replace("@OUTPUT@", &output)
        .replace("@DIRECTIVES@\n", &lines(&directives))
        .replace("@ENV@\n", &lines(&export_lines(&req.env)))
        .replace("@COMMAND@", &req.command))
}

fn lines(v: &[String]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::OutputPath;

    fn request() -> JobRequest {
        JobRequest {
            name: "rh-c1".into(),
            nodes: 3,
            output: OutputPath("/h/out-{job_id}.log".into()),
            command: "/bin/ray-hpc run --name c1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn walltimes_in_lsfs_syntax() {
        for (secs, want) in [
            (30 * 60, "0:30"),
            (90 * 60, "1:30"),
            (3600 + 1, "1:01"),
            (1, "0:01"),
            (0, "0:01"),
            (49 * 3600, "49:00"),
        ] {
            assert_eq!(walltime(Duration::from_secs(secs)), want, "{secs}");
        }
    }

    #[test]
    fn a_bare_request_gets_one_slot_per_host() {
        let script = render(&request(), Some("URG")).unwrap();
        for line in [
            "#BSUB -J rh-c1",
            "#BSUB -n 3",
            "#BSUB -R \"span[ptile=1]\"",
            "#BSUB -o /h/out-%J.log",
            "#BSUB -wa URG -wt 2",
            "exec /bin/ray-hpc run --name c1",
        ] {
            assert!(script.lines().any(|l| l == line), "{line:?} in\n{script}");
        }
        for absent in ["-gpu", "-q ", "-P ", "-W ", "rusage", "select", "@"] {
            assert!(!script.contains(absent), "{absent:?} in\n{script}");
        }
    }

    #[test]
    fn values_that_cannot_be_written_are_refused_naming_the_field() {
        type Change = fn(&mut JobRequest);
        let cases: [(Change, &str); 7] = [
            (|r| r.qos = Some("high".into()), "qos"),
            (|r| r.name = "rh-x[1-4]".into(), "name"),
            (|r| r.queue = Some("a\"b".into()), "queue"),
            (|r| r.account = Some(String::new()), "account"),
            (|r| r.constraint = Some("x]".into()), "constraint"),
            (|r| r.cpus_per_node = Some(0), "CPU"),
            (|r| r.directives = vec!["#SBATCH -N 1".into()], "#BSUB"),
        ];
        for (change, word) in cases {
            let mut req = request();
            change(&mut req);
            let err = render(&req, Some("URG")).unwrap_err().to_string();
            assert!(err.contains(word), "{word}: {err}");
        }
        let mut req = request();
        req.qos = Some("high".into());
        let err = render(&req, Some("URG")).unwrap_err().to_string();
        assert!(err.contains("extra_directives"), "{err}");
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        let mut req = request();
        req.output = OutputPath("/h/my dir/{job_id}.out".into());
        let script = render(&req, None).unwrap();
        assert!(
            script.contains("#BSUB -o \"/h/my dir/%J.out\"\n"),
            "{script}"
        );
    }
}
