//! The ResourceManager's services REST API (`/app/v1`), simple auth (`?user.name=`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::super::command::{CommandError, CommandOutput, HttpRequest};
use super::super::{Runner, SchedulerError};
use super::Api;
use super::status::Service;

/// What the error for a ResourceManager without the services API says, so `auto` can tell it.
pub const API_OFF: &str = "does not serve the YARN services REST API (/app/v1)";

pub struct Rest {
    /// The ResourceManager's web address without a trailing slash, or why there is none.
    pub rm: Result<String, String>,
    pub user: String,
    pub runner: Arc<dyn Runner>,
}

/// A call's answer, sorted.
enum Answer {
    Ok,
    /// The API answered that there is no such service.
    NotFound(String),
    /// HTTP 204: the API took the request and did nothing (an older YARN that lacks it).
    NoContent,
}

impl Rest {
    fn url(&self, path: &str) -> Result<String, SchedulerError> {
        let rm = self
            .rm
            .as_ref()
            .map_err(|why| SchedulerError::BadSettings {
                section: super::NAME.into(),
                why: why.clone(),
            })?;
        Ok(format!("{rm}/app/v1/{path}?user.name={}", self.user))
    }

    /// One call: its body on success, or the sorted failure.
    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<String>,
    ) -> Result<(Answer, String), SchedulerError> {
        let req = HttpRequest {
            method,
            url: self.url(path)?,
            body,
        };
        let out = self.runner.http(&req).await?;
        Ok((sort_answer(&req, &out)?, out.stdout))
    }
}

#[async_trait::async_trait]
impl Api for Rest {
    async fn create(
        &self,
        _service: &str,
        spec: &str,
        _spec_file: Option<&Path>,
    ) -> Result<(), SchedulerError> {
        match self.call("POST", "services", Some(spec.into())).await?.0 {
            Answer::Ok | Answer::NoContent => Ok(()),
            Answer::NotFound(_) => Err(api_off(&self.url("services")?)),
        }
    }

    async fn status(&self, service: &str) -> Result<Option<Service>, SchedulerError> {
        let path = format!("services/{service}");
        match self.call("GET", &path, None).await? {
            (Answer::Ok, body) => {
                serde_json::from_str(&body)
                    .map(Some)
                    .map_err(|e| SchedulerError::BadOutput {
                        command: format!("GET {}", self.url(&path).unwrap_or(path.clone())),
                        why: format!("not a YARN service's status: {e}"),
                    })
            }
            _ => Ok(None),
        }
    }

    async fn flex(&self, service: &str, component: &str, count: u64) -> Result<(), SchedulerError> {
        let body = serde_json::json!({ "number_of_containers": count }).to_string();
        let path = format!("services/{service}/components/{component}");
        match self.call("PUT", &path, Some(body)).await?.0 {
            Answer::Ok | Answer::NoContent => Ok(()),
            Answer::NotFound(words) => Err(SchedulerError::Refused {
                command: format!("PUT {path}"),
                message: words,
            }),
        }
    }

    async fn decommission(
        &self,
        service: &str,
        instances: &BTreeMap<&str, Vec<&str>>,
    ) -> Result<bool, SchedulerError> {
        let components: Vec<serde_json::Value> = instances
            .iter()
            .map(|(name, names)| {
                serde_json::json!({ "name": name, "decommissioned_instances": names })
            })
            .collect();
        let body = serde_json::json!({ "components": components }).to_string();
        match self
            .call("PUT", &format!("services/{service}"), Some(body))
            .await
        {
            Ok((Answer::Ok | Answer::NotFound(_), _)) => Ok(true),
            Ok((Answer::NoContent, _)) => Ok(false),
            Err(SchedulerError::Refused { message, .. }) if says_gone(&message) => Ok(true),
            Err(e) => Err(e),
        }
    }

    async fn stop(&self, service: &str) -> Result<(), SchedulerError> {
        let stop = serde_json::json!({ "state": "STOPPED" }).to_string();
        match self
            .call("PUT", &format!("services/{service}"), Some(stop))
            .await
        {
            Ok(_) => Ok(()),
            Err(SchedulerError::Refused { message, .. }) if says_gone(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn destroy(&self, service: &str) -> Result<(), SchedulerError> {
        match self
            .call("DELETE", &format!("services/{service}"), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(SchedulerError::Refused { message, .. }) if says_gone(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Sorts an HTTP answer: success, "no such service", or an error carrying YARN's words.
fn sort_answer(req: &HttpRequest, out: &CommandOutput) -> Result<Answer, SchedulerError> {
    let command = format!("{} {}", req.method, req.url);
    let code = out.code.unwrap_or(0);
    let diagnostics = diagnostics_of(&out.stdout);
    match (code, diagnostics) {
        (204, _) => Ok(Answer::NoContent),
        (200..=299, _) => Ok(Answer::Ok),
        (404, Some(words)) => Ok(Answer::NotFound(words)),
        (404, None) => Err(api_off(&req.url)),
        (401 | 403, words) => Err(SchedulerError::Refused {
            command,
            message: format!(
                "HTTP {code}: the ResourceManager wants an authenticated user{}; ray-hpc speaks \
                 simple auth (user.name); Kerberos (SPNEGO) clusters are not supported yet",
                words.map(|d| format!(" ({d})")).unwrap_or_default()
            ),
        }),
        (400..=599, words) => Err(SchedulerError::Refused {
            command,
            message: words.unwrap_or_else(|| format!("HTTP {code}: {}", short(&out.stdout))),
        }),
        _ => Err(SchedulerError::BadOutput {
            command,
            why: format!("HTTP {code}: {}", short(&out.stdout)),
        }),
    }
}

/// YARN's own words in an error answer (`{"diagnostics": "..."}`).
fn diagnostics_of(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Status {
        diagnostics: Option<String>,
    }
    serde_json::from_str::<Status>(body)
        .ok()
        .and_then(|s| s.diagnostics)
        .filter(|d| !d.trim().is_empty())
}

/// Text on one line, at most 300 characters.
pub fn short(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 300 {
        format!("{}...", one_line.chars().take(300).collect::<String>())
    } else {
        one_line
    }
}

/// YARN saying the service is gone or already stopped: what stop and destroy want anyway.
pub fn says_gone(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("doesn't exist")
        || m.contains("does not exist")
        || m.contains("not found")
        || m.contains("already stopped")
}

/// The error for a ResourceManager that does not serve the services API.
fn api_off(url: &str) -> SchedulerError {
    SchedulerError::Command(CommandError::Spawn {
        command: url.split('?').next().unwrap_or(url).to_string(),
        why: format!(
            "the ResourceManager {API_OFF}: its administrator enables it with \
             yarn.webapp.api-service.enable=true in yarn-site.xml; or install the Hadoop client \
             (`yarn` on PATH) and set [yarn] api = \"cli\""
        ),
    })
}

pub fn is_api_off(e: &SchedulerError) -> bool {
    e.to_string().contains(API_OFF)
}
