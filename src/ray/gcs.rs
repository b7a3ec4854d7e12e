//! Client for the Ray GCS autoscaler API (`ray.rpc.autoscaler.AutoscalerStateService`).
//!
//! The service is served by the GCS itself, on the GCS port (`ray start --port`), as plaintext
//! HTTP/2 gRPC. We use it to read the cluster's nodes and pending demand, to report what we are
//! doing about it (what `ray status` shows under Pending / Recent failures) and to drain nodes.
//!
//! Two rules the GCS imposes (see DESIGN.md, "Ray facts"):
//! - `GetClusterResourceState` is always sent with `last_seen_cluster_resource_state_version = 0`:
//!   a value above the GCS's own counter aborts the GCS, and that counter resets on restart.
//! - In token mode every call carries `authorization: Bearer <token>`; we never send
//!   `ray_cluster_id` metadata (a wrong value is rejected, and it is optional).

use std::time::Duration;

use tonic::codegen::InterceptedService;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::proto::ray::autoscaler::autoscaler_state_service_client::AutoscalerStateServiceClient;
use crate::proto::ray::autoscaler::{
    AutoscalingState, ClusterResourceConstraint, ClusterResourceState, DrainNodeReason,
    DrainNodeReply, DrainNodeRequest, GetClusterResourceStateRequest, GetClusterStatusReply,
    GetClusterStatusRequest, ReportAutoscalingStateRequest,
    RequestClusterResourceConstraintRequest,
};

/// Length of a Ray NodeID in bytes. The GCS aborts on a malformed id, so we check before sending.
pub const NODE_ID_LEN: usize = 28;

/// Replies can list every node of a large cluster; tonic's default 4 MiB limit is too small.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Why a GCS call failed. [`GcsError::is_transient`] tells the errors worth retrying (the GCS is
/// not up yet, or did not answer in time) from those that need the user (bad address, bad token).
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    #[error("invalid GCS address {address:?}: {reason} (expected host:port, e.g. 10.0.0.1:6379)")]
    InvalidAddress { address: String, reason: String },

    #[error(
        "the Ray auth token cannot be sent as gRPC metadata ({reason}); check the token file \
         (it must be a single line of printable ASCII)"
    )]
    InvalidToken { reason: String },

    #[error(
        "invalid Ray node id {node_id:?}: expected {NODE_ID_LEN} bytes (56 hex digits), got {len}"
    )]
    InvalidNodeId { node_id: String, len: usize },

    #[error(
        "the GCS at {address} is not reachable yet ({detail}); if the Ray head is still starting, \
         retry; otherwise check that it is running and that the address and port are right"
    )]
    Unreachable { address: String, detail: String },

    #[error(
        "the GCS at {address} did not answer {method} within {after:?}; it may be overloaded or \
         still starting: retry"
    )]
    Timeout {
        address: String,
        method: &'static str,
        after: Duration,
    },

    #[error("the GCS at {address} refused {method}: unauthenticated ({detail}); {}",
        auth_hint(*.token_sent))]
    Unauthenticated {
        address: String,
        method: &'static str,
        detail: String,
        token_sent: bool,
    },

    #[error("GCS call {method} to {address} failed: {code:?}: {message}")]
    Rpc {
        address: String,
        method: &'static str,
        code: Code,
        message: String,
    },
}

fn auth_hint(token_sent: bool) -> &'static str {
    if token_sent {
        "the Ray auth token we sent does not match the cluster's: use the token file the head was \
         started with (its RAY_AUTH_TOKEN_PATH)"
    } else {
        "the cluster runs token auth (RAY_AUTH_MODE=token) but no token was given: pass the \
         cluster's Ray auth token"
    }
}

impl GcsError {
    /// True when retrying later may succeed: the GCS is not listening (yet), went away, or was
    /// slow. Callers waiting for a head to come up poll while this holds.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GcsError::Unreachable { .. } | GcsError::Timeout { .. }
        )
    }

    /// True when the GCS refused our credentials.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, GcsError::Unauthenticated { .. })
    }

    fn from_status(address: &str, method: &'static str, token_sent: bool, status: Status) -> Self {
        let address = address.to_string();
        let message = status.message().to_string();
        match status.code() {
            Code::Unavailable => GcsError::Unreachable {
                address,
                detail: if message.is_empty() {
                    "unavailable".to_string()
                } else {
                    message
                },
            },
            Code::Unauthenticated => GcsError::Unauthenticated {
                address,
                method,
                detail: message,
                token_sent,
            },
            code => GcsError::Rpc {
                address,
                method,
                code,
                message,
            },
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone)]
struct BearerAuth {
    header: Option<AsciiMetadataValue>,
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A connection to one GCS. Cheap to clone (clones share the HTTP/2 connection); the channel
/// reconnects by itself after the GCS restarts.
#[derive(Clone)]
pub struct GcsClient {
    address: String,
    timeout: Duration,
    token_sent: bool,
    inner: AutoscalerStateServiceClient<InterceptedService<Channel, BearerAuth>>,
}

impl std::fmt::Debug for GcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("GcsClient")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .field("token", &self.token_sent.then_some("<redacted>"))
            .finish()
    }
}

impl GcsClient {
    /// Connects to the GCS at `address` ("host:port"; "[v6addr]:port" for IPv6). `auth_token` is
    /// the cluster's Ray auth token (surrounding whitespace, e.g. a file's trailing newline, is
    /// dropped); `timeout` bounds the connection attempt and each call.
    ///
    /// Fails with [`GcsError::Unreachable`] while nothing listens there yet.
    pub async fn connect(
        address: &str,
        auth_token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, GcsError> {
        let header = match auth_token {
            None => None,
            Some(token) => {
                let token = token.trim();
                if token.is_empty() {
                    return Err(GcsError::InvalidToken {
                        reason: "it is empty".to_string(),
                    });
                }
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(GcsError::InvalidToken {
                        reason: "it contains spaces, control or non-ASCII characters".to_string(),
                    });
                }
                let mut value =
                    AsciiMetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                        GcsError::InvalidToken {
                            reason: "it contains characters not allowed in a header".to_string(),
                        }
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let endpoint = endpoint(address)?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| GcsError::Unreachable {
                address: address.to_string(),
                detail: error_chain(&e),
            })?;
        let token_sent = header.is_some();
        let inner = AutoscalerStateServiceClient::with_interceptor(channel, BearerAuth { header })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(GcsClient {
            address: address.to_string(),
            timeout,
            token_sent,
            inner,
        })
    }

    /// The "host:port" this client talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The cluster's nodes, pending resource and gang (placement group) requests and
    /// `request_resources` constraints. Always asks with last-seen version 0 (see module docs).
    pub async fn cluster_resource_state(&self) -> Result<ClusterResourceState, GcsError> {
        let request = self.request(GetClusterResourceStateRequest {
            last_seen_cluster_resource_state_version: 0,
        });
        let mut client = self.inner.clone();
        let outcome =
            tokio::time::timeout(self.timeout, client.get_cluster_resource_state(request)).await;
        let reply = self.finish("GetClusterResourceState", outcome)?;
        Ok(reply.cluster_resource_state.unwrap_or_default())
    }

    /// The last autoscaling state reported to the GCS together with the cluster resource state
    /// (what `ray status` prints).
    pub async fn cluster_status(&self) -> Result<GetClusterStatusReply, GcsError> {
        let request = self.request(GetClusterStatusRequest {});
        let mut client = self.inner.clone();
        let outcome = tokio::time::timeout(self.timeout, client.get_cluster_status(request)).await;
        self.finish("GetClusterStatus", outcome)
    }

    /// Asks the GCS to drain the node `node_id` (28 bytes). `deadline_ms` is a Unix time in ms
    /// (0: none); Ray does not enforce it. IDLE_TERMINATION is refused for a busy node;
    /// PREEMPTION is always accepted. The reply tells whether it was accepted and why not.
    pub async fn drain_node(
        &self,
        node_id: &[u8],
        reason: DrainNodeReason,
        message: &str,
        deadline_ms: i64,
    ) -> Result<DrainNodeReply, GcsError> {
        check_node_id(node_id)?;
        let request = self.request(DrainNodeRequest {
            node_id: node_id.to_vec(),
            reason: reason as i32,
            reason_message: message.to_string(),
            deadline_timestamp_ms: deadline_ms,
        });
        let mut client = self.inner.clone();
        let outcome = tokio::time::timeout(self.timeout, client.drain_node(request)).await;
        self.finish("DrainNode", outcome)
    }

    /// Reports our autoscaling state (pending and failed instance requests, infeasible demand).
    /// The GCS drops a report whose `autoscaler_state_version` is lower than the last one's: use
    /// a Unix-ms stamp.
    pub async fn report_autoscaling_state(&self, state: AutoscalingState) -> Result<(), GcsError> {
        let request = self.request(ReportAutoscalingStateRequest {
            autoscaling_state: Some(state),
        });
        let mut client = self.inner.clone();
        let outcome =
            tokio::time::timeout(self.timeout, client.report_autoscaling_state(request)).await;
        self.finish("ReportAutoscalingState", outcome).map(drop)
    }

    /// Sets the cluster's resource constraint, like `ray.autoscaler.sdk.request_resources`
    /// (replaces the previous one).
    pub async fn request_cluster_resource_constraint(
        &self,
        constraint: ClusterResourceConstraint,
    ) -> Result<(), GcsError> {
        let request = self.request(RequestClusterResourceConstraintRequest {
            cluster_resource_constraint: Some(constraint),
        });
        let mut client = self.inner.clone();
        let outcome = tokio::time::timeout(
            self.timeout,
            client.request_cluster_resource_constraint(request),
        )
        .await;
        self.finish("RequestClusterResourceConstraint", outcome)
            .map(drop)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        // Tells the GCS our deadline too (grpc-timeout).
        request.set_timeout(self.timeout);
        request
    }

    /// Maps the outcome of one call (under our timeout) to its reply or a [`GcsError`].
    fn finish<Rep>(
        &self,
        method: &'static str,
        outcome: Result<Result<tonic::Response<Rep>, Status>, tokio::time::error::Elapsed>,
    ) -> Result<Rep, GcsError> {
        match outcome {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) if !is_timeout(&status) => Err(GcsError::from_status(
                &self.address,
                method,
                self.token_sent,
                status,
            )),
            Err(_) | Ok(Err(_)) => Err(GcsError::Timeout {
                address: self.address.clone(),
                method,
                after: self.timeout,
            }),
        }
    }
}

/// A deadline passed: the server's (DEADLINE_EXCEEDED) or tonic's own client-side one (CANCELLED
/// with a `TimeoutExpired` source, from the grpc-timeout we set).
fn is_timeout(status: &Status) -> bool {
    if status.code() == Code::DeadlineExceeded {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn endpoint(address: &str) -> Result<Endpoint, GcsError> {
    let invalid = |reason: &str| GcsError::InvalidAddress {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    if address.is_empty() {
        return Err(invalid("it is empty"));
    }
    if address.contains("://") {
        return Err(invalid("give host:port without a scheme"));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(invalid("no port"));
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(invalid("the port is not a number in 1-65535"));
    }
    Endpoint::from_shared(format!("http://{address}")).map_err(|e| invalid(&error_chain(&e)))
}

fn check_node_id(node_id: &[u8]) -> Result<(), GcsError> {
    if node_id.len() == NODE_ID_LEN {
        Ok(())
    } else {
        Err(GcsError::InvalidNodeId {
            node_id: node_id_hex(node_id),
            len: node_id.len(),
        })
    }
}

/// Observes the cluster in a task of its own: a snapshot of its resource state every `period`
/// (a failed call leaves the last one), for everyone who watches the receiver. Waiting on the
/// GCS there never holds up the loop that handles signals. The task ends when every receiver
/// is gone.
pub fn observe_every(
    client: GcsClient,
    period: Duration,
) -> (
    tokio::sync::watch::Receiver<Option<std::sync::Arc<ClusterResourceState>>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tx.closed() => return,
            }
            match client.cluster_resource_state().await {
                Ok(state) => {
                    if tx.send(Some(std::sync::Arc::new(state))).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!("observing the cluster: {e}"),
            }
        }
    });
    (rx, task)
}

/// Ray's textual form of a NodeID (lowercase hex, as `ray list nodes` prints it).
pub fn node_id_hex(node_id: &[u8]) -> String {
    hex::encode(node_id)
}

/// Parses Ray's textual NodeID (56 hex digits) back into its 28 bytes.
pub fn node_id_from_hex(text: &str) -> Result<Vec<u8>, GcsError> {
    let bytes = hex::decode(text.trim()).map_err(|_| GcsError::InvalidNodeId {
        node_id: text.to_string(),
        len: text.len() / 2,
    })?;
    check_node_id(&bytes)?;
    Ok(bytes)
}

/// An error and its sources, "a: b: c" (tonic's transport errors say little at the top level).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ray::autoscaler::autoscaler_state_service_server::{
        AutoscalerStateService, AutoscalerStateServiceServer,
    };
    use crate::proto::ray::autoscaler::{
        GetClusterResourceStateReply, NodeState, NodeStatus, ReportAutoscalingStateReply,
        RequestClusterResourceConstraintReply,
    };
    use std::sync::{Arc, Mutex};
    use tonic::Response;

    #[test]
    fn node_ids_round_trip_as_hex() {
        let id: Vec<u8> = (0..28).collect();
        let text = node_id_hex(&id);
        assert_eq!(text.len(), 56);
        assert!(text.starts_with("000102"));
        assert_eq!(node_id_from_hex(&text).unwrap(), id);
        assert_eq!(node_id_hex(&[0xab, 0xCD]), "abcd");
        assert!(matches!(
            node_id_from_hex("abcd"),
            Err(GcsError::InvalidNodeId { len: 2, .. })
        ));
        assert!(node_id_from_hex("zz").is_err());
    }

    #[test]
    fn addresses_are_checked() {
        for bad in [
            "",
            "localhost",
            ":6379",
            "host:",
            "host:0",
            "host:99999",
            "http://h:1",
        ] {
            let err = endpoint(bad).unwrap_err();
            assert!(
                matches!(err, GcsError::InvalidAddress { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("host:port"), "{err}");
        }
        for good in ["127.0.0.1:6379", "node-1.cluster:6379", "[::1]:6379"] {
            endpoint(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn statuses_map_to_errors_that_say_what_to_do() {
        let e = GcsError::from_status("h:1", "M", true, Status::unavailable("tcp connect error"));
        assert!(e.is_transient() && !e.is_unauthenticated());
        assert!(e.to_string().contains("not reachable yet"), "{e}");

        let e = GcsError::from_status(
            "h:1",
            "M",
            true,
            Status::unauthenticated("InvalidAuthToken"),
        );
        assert!(e.is_unauthenticated() && !e.is_transient());
        assert!(e.to_string().contains("does not match"), "{e}");
        let e = GcsError::from_status("h:1", "M", false, Status::unauthenticated("x"));
        assert!(e.to_string().contains("no token was given"), "{e}");

        let e = GcsError::from_status("h:1", "M", true, Status::internal("boom"));
        assert!(!e.is_transient() && !e.is_unauthenticated());
        assert!(matches!(
            e,
            GcsError::Rpc {
                code: Code::Internal,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_before_connecting() {
        for token in ["", "  \n", "a\nb", "tök"] {
            let err = GcsClient::connect("127.0.0.1:1", Some(token.into()), Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(
                matches!(err, GcsError::InvalidToken { .. }),
                "{token:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = GcsClient::connect(&format!("127.0.0.1:{port}"), None, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(matches!(err, GcsError::Unreachable { .. }), "{err}");
    }

    /// What the fake GCS saw.
    #[derive(Default)]
    struct Seen {
        authorization: Vec<Option<String>>,
        cluster_id_sent: bool,
        last_seen_versions: Vec<i64>,
        drains: Vec<DrainNodeRequest>,
        reports: Vec<AutoscalingState>,
        constraints: Vec<ClusterResourceConstraint>,
    }

    /// A GCS stand-in that requires `Bearer secret` and records what it receives.
    #[derive(Clone, Default)]
    struct FakeGcs {
        seen: Arc<Mutex<Seen>>,
        slow: bool,
    }

    impl FakeGcs {
        fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
            let md = request.metadata();
            let auth = md
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            let mut seen = self.seen.lock().unwrap();
            seen.cluster_id_sent |= md.contains_key("ray_cluster_id");
            seen.authorization.push(auth.clone());
            if auth.as_deref() == Some("Bearer secret") {
                Ok(())
            } else {
                Err(Status::unauthenticated("InvalidAuthToken"))
            }
        }
    }

    #[tonic::async_trait]
    impl AutoscalerStateService for FakeGcs {
        async fn get_cluster_resource_state(
            &self,
            request: Request<GetClusterResourceStateRequest>,
        ) -> Result<Response<GetClusterResourceStateReply>, Status> {
            if self.slow {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            self.check(&request)?;
            let version = request.get_ref().last_seen_cluster_resource_state_version;
            self.seen.lock().unwrap().last_seen_versions.push(version);
            Ok(Response::new(GetClusterResourceStateReply {
                cluster_resource_state: Some(ClusterResourceState {
                    cluster_resource_state_version: 5,
                    node_states: vec![NodeState {
                        node_id: vec![7; NODE_ID_LEN],
                        instance_id: "job-1".into(),
                        status: NodeStatus::Idle as i32,
                        total_resources: [("CPU".to_string(), 4.0)].into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }))
        }

        async fn report_autoscaling_state(
            &self,
            request: Request<ReportAutoscalingStateRequest>,
        ) -> Result<Response<ReportAutoscalingStateReply>, Status> {
            self.check(&request)?;
            let state = request.into_inner().autoscaling_state.unwrap();
            self.seen.lock().unwrap().reports.push(state);
            Ok(Response::new(ReportAutoscalingStateReply {}))
        }

        async fn request_cluster_resource_constraint(
            &self,
            request: Request<RequestClusterResourceConstraintRequest>,
        ) -> Result<Response<RequestClusterResourceConstraintReply>, Status> {
            self.check(&request)?;
            let c = request.into_inner().cluster_resource_constraint.unwrap();
            self.seen.lock().unwrap().constraints.push(c);
            Ok(Response::new(RequestClusterResourceConstraintReply {}))
        }

        async fn get_cluster_status(
            &self,
            request: Request<GetClusterStatusRequest>,
        ) -> Result<Response<GetClusterStatusReply>, Status> {
            self.check(&request)?;
            Ok(Response::new(GetClusterStatusReply::default()))
        }

        async fn drain_node(
            &self,
            request: Request<DrainNodeRequest>,
        ) -> Result<Response<DrainNodeReply>, Status> {
            self.check(&request)?;
            let r = request.into_inner();
            let accepted = r.reason == DrainNodeReason::Preemption as i32;
            self.seen.lock().unwrap().drains.push(r);
            Ok(Response::new(DrainNodeReply {
                is_accepted: accepted,
                rejection_reason_message: if accepted { "" } else { "busy" }.into(),
            }))
        }
    }

    async fn serve(fake: FakeGcs) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AutoscalerStateServiceServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    #[tokio::test]
    async fn calls_carry_the_token_and_version_zero() {
        let fake = FakeGcs::default();
        let address = serve(fake.clone()).await;
        let timeout = Duration::from_secs(5);
        let gcs = GcsClient::connect(&address, Some("secret\n".into()), timeout)
            .await
            .unwrap();
        assert!(!format!("{gcs:?}").contains("secret"));

        for _ in 0..2 {
            let state = gcs.cluster_resource_state().await.unwrap();
            assert_eq!(state.node_states.len(), 1);
            assert_eq!(state.node_states[0].instance_id, "job-1");
            assert_eq!(state.node_states[0].status(), NodeStatus::Idle);
        }

        let id = vec![7; NODE_ID_LEN];
        let reply = gcs
            .drain_node(&id, DrainNodeReason::Preemption, "walltime", 1234)
            .await
            .unwrap();
        assert!(reply.is_accepted);
        let reply = gcs
            .drain_node(&id, DrainNodeReason::IdleTermination, "idle", 0)
            .await
            .unwrap();
        assert!(!reply.is_accepted);
        assert_eq!(reply.rejection_reason_message, "busy");
        let err = gcs
            .drain_node(&[1, 2, 3], DrainNodeReason::Preemption, "x", 0)
            .await
            .unwrap_err();
        assert!(
            matches!(err, GcsError::InvalidNodeId { len: 3, .. }),
            "{err}"
        );

        let state = AutoscalingState {
            autoscaler_state_version: 42,
            ..Default::default()
        };
        gcs.report_autoscaling_state(state).await.unwrap();
        gcs.request_cluster_resource_constraint(ClusterResourceConstraint::default())
            .await
            .unwrap();
        gcs.cluster_status().await.unwrap();

        let seen = fake.seen.lock().unwrap();
        assert_eq!(seen.last_seen_versions, vec![0, 0]);
        assert!(
            seen.authorization
                .iter()
                .all(|a| a.as_deref() == Some("Bearer secret"))
        );
        assert_eq!(seen.authorization.len(), 7);
        assert!(!seen.cluster_id_sent, "ray_cluster_id must never be sent");
        assert_eq!(seen.drains.len(), 2);
        assert_eq!(seen.drains[0].node_id, id);
        assert_eq!(seen.drains[0].reason_message, "walltime");
        assert_eq!(seen.drains[0].deadline_timestamp_ms, 1234);
        assert_eq!(seen.reports[0].autoscaler_state_version, 42);
        assert_eq!(seen.constraints.len(), 1);
    }

    #[tokio::test]
    async fn missing_or_wrong_tokens_are_unauthenticated() {
        let address = serve(FakeGcs::default()).await;
        let timeout = Duration::from_secs(5);
        let no_token = GcsClient::connect(&address, None, timeout).await.unwrap();
        let err = no_token.cluster_resource_state().await.unwrap_err();
        assert!(err.is_unauthenticated(), "{err}");
        assert!(err.to_string().contains("no token was given"), "{err}");

        let wrong = GcsClient::connect(&address, Some("nope".into()), timeout)
            .await
            .unwrap();
        let err = wrong.cluster_resource_state().await.unwrap_err();
        assert!(err.is_unauthenticated(), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[tokio::test]
    async fn slow_answers_time_out() {
        let address = serve(FakeGcs {
            slow: true,
            ..Default::default()
        })
        .await;
        let gcs = GcsClient::connect(&address, None, Duration::from_millis(200))
            .await
            .unwrap();
        let err = gcs.cluster_resource_state().await.unwrap_err();
        assert!(matches!(err, GcsError::Timeout { .. }), "{err}");
        assert!(err.is_transient());
    }
}
