//! The one way adapters talk to their scheduler: commands, and HTTP requests for schedulers
//! with a REST API, each async, bounded by a timeout per call, with the command line (or the
//! method and URL), the exit status (or HTTP status) and stderr (or the body) in every error.
//!
//! A controller that is slow or hung must never hold up the caller past the timeout: each
//! command runs in a process group of its own, and the whole group is killed when the timeout
//! fires or the caller stops waiting (the future is dropped), so a wrapper script cannot leave
//! its children behind either.
//!
//! Adapters get a [`Runner`] rather than spawning processes themselves, so the conformance suite
//! can hand them recorded outputs ([`Recorded`]) and check the command lines they build.

use std::collections::VecDeque;
use std::fmt;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Default bound on one scheduler command (the config's `scheduler_timeout_s`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most output one command may return, per stream. A scheduler that answers with more is
/// broken; we stop reading rather than grow without bound.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

/// Longest total of the ids one batched call carries: a single argument may not exceed 128 KiB
/// (MAX_ARG_STRLEN), and schedulers join ids into one argument.
pub const BATCH_MAX_BYTES: usize = 64 * 1024;

/// A command to run: program, arguments, and what goes to its stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Written to the command's stdin, which is then closed (a job script, for instance).
    pub stdin: Option<String>,
    /// Variables removed from the command's environment.
    pub env_remove: Vec<String>,
}

impl CommandSpec {
    pub fn new(program: &str) -> Self {
        CommandSpec {
            program: program.to_string(),
            ..Default::default()
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn stdin(mut self, text: impl Into<String>) -> Self {
        self.stdin = Some(text.into());
        self
    }
}

impl fmt::Display for CommandSpec {
    /// The command line as a user would type it (for messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::shell_quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", super::shell_quote(a))?;
        }
        Ok(())
    }
}

/// What a command printed and how it exited. A non-zero exit is not an error here: some
/// schedulers say "already gone" that way, and only the adapter knows which.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; None when a signal ended the command.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// A finished command with exit code 0 and this stdout (for recorded outputs).
    pub fn ok(stdout: &str) -> Self {
        CommandOutput {
            code: Some(0),
            stdout: stdout.to_string(),
            stderr: String::new(),
        }
    }

    /// A command that failed with `code` and this stderr (for recorded outputs).
    pub fn failed(code: i32, stderr: &str) -> Self {
        CommandOutput {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }

    /// Its stdout when it succeeded, else the failure as an error.
    pub fn stdout_if_ok(self, spec: &CommandSpec) -> Result<String, CommandError> {
        if self.success() {
            Ok(self.stdout)
        } else {
            Err(CommandError::failed(spec, &self))
        }
    }
}

/// Why a scheduler command did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("`{command}` could not be run: {why}")]
    Spawn { command: String, why: String },
    #[error(
        "`{command}` did not answer within {}s (scheduler_timeout_s); the scheduler may be overloaded or down",
        after.as_secs_f64()
    )]
    Timeout { command: String, after: Duration },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        /// "exit code N" or "killed by signal".
        status: String,
        stderr: String,
    },
}

impl CommandError {
    pub fn failed(spec: &CommandSpec, out: &CommandOutput) -> Self {
        let stderr = out.stderr.trim();
        CommandError::Failed {
            command: spec.to_string(),
            status: match out.code {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".into(),
            },
            stderr: if stderr.is_empty() {
                "(no message)".into()
            } else {
                stderr.to_string()
            },
        }
    }

    /// The command line it is about.
    pub fn command(&self) -> &str {
        match self {
            CommandError::Spawn { command, .. }
            | CommandError::Timeout { command, .. }
            | CommandError::Failed { command, .. } => command,
        }
    }
}

/// An HTTP request to a scheduler's REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// GET, POST, PUT or DELETE.
    pub method: &'static str,
    pub url: String,
    /// A JSON body.
    pub body: Option<String>,
}

impl HttpRequest {
    /// The request as a command-like spec: the method as the program, the URL as its argument
    /// and the body as its stdin. Messages show it that way, and recorded answers match it.
    pub fn as_spec(&self) -> CommandSpec {
        CommandSpec {
            program: self.method.to_string(),
            args: vec![self.url.clone()],
            stdin: self.body.clone(),
            env_remove: vec![],
        }
    }
}

/// Runs scheduler commands and HTTP requests. [`Process`] is the real one.
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    async fn run(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError>;

    /// An HTTP request; the answer's `code` is the HTTP status and `stdout` the body.
    async fn http(&self, req: &HttpRequest) -> Result<CommandOutput, CommandError>;
}

/// Runs commands as processes, each bounded by `timeout`.
#[derive(Debug, Clone)]
pub struct Process {
    pub timeout: Duration,
}

impl Default for Process {
    fn default() -> Self {
        Process {
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Kills a command's whole process group when dropped before the command was reaped: on a
/// timeout, and when the caller's future is dropped mid-call.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[async_trait::async_trait]
impl Runner for Process {
    async fn run(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(if spec.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().map_err(|e| CommandError::Spawn {
            command: spec.to_string(),
            why: e.to_string(),
        })?;
        let mut guard = GroupGuard {
            pgid: child.id().map(|p| p as i32),
        };
        let finished = tokio::time::timeout(self.timeout, async {
            let stdin = child.stdin.take();
            let mut stdout = child.stdout.take().expect("piped");
            let mut stderr = child.stderr.take().expect("piped");
            let write = async {
                if let (Some(mut w), Some(text)) = (stdin, spec.stdin.as_deref()) {
                    // A command that exits without reading all of its input is its own
                    // business: its exit status says what happened.
                    let _ = w.write_all(text.as_bytes()).await;
                }
            };
            let (_, out, err) =
                tokio::join!(write, read_bounded(&mut stdout), read_bounded(&mut stderr));
            let status = child.wait().await;
            (status, out, err)
        })
        .await;
        let (status, stdout, stderr) = finished.map_err(|_| CommandError::Timeout {
            command: spec.to_string(),
            after: self.timeout,
        })?;
        let status = status.map_err(|e| CommandError::Spawn {
            command: spec.to_string(),
            why: format!("waiting for it: {e}"),
        })?;
        // Reaped: its id may be reused from now on, so the guard must not fire.
        guard.pgid = None;
        Ok(CommandOutput {
            code: status.code(),
            stdout,
            stderr,
        })
    }

    async fn http(&self, req: &HttpRequest) -> Result<CommandOutput, CommandError> {
        let shown = req.as_spec().to_string();
        match tokio::time::timeout(self.timeout, self.send(req)).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(why)) => Err(CommandError::Spawn {
                command: shown,
                why,
            }),
            Err(_) => Err(CommandError::Timeout {
                command: shown,
                after: self.timeout,
            }),
        }
    }
}

impl Process {
    fn http_client(&self) -> Result<&'static reqwest::Client, CommandError> {
        static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        if let Some(c) = CLIENT.get() {
            return Ok(c);
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| CommandError::Spawn {
                command: "HTTP client".into(),
                why: e.to_string(),
            })?;
        Ok(CLIENT.get_or_init(|| client))
    }

    async fn send(&self, req: &HttpRequest) -> Result<CommandOutput, String> {
        let method =
            reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut call = self
            .http_client()
            .map_err(|e| e.to_string())?
            .request(method, &req.url);
        if let Some(body) = &req.body {
            call = call
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = call.send().await.map_err(|e| e.to_string())?;
        let code = response.status().as_u16();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if body.len() + chunk.len() > MAX_OUTPUT_BYTES {
                return Err(format!(
                    "the answer is larger than {MAX_OUTPUT_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(CommandOutput {
            code: Some(i32::from(code)),
            stdout: String::from_utf8_lossy(&body).into_owned(),
            stderr: String::new(),
        })
    }
}

async fn read_bounded(r: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut buf = Vec::new();
    let _ = r.take(MAX_OUTPUT_BYTES as u64).read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Splits ids into as few batches as fit one command each ([`BATCH_MAX_BYTES`] of ids with
/// their separators): one call for many jobs, never an argument the kernel refuses.
pub fn batches(ids: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, id) in ids.iter().enumerate() {
        if i > start && bytes + id.len() + 1 > BATCH_MAX_BYTES {
            out.push(&ids[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += id.len() + 1;
    }
    if start < ids.len() {
        out.push(&ids[start..]);
    }
    out
}

/// Answers commands from a script of recorded outputs, in order, and remembers what it was
/// asked: how the conformance suite drives an adapter without its scheduler.
#[derive(Debug, Default)]
pub struct Recorded {
    answers: Mutex<VecDeque<Result<CommandOutput, CommandError>>>,
    calls: Mutex<Vec<CommandSpec>>,
}

impl Recorded {
    pub fn new(answers: impl IntoIterator<Item = Result<CommandOutput, CommandError>>) -> Self {
        Recorded {
            answers: Mutex::new(answers.into_iter().collect()),
            calls: Mutex::default(),
        }
    }

    /// Every command run so far.
    pub fn calls(&self) -> Vec<CommandSpec> {
        self.calls.lock().expect("not poisoned").clone()
    }
}

#[async_trait::async_trait]
impl Runner for Recorded {
    async fn http(&self, req: &HttpRequest) -> Result<CommandOutput, CommandError> {
        self.run(&req.as_spec()).await
    }

    async fn run(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
        self.calls.lock().expect("not poisoned").push(spec.clone());
        self.answers
            .lock()
            .expect("not poisoned")
            .pop_front()
            .unwrap_or_else(|| {
                Err(CommandError::Spawn {
                    command: spec.to_string(),
                    why: "no recorded answer left for it".into(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> CommandSpec {
        CommandSpec::new("sh").arg("-c").arg(script)
    }

    #[tokio::test]
    async fn output_exit_code_and_stdin_come_back() {
        let p = Process::default();
        let out = p
            .run(&sh("cat; echo err >&2; exit 3").stdin("script\n"))
            .await
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "script\n");
        assert_eq!(out.stderr, "err\n");
        let err = out.stdout_if_ok(&sh("x")).unwrap_err();
        assert!(err.to_string().contains("exit code 3"), "{err}");
        assert!(err.to_string().contains("err"), "{err}");
    }

    /// The pid a script wrote to `path`, once it has.
    async fn pid_in(path: &std::path::Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `pid` is gone (or a zombie); panics if it lives on.
    async fn assert_gone(pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z") {
                return;
            }
            assert!(Instant::now() < deadline, "process {pid} survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_hung_command_times_out_and_its_whole_group_is_killed() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("pid");
        let p = Process {
            timeout: Duration::from_secs(3),
        };
        // A wrapper whose child hangs: the child must not outlive the timeout.
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let started = Instant::now();
        let err = p.run(&sh(&script)).await.unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.to_string().contains("scheduler_timeout_s"), "{err}");
        assert_gone(pid_in(&pidfile).await).await;
    }

    #[tokio::test]
    async fn a_dropped_call_kills_its_command() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("pid");
        let p = Process::default();
        let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
        let spec = sh(&script);
        // Give up on the call as soon as its command has started.
        let pid = tokio::select! {
            _ = p.run(&spec) => panic!("sleep 300 returned"),
            pid = pid_in(&pidfile) => pid,
        };
        assert_gone(pid).await;
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error_naming_it() {
        let err = Process::default()
            .run(&CommandSpec::new("no-such-scheduler-command"))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }));
        assert!(
            err.to_string().contains("no-such-scheduler-command"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn http_answers_come_back_with_their_status_and_a_hung_server_times_out() {
        use axum::routing::{get, put};
        let app = axum::Router::new()
            .route(
                "/svc",
                put(|body: String| async move { (axum::http::StatusCode::ACCEPTED, body) }),
            )
            .route(
                "/hang",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let p = Process {
            timeout: Duration::from_millis(500),
        };
        let out = p
            .http(&HttpRequest {
                method: "PUT",
                url: format!("http://{addr}/svc"),
                body: Some("{\"a\":1}".into()),
            })
            .await
            .unwrap();
        assert_eq!((out.code, out.stdout.as_str()), (Some(202), "{\"a\":1}"));
        let missing = p
            .http(&HttpRequest {
                method: "GET",
                url: format!("http://{addr}/nothing"),
                body: None,
            })
            .await
            .unwrap();
        assert_eq!(missing.code, Some(404));
        let err = p
            .http(&HttpRequest {
                method: "GET",
                url: format!("http://{addr}/hang"),
                body: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("GET http://"), "{err}");
        server.abort();
        let refused = p
            .http(&HttpRequest {
                method: "GET",
                url: format!("http://{addr}/svc"),
                body: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(refused, CommandError::Spawn { .. }), "{refused}");
    }

    #[test]
    fn batches_keep_every_id_once_and_stay_small() {
        let ids: Vec<String> = (0..50_000).map(|i| format!("{}", 1_000_000 + i)).collect();
        let b = batches(&ids);
        assert!(b.len() > 1);
        assert!(
            b.iter()
                .all(|b| b.iter().map(|i| i.len() + 1).sum::<usize>() <= BATCH_MAX_BYTES)
        );
        assert_eq!(b.concat(), ids);
        let few: Vec<String> = vec!["1".into(), "2".into()];
        assert_eq!(batches(&few), vec![&few[..]]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn command_lines_are_shown_quoted() {
        let spec = CommandSpec::new("squeue").args(["-o", "%i %T"]);
        assert_eq!(spec.to_string(), "squeue -o '%i %T'");
    }
}
