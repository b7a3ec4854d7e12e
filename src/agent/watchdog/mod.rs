//! The agent's watchdog: ends what an agent started when the agent dies without doing so.
//!
//! Why: an agent runs `ray start --block` (and the head its fan-out step) in a session of its
//! own (src/agent/supervisor.rs), so it can end exactly that tree. Once the agent is gone, by
//! SIGKILL from the out-of-memory killer say, that session is reparented to init and escapes
//! a scheduler that tracks processes by their parents: the raylet lingers for minutes, the
//! dashboard and runtime-env agents forever, and the node's temp dir and token file stay in
//! /tmp. A SIGKILL cannot be caught, so the cleanup has to live in another process.
//!
//! How: at its start an agent arms a watchdog, `ray-hpc watchdog --agent <pid>` (hidden),
//! spawned in a session of its own, deaf to the signals a terminal or a scheduler's cancel
//! sends (ignored from before exec). It forks once more and its parent exits, so it is not a
//! descendant of the agent: a scheduler that kills a task's whole tree by parentage at the end
//! of a job or step (seen on the test bed when the head died: the worker's step was killed
//! 20 ms later) kills the agent and its Ray but not the watchdog, which then removes what they
//! left. Its stdin is the read end of a pipe whose write end only the agent holds
//! (close-on-exec, so neither Ray nor the driver inherits it). Over it the agent says, one
//! line each:
//!
//! - `session <sid> <start time> <what>`: a session to end (sent by `Supervised::spawn`),
//!   `forget-session <sid>` once it is over (by `Supervised::stop` and its drop);
//! - `path <p>`: a file or directory to remove (node temp dirs, by `node::start_node`; the
//!   worker's token file), `forget-path <p>` once removed (by `node::remove_temp_dir`);
//! - `pid <pid> <start time>`: a process to end (the head's driver);
//! - `record <cluster dir>`: the cluster record to mark FAILED (the head);
//! - `done`: the agent tore down itself; the watchdog exits doing nothing.
//!
//! The watchdog blocks reading. The kernel closes the write end whenever the agent ends, so
//! end of input without `done` means the agent died, however it died. Then the watchdog ends
//! every session it was told about as `Supervised::stop` does (the same
//! [`SessionStop`](super::supervisor::SessionStop) steps: SIGTERM to the `ray start` leader,
//! which stops Ray in order in about 2 s; SIGKILL to what is left once the leader is gone or
//! nothing has exited for 3 s), ends the watched processes (SIGTERM, SIGKILL after the grace
//! period), removes the watched paths, marks the record FAILED, says what it did on stderr
//! (where the agent's stderr went: the job output for the head) and exits. Sessions and temp
//! dirs are reported where they are made and removed, through a process-wide handle; so the
//! agents only arm and disarm (src/cli/) and name the few things only they know (the worker's
//! token file; the head's driver and record). An agent that is not armed (unit tests) sends
//! nothing and behaves as before.
//!
//! Safety: it ends only what it was told about, never anything found by name. A pid and its
//! start time (`/proc/<pid>/stat` field 22) name one process for good, so a reused pid is left
//! alone; a session is named by its leader's pid and start time the same way. Once the leader
//! is gone the session id stays reserved while any process of the session lives (the kernel
//! keeps a pid that names a session); a session that ends normally is forgotten at once, and
//! `done` covers the rest, so the watchdog does not act on a recycled session id.
//!
//! Limits: it lives as long as its agent plus its cleanup (seconds). A scheduler that kills
//! by cgroup kills it with the agent and Ray at the end of a job; temp dirs can stay then. It
//! costs one idle process per agent: a blocking read, no async runtime, about 0.6 MB of memory
//! of its own (the rest of its resident size is the executable's pages, shared with the agent).
//!
//! Layout: protocol.rs, the pipe's lines ([`Order`]); the watchdog process in serve.rs (its
//! `main`, leaving the agent's tree, reading orders), watch.rs (what it was told, as it
//! stands) and cleanup.rs (what it does once the agent is gone); handle.rs, the agent's end
//! ([`Watchdog`], [`arm`], [`disarm`] and the `watch_*`/`forget_*` reports).

mod cleanup;
mod handle;
mod protocol;
mod serve;
mod watch;

pub use cleanup::{Agent, head_died_message};
pub use handle::{
    Watchdog, arm, disarm, forget_path, forget_session, watch_path, watch_pid, watch_record,
    watch_session,
};
pub use protocol::{Order, ProtocolError};
pub use serve::{Ending, IGNORED, main, serve};
pub use watch::Watch;
