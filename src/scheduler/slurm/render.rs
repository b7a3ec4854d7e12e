//! A typed job request as a Slurm batch script (slurm/ray-cluster.sbatch.in): one `#SBATCH` line
//! per request field, in Slurm's own syntax, then the user's own lines.

use std::time::Duration;

use crate::scheduler::{JobRequest, SchedulerError, clock, export_lines, header_line_problem};

/// The job script template.
const TEMPLATE: &str = include_str!("../../../slurm/ray-cluster.sbatch.in");

/// What Slurm writes for the job's id in `--output`.
const JOB_ID_TOKEN: &str = "%j";

/// What is wrong with a user's header line, if anything: it must be one `#SBATCH ` line.
pub fn directive_problem(line: &str) -> Option<String> {
    header_line_problem(line, "#SBATCH ")
}

/// A walltime as `--time` takes it: `[D-]HH:MM:SS`.
pub fn walltime(d: Duration) -> String {
    clock(d)
}

/// Memory as `--mem` takes it: whole MiB, rounded up.
fn memory(bytes: u64) -> String {
    format!("{}M", bytes.div_ceil(1024 * 1024))
}

/// Renders `req` into the template.
pub fn render(req: &JobRequest) -> Result<String, SchedulerError> {
    req.check_directives(directive_problem)?;
    let mut directives: Vec<String> = Vec::new();
    let mut directive = |flag: &str, value: Option<String>| {
        if let Some(v) = value {
            directives.push(format!("#SBATCH --{flag}={v}"));
        }
    };
    directive("cpus-per-task", req.cpus_per_node.map(|c| c.to_string()));
    directive("gpus-per-node", req.gpus_per_node.map(|g| g.to_string()));
    directive("mem", req.memory_per_node.map(memory));
    directive("partition", req.queue.clone());
    directive("account", req.account.clone());
    directive("qos", req.qos.clone());
    directive("constraint", req.constraint.clone());
    directive("time", req.walltime.map(walltime));
    directives.extend(req.directives.iter().cloned());
    Ok(TEMPLATE
        .replace("@NAME@", &req.name)
        .replace("@NODES@", &req.nodes.to_string())
        .replace("@OUTPUT@", &req.output.with_job_id_as(JOB_ID_TOKEN))
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

    #[test]
    fn walltimes_in_slurms_syntax() {
        for (secs, want) in [
            (30 * 60, "00:30:00"),
            (3600 + 61, "01:01:01"),
            (86_400, "1-00:00:00"),
            (2 * 86_400 + 3 * 3600 + 4 * 60 + 5, "2-03:04:05"),
        ] {
            assert_eq!(walltime(Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn foreign_header_lines_are_refused_naming_them() {
        let req = JobRequest {
            directives: vec!["#BSUB -x".into()],
            ..Default::default()
        };
        let err = render(&req).unwrap_err().to_string();
        assert!(err.contains("#BSUB -x") && err.contains("#SBATCH"), "{err}");
    }
}
