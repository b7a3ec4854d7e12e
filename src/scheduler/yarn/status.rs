//! What `GET /app/v1/services/{name}` says, as ray-hpc's jobs: the service is the cluster's
//! job, each worker container instance is a job of its own (`<service>:<instance>`).

use serde::Deserialize;

use super::super::{EndReason, JobInfo, JobState, SchedulerError};
use super::spec::HEAD_COMPONENT;

/// A job of a YARN cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobId {
    /// The whole service (the cluster's own job, what `up` submitted).
    Service(String),
    /// One container instance of a worker component (what a flex added).
    Instance {
        service: String,
        component: String,
        /// `<component>-<index>`, YARN's name for it.
        instance: String,
        index: u64,
    },
}

impl JobId {
    pub fn parse(id: &str) -> Result<JobId, SchedulerError> {
        let Some((service, instance)) = id.split_once(':') else {
            return Ok(JobId::Service(id.to_string()));
        };
        let bad = || {
            SchedulerError::BadRequest(format!(
                "{id:?} is not a YARN job of ray-hpc's (SERVICE or SERVICE:COMPONENT-INDEX)"
            ))
        };
        let (component, index) = instance.rsplit_once('-').ok_or_else(bad)?;
        let index = index.parse().map_err(|_| bad())?;
        if service.is_empty() || component.is_empty() {
            return Err(bad());
        }
        Ok(JobId::Instance {
            service: service.into(),
            component: component.into(),
            instance: instance.into(),
            index,
        })
    }

    pub fn service(&self) -> &str {
        match self {
            JobId::Service(s) => s,
            JobId::Instance { service, .. } => service,
        }
    }

    pub fn to_id(&self) -> String {
        match self {
            JobId::Service(s) => s.clone(),
            JobId::Instance {
                service, instance, ..
            } => format!("{service}:{instance}"),
        }
    }
}

/// The parts of a service's status ray-hpc reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    /// Seconds left of the service's lifetime, when it has one.
    #[serde(default)]
    pub lifetime: Option<i64>,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub diagnostics: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Component {
    pub name: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub number_of_containers: Option<u64>,
    #[serde(default)]
    pub decommissioned_instances: Vec<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub component_instance_name: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub bare_host: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
}

impl Service {
    fn word(&self) -> String {
        self.state.clone().unwrap_or_default().to_ascii_uppercase()
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// How the service ended, when it has.
    fn ended(&self) -> Option<EndReason> {
        match self.word().as_str() {
            "SUCCEEDED" => Some(EndReason::Completed),
            "STOPPED" => Some(EndReason::Cancelled),
            "FAILED" if self.says_lifetime() => Some(EndReason::Timeout),
            "FAILED" => Some(EndReason::Failed),
            _ => None,
        }
    }

    fn says_lifetime(&self) -> bool {
        self.diagnostics
            .as_deref()
            .is_some_and(|d| d.to_ascii_lowercase().contains("lifetime"))
    }

    /// The cluster's job: the service, judged by its head container.
    pub fn job(&self, id: &str) -> JobInfo {
        let word = self.word();
        let (state, reason) = match self.ended() {
            Some(how) => (JobState::Ended(how), None),
            None if word == "ACCEPTED" || word.is_empty() => (
                JobState::Pending,
                Some(format!(
                    "{}: YARN has yet to start the service's ApplicationMaster",
                    if word.is_empty() { "NEW" } else { &word }
                )),
            ),
            None => match self.head_container().map(Container::word) {
                Some(c) if is_live(&c) => (JobState::Running, None),
                Some(c) if is_over(&c) => (JobState::Completing, None),
                _ => (
                    JobState::Pending,
                    Some(format!(
                        "{word}: waiting for a container for {HEAD_COMPONENT}"
                    )),
                ),
            },
        };
        let time_left_s = match (&state, self.lifetime) {
            (JobState::Running, Some(left)) if left > 0 => Some(left as u64),
            _ => None,
        };
        JobInfo {
            id: id.to_string(),
            name: self.name.clone().unwrap_or_else(|| id.to_string()),
            state,
            reason,
            start_time: None,
            time_left_s,
        }
    }

    fn head_container(&self) -> Option<&Container> {
        self.component(HEAD_COMPONENT)?.containers.first()
    }

    /// One worker instance as a job; None when YARN has no such instance (never had, or it
    /// was flexed away).
    pub fn instance_job(&self, id: &JobId) -> Option<JobInfo> {
        let JobId::Instance {
            component,
            instance,
            index,
            ..
        } = id
        else {
            return Some(self.job(&id.to_id()));
        };
        let info = |state, reason: Option<String>| JobInfo {
            id: id.to_id(),
            name: self.name.clone().unwrap_or_default(),
            state,
            reason,
            start_time: None,
            time_left_s: None,
        };
        if let Some(how) = self.ended() {
            return Some(info(JobState::Ended(how), None));
        }
        let word = self.word();
        if word == "ACCEPTED" || word.is_empty() {
            return Some(info(
                JobState::Pending,
                Some("the service's ApplicationMaster is starting".into()),
            ));
        }
        let comp = self.component(component)?;
        if let Some(c) = comp
            .containers
            .iter()
            .find(|c| c.component_instance_name.as_deref() == Some(instance.as_str()))
        {
            let w = c.word();
            let state = match w.as_str() {
                w if is_live(w) => JobState::Running,
                "FAILED" => JobState::Ended(EndReason::Failed),
                // YARN's status does not carry the exit code; STOPPED is a container that ended.
                _ if is_over(&w) => JobState::Ended(EndReason::Completed),
                _ => JobState::Running,
            };
            return Some(info(state, None));
        }
        if comp.decommissioned_instances.iter().any(|d| d == instance) {
            return Some(info(JobState::Ended(EndReason::Cancelled), None));
        }
        (*index < comp.instances_created()).then(|| {
            info(
                JobState::Pending,
                Some(format!(
                    "waiting for a YARN container ({component} {})",
                    comp.state.as_deref().unwrap_or("FLEXING")
                )),
            )
        })
    }
}

impl Component {
    /// How many instance names YARN has handed out: it numbers them from 0, skips none but
    /// those decommissioned, and a flex down takes back the newest (so its number too).
    pub fn instances_created(&self) -> u64 {
        self.number_of_containers.unwrap_or(0) + self.decommissioned_instances.len() as u64
    }

    /// The name YARN gives the next instance a flex up adds.
    pub fn next_instance(&self) -> String {
        format!("{}-{}", self.name, self.instances_created())
    }
}

impl Container {
    fn word(&self) -> String {
        self.state.clone().unwrap_or_default().to_ascii_uppercase()
    }
}

fn is_live(word: &str) -> bool {
    matches!(
        word,
        "READY" | "RUNNING_BUT_UNREADY" | "UPGRADING" | "NEEDS_UPGRADE"
    )
}

fn is_over(word: &str) -> bool {
    matches!(word, "STOPPED" | "SUCCEEDED" | "FAILED")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_name_a_service_or_one_instance_of_it() {
        assert_eq!(
            JobId::parse("rh-c1").unwrap(),
            JobId::Service("rh-c1".into())
        );
        let id = JobId::parse("rh-c1:ray-worker-gpu-12").unwrap();
        assert_eq!(
            id,
            JobId::Instance {
                service: "rh-c1".into(),
                component: "ray-worker-gpu".into(),
                instance: "ray-worker-gpu-12".into(),
                index: 12
            }
        );
        assert_eq!(id.to_id(), "rh-c1:ray-worker-gpu-12");
        for bad in ["rh-c1:ray", "rh-c1:ray-x", ":ray-1", "rh-c1:-1"] {
            assert!(JobId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_next_instance_counts_the_decommissioned_ones() {
        let c = Component {
            name: "ray-worker-cpu".into(),
            state: None,
            number_of_containers: Some(2),
            decommissioned_instances: vec!["ray-worker-cpu-1".into()],
            containers: vec![],
        };
        assert_eq!(c.next_instance(), "ray-worker-cpu-3");
    }
}
