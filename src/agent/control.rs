//! Our control protocol (proto/control.proto): the head agent's service and the worker agent's
//! client. Every call must carry the cluster secret as a bearer token.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::proto::control::control_client::ControlClient;
use crate::proto::control::control_server::{Control, ControlServer};
use crate::proto::control::{
    AttendRequest, Directive, Keepalive, NodeReport, RegisterRequest, ReportAck, Resources,
    Shutdown, StartPlan, directive,
};

/// Environment variable that carries the cluster secret to worker agents (never argv).
pub const SECRET_ENV: &str = "RAY_HPC_CLUSTER_SECRET";

/// How often the head tells attending workers it is alive; a worker that hears nothing for
/// `HEAD_SILENCE` assumes its head is gone.
pub const KEEPALIVE: Duration = Duration::from_secs(5);
pub const HEAD_SILENCE: Duration = Duration::from_secs(25);

/// What the head knows once its own Ray is up: the part of every start plan that is shared.
#[derive(Debug, Clone)]
pub struct PlanBase {
    pub cluster_name: String,
    pub cluster_id: String,
    pub gcs_address: String,
    pub ray_auth_token: Option<String>,
    pub temp_root: String,
    pub object_store_fraction: f64,
    pub host_addresses: BTreeMap<String, IpAddr>,
    pub env: BTreeMap<String, String>,
    /// When the head gives up waiting for nodes.
    pub ready_deadline: std::time::Instant,
}

/// Nodes must report a failure this long before the head's deadline, so it can show their logs.
pub const REPORT_MARGIN: Duration = Duration::from_secs(3);

/// Temp dir of rank `rank`: short, per cluster and per node (several nodes may share a host).
pub fn node_temp_dir(temp_root: &str, cluster_id: &str, rank: u32) -> String {
    format!("{}/rh-{cluster_id}-{rank}", temp_root.trim_end_matches('/'))
}

/// The raylet's instance id: the scheduler job, plus the rank when the job has several nodes.
pub fn instance_id(job_id: &str, rank: u32, nodes_in_job: usize) -> String {
    if nodes_in_job > 1 {
        format!("{job_id}.{rank}")
    } else {
        job_id.to_string()
    }
}

/// The object store gets a share of the node's memory, but never more than /dev/shm can hold
/// (past that Ray falls back to slow disk) and never less than Ray's minimum of 75 MiB.
pub fn object_store_bytes(memory: u64, shm: Option<u64>, fraction: f64) -> u64 {
    const RAY_MIN: u64 = 75 * 1024 * 1024;
    let mut bytes = (memory as f64 * fraction) as u64;
    if let Some(shm) = shm {
        bytes = bytes.min(shm / 10 * 9);
    }
    bytes.max(RAY_MIN)
}

impl PlanBase {
    pub fn plan_for(&self, req: &RegisterRequest) -> Result<StartPlan, Status> {
        let node_address = if !req.node_address.is_empty() {
            req.node_address.clone()
        } else if let Some(ip) = self.host_addresses.get(&req.node_name) {
            ip.to_string()
        } else {
            return Err(Status::failed_precondition(format!(
                "the scheduler knows no address for node `{}`; set `network.interface` in the config",
                req.node_name
            )));
        };
        let res = req.resources.clone().unwrap_or_default();
        Ok(StartPlan {
            cluster_name: self.cluster_name.clone(),
            gcs_address: self.gcs_address.clone(),
            node_address,
            temp_dir: node_temp_dir(&self.temp_root, &self.cluster_id, req.rank),
            ray_auth_token: self.ray_auth_token.clone().unwrap_or_default(),
            instance_id: req.node_key.clone(),
            node_type: if req.node_type.is_empty() {
                "worker".into()
            } else {
                req.node_type.clone()
            },
            object_store_bytes: object_store_bytes(
                res.memory_bytes,
                (res.shm_bytes > 0).then_some(res.shm_bytes),
                self.object_store_fraction,
            ),
            resources: Some(res),
            env: self.env.clone().into_iter().collect(),
            // The allocation's nodes join by the head's bring-up deadline. A worker job of its
            // own (autoscaled) starts whenever the scheduler runs it, perhaps long after that
            // deadline: 0 leaves it its own ready_timeout_s.
            join_timeout_ms: if req.node_type.is_empty() {
                self.ready_deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .saturating_sub(REPORT_MARGIN)
                    .max(Duration::from_secs(1))
                    .as_millis() as u64
            } else {
                0
            },
        })
    }
}

/// What the control service tells the head agent.
#[derive(Debug)]
pub enum WorkerEvent {
    Registered(Box<(RegisterRequest, StartPlan)>),
    Report(NodeReport),
}

pub struct ControlState {
    plan_base: watch::Receiver<Option<PlanBase>>,
    shutdown: watch::Receiver<Option<String>>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    plans: Mutex<BTreeMap<String, StartPlan>>,
    register_wait: Duration,
    /// Ranks for workers that join later (autoscaled jobs): after the allocation's own.
    next_join_rank: Mutex<u32>,
}

#[derive(Clone)]
pub struct ControlService(Arc<ControlState>);

impl ControlService {
    pub fn new(
        plan_base: watch::Receiver<Option<PlanBase>>,
        shutdown: watch::Receiver<Option<String>>,
        events: mpsc::UnboundedSender<WorkerEvent>,
        register_wait: Duration,
        first_join_rank: u32,
    ) -> Self {
        ControlService(Arc::new(ControlState {
            plan_base,
            shutdown,
            events,
            plans: Mutex::new(BTreeMap::new()),
            register_wait,
            next_join_rank: Mutex::new(first_join_rank),
        }))
    }
}

type DirectiveStream = Pin<Box<dyn Stream<Item = Result<Directive, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<StartPlan>, Status> {
        let mut req = req.into_inner();
        if req.node_key.is_empty() {
            return Err(Status::invalid_argument("node_key is empty"));
        }
        if let Some(plan) = self.0.plans.lock().unwrap().get(&req.node_key) {
            return Ok(Response::new(plan.clone()));
        }
        // Workers may register before the head's own Ray is up: hold them until it is.
        let mut base_rx = self.0.plan_base.clone();
        let base = tokio::time::timeout(self.0.register_wait, base_rx.wait_for(|b| b.is_some()))
            .await
            .map_err(|_| Status::unavailable("the head's Ray did not come up in time"))?
            // ABORTED, not UNAVAILABLE (which a head not listening yet also gives): the worker
            // agent leaves at once instead of retrying.
            .map_err(|_| Status::aborted("the head agent is shutting down"))?
            .clone()
            .expect("waited for Some");
        if self.0.shutdown.borrow().is_some() {
            return Err(Status::aborted("the cluster is shutting down"));
        }
        if !req.node_type.is_empty() {
            // A worker job of its own: its rank (and so its temp dir) comes from the head.
            let mut next = self.0.next_join_rank.lock().unwrap();
            req.rank = *next;
            *next += 1;
        }
        let plan = base.plan_for(&req)?;
        self.0
            .plans
            .lock()
            .unwrap()
            .insert(req.node_key.clone(), plan.clone());
        let _ = self
            .0
            .events
            .send(WorkerEvent::Registered(Box::new((req, plan.clone()))));
        Ok(Response::new(plan))
    }

    async fn report(&self, req: Request<NodeReport>) -> Result<Response<ReportAck>, Status> {
        let _ = self.0.events.send(WorkerEvent::Report(req.into_inner()));
        Ok(Response::new(ReportAck {}))
    }

    type AttendStream = DirectiveStream;

    async fn attend(
        &self,
        _req: Request<AttendRequest>,
    ) -> Result<Response<Self::AttendStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut shutdown = self.0.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let reason = shutdown.borrow().clone();
                if let Some(reason) = reason {
                    let _ = tx
                        .send(Ok(Directive {
                            kind: Some(directive::Kind::Shutdown(Shutdown { reason })),
                        }))
                        .await;
                    return;
                }
                let keepalive = Directive {
                    kind: Some(directive::Kind::Keepalive(Keepalive {})),
                };
                if tx.send(Ok(keepalive)).await.is_err() {
                    return; // the worker went away
                }
                tokio::select! {
                    changed = shutdown.changed() => if changed.is_err() {
                        // The head is dropping its state: end the stream so workers notice.
                        return;
                    },
                    _ = tokio::time::sleep(KEEPALIVE) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Checks the bearer secret on every call.
#[derive(Clone)]
pub struct BearerCheck {
    expected: Arc<String>,
}

impl tonic::service::Interceptor for BearerCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), self.expected.as_bytes()) => Ok(req),
            _ => Err(Status::unauthenticated(
                "missing or wrong cluster secret (RAY_HPC_CLUSTER_SECRET)",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds the bearer secret to every call.
#[derive(Clone)]
pub struct BearerAdd {
    header: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for BearerAdd {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(req)
    }
}

pub fn server(
    service: ControlService,
    secret: &str,
) -> InterceptedService<ControlServer<ControlService>, BearerCheck> {
    ControlServer::with_interceptor(
        service,
        BearerCheck {
            expected: Arc::new(secret.to_string()),
        },
    )
}

pub type Client = ControlClient<InterceptedService<Channel, BearerAdd>>;

/// Connects to the head agent's control service at `url` (http://host:port).
pub async fn connect(url: &str, secret: &str, timeout: Duration) -> anyhow::Result<Client> {
    let header = format!("Bearer {secret}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the cluster secret is not a valid header value"))?;
    let channel = Endpoint::from_shared(url.to_string())?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(ControlClient::with_interceptor(
        channel,
        BearerAdd { header },
    ))
}

pub fn resources_of(n: &crate::discovery::NodeResources) -> Resources {
    Resources {
        cpus: n.cpus,
        gpu_indices: n.gpus.iter().map(|g| g.index).collect(),
        gpu_uuids: n.gpus.iter().map(|g| g.uuid.clone()).collect(),
        memory_bytes: n.memory_bytes,
        shm_bytes: n.shm_bytes.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PlanBase {
        PlanBase {
            cluster_name: "c".into(),
            cluster_id: "abc123".into(),
            gcs_address: "127.0.0.11:20001".into(),
            ray_auth_token: Some("tok".into()),
            temp_root: "/tmp/".into(),
            object_store_fraction: 0.3,
            host_addresses: BTreeMap::from([("n2".into(), "127.0.0.12".parse().unwrap())]),
            env: BTreeMap::new(),
            ready_deadline: std::time::Instant::now() + Duration::from_secs(60),
        }
    }

    fn request(node_name: &str, address: &str) -> RegisterRequest {
        RegisterRequest {
            node_key: "9.1".into(),
            job_id: "9".into(),
            rank: 1,
            node_name: node_name.into(),
            node_address: address.into(),
            resources: Some(Resources {
                cpus: 1,
                memory_bytes: 4 << 30,
                shm_bytes: 1 << 30,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn plans_use_the_scheduler_address_unless_the_agent_found_one() {
        let plan = base().plan_for(&request("n2", "")).unwrap();
        assert_eq!(plan.node_address, "127.0.0.12");
        assert_eq!(plan.temp_dir, "/tmp/rh-abc123-1");
        assert_eq!(plan.instance_id, "9.1");
        assert_eq!(plan.ray_auth_token, "tok");
        let join = Duration::from_millis(plan.join_timeout_ms);
        assert!(
            join <= Duration::from_secs(57) && join > Duration::from_secs(50),
            "{join:?}"
        );
        let plan = base().plan_for(&request("n2", "10.0.0.5")).unwrap();
        assert_eq!(plan.node_address, "10.0.0.5");
        let err = base().plan_for(&request("n7", "")).unwrap_err();
        assert!(err.message().contains("network.interface"), "{err}");
    }

    #[test]
    fn a_worker_job_of_its_own_joins_by_its_own_timeout_not_the_heads_bring_up_deadline() {
        // The head came up long ago: its bring-up deadline has passed.
        let old = PlanBase {
            ready_deadline: std::time::Instant::now(),
            ..base()
        };
        // A node of the allocation that registers now is late: it gets the minimum.
        let late = old.plan_for(&request("n2", "")).unwrap();
        assert_eq!(late.join_timeout_ms, 1000);
        // An autoscaled worker job starts whenever the scheduler runs it, hours later perhaps:
        // the head sets no limit, and the worker agent joins by its own ready_timeout_s.
        let joiner = RegisterRequest {
            node_type: "cpu".into(),
            ..request("n2", "")
        };
        assert_eq!(old.plan_for(&joiner).unwrap().join_timeout_ms, 0);
    }

    #[test]
    fn object_store_is_capped_by_shm_and_floored() {
        let gib = 1u64 << 30;
        assert_eq!(object_store_bytes(10 * gib, None, 0.3), 3 * gib);
        assert_eq!(object_store_bytes(10 * gib, Some(gib), 0.3), gib / 10 * 9);
        assert_eq!(object_store_bytes(1 << 20, None, 0.3), 75 << 20);
    }

    #[test]
    fn ids_are_per_node() {
        assert_eq!(instance_id("42", 0, 1), "42");
        assert_eq!(instance_id("42", 2, 3), "42.2");
        assert_eq!(node_temp_dir("/tmp", "x", 3), "/tmp/rh-x-3");
    }

    #[test]
    fn bearer_check() {
        use tonic::service::Interceptor;
        let mut check = BearerCheck {
            expected: Arc::new("s3cret".into()),
        };
        let mut ok = Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(check.call(ok).is_ok());
        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            check.call(bad).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(check.call(Request::new(())).is_err());
    }
}
