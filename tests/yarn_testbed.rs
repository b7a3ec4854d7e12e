//! The Hadoop YARN test bed (yarn/testbed) end to end, through the YARN services REST API as a
//! user would drive it: a service of 3 containers placed one per NodeManager, flexed to 4, one
//! named instance decommissioned, stopped and destroyed, with nothing left running; and a
//! service for a queue that does not exist refused with a clear error.

mod common;

use common::{YarnTestbed, processes_with_env, wait_for, yarn_testbed};
use reqwest::Method;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Simple auth: the services API acts for whoever ?user.name= names.
const USER: &str = "ray-hpc-test";
const COMPONENT: &str = "worker";
/// What each container asks for; distinct from the scheduler's minimum so that a container
/// that got it shows it was honoured.
const CPUS: u64 = 2;
const MEMORY_MB: u64 = 384;
/// Starting an ApplicationMaster takes seconds here, more on a loaded 2-core CI machine.
const SLOW: Duration = Duration::from_secs(240);
/// Where yarn/testbed/up keeps the NodeManagers' container logs.
const TESTBED_ROOT: &str = "/var/lib/ray-hpc-yarn";

/// The URL with simple auth's ?user.name= (no URL here has a query of its own).
fn as_user(url: &str) -> String {
    format!("{url}?user.name={USER}")
}

/// An HTTP answer: status and body (JSON where it parses, else the text as a JSON string).
struct Answer {
    status: StatusCode,
    body: Value,
}

struct Api {
    web: String,
    http: Client,
}

impl Api {
    fn new(tb: &YarnTestbed) -> Self {
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Api {
            web: tb.web.clone(),
            http,
        }
    }

    fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let url = as_user(&format!("{}{path}", self.web));
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    fn service(&self, name: &str) -> Answer {
        self.call(Method::GET, &format!("/app/v1/services/{name}"), None)
    }

    /// NodeManager host name -> its web address (host:port), from the ResourceManager.
    fn node_web_addresses(&self) -> BTreeMap<String, String> {
        let a = self.call(Method::GET, "/ws/v1/cluster/nodes", None);
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.body["nodes"]["node"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .filter(|n| n["state"] == "RUNNING")
            .map(|n| {
                (
                    n["nodeHostName"].as_str().unwrap().to_string(),
                    n["nodeHTTPAddress"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// What a NodeManager's own REST API says of one of its containers.
    fn container_at_node(&self, node_web: &str, id: &str) -> Value {
        let url = as_user(&format!("http://{node_web}/ws/v1/node/containers/{id}"));
        let resp = self
            .http
            .get(&url)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
        resp.json::<Value>().unwrap()["container"].clone()
    }
}

/// One container of the service, as GET /app/v1/services/NAME lists it.
#[derive(Debug, Clone)]
struct Container {
    id: String,
    instance: String,
    state: String,
    ip: String,
    hostname: String,
    /// The NodeManager's host name (its node id without the port).
    bare_host: String,
}

fn containers(service: &Value) -> Vec<Container> {
    let s = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_string();
    service["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == COMPONENT)
        .flat_map(|c| c["containers"].as_array().cloned().unwrap_or_default())
        .map(|c| Container {
            id: s(&c, "id"),
            instance: s(&c, "component_instance_name"),
            state: s(&c, "state"),
            ip: s(&c, "ip"),
            hostname: s(&c, "hostname"),
            bare_host: s(&c, "bare_host"),
        })
        .collect()
}

fn component(service: &Value) -> Value {
    service["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == COMPONENT)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A service name of this run: lower case, a letter first, unique per run.
fn service_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("rh-{what}-{}-{nanos}", std::process::id())
}

/// Destroys the service (DELETE stops it first) and kills what is left of its containers, so
/// that a failed test leaves nothing running for the next one.
struct ServiceGuard<'a> {
    api: &'a Api,
    name: String,
    marker: String,
}

impl Drop for ServiceGuard<'_> {
    fn drop(&mut self) {
        let url = format!("{}/app/v1/services/{}", self.api.web, self.name);
        let _ = self.api.http.delete(as_user(&url)).send();
        for (pid, _) in processes_with_env(&self.marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The service's last state and its ApplicationMaster's log, for a failure message.
fn explain(api: &Api, name: &str) -> String {
    let a = api.service(name);
    let mut out = format!("GET service: {} {:#}\n", a.status, a.body);
    if let Some(app) = a.body["id"].as_str() {
        for log in am_logs(app) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out += &format!("==> {}\n", log.display());
            for l in tail.into_iter().rev() {
                out += l;
                out += "\n";
            }
        }
    }
    out
}

/// The ApplicationMaster's stderr (container 1 of the application) on whichever NodeManager.
fn am_logs(app: &str) -> Vec<PathBuf> {
    let attempt = app.replacen("application_", "container_", 1);
    let mut found = vec![];
    for nm in std::fs::read_dir(TESTBED_ROOT)
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = nm.path().join("logs").join(app);
        for c in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let n = c.file_name().to_string_lossy().into_owned();
            if n.starts_with(&attempt) && n.ends_with("_000001") {
                found.push(c.path().join("serviceam-err.txt"));
            }
        }
    }
    found
}

/// Which state the service as a whole must reach with its component.
#[derive(Clone, Copy, PartialEq)]
enum ServiceIs {
    Stable,
    /// After a flex the service stays STARTED although its component is STABLE again (the AM
    /// re-checks the service when an instance turns READY, before the component does).
    StableOrStarted,
}

/// Waits until the component is STABLE with `n` READY containers; returns them.
fn wait_ready(api: &Api, name: &str, n: usize, service: ServiceIs) -> Vec<Container> {
    wait_for(
        &format!("service {name}'s component STABLE with {n} READY containers"),
        SLOW,
        || {
            let a = api.service(name);
            let cs = containers(&a.body);
            let state = &a.body["state"];
            (a.status == StatusCode::OK
                && (state == "STABLE"
                    || service == ServiceIs::StableOrStarted && state == "STARTED")
                && component(&a.body)["state"] == "STABLE"
                && cs.len() == n
                && cs.iter().all(|c| c.state == "READY" && !c.ip.is_empty()))
            .then_some(cs)
        },
        || explain(api, name),
    )
}

/// The IPv4 address a host name resolves to here.
fn resolve(host: &str) -> IpAddr {
    (host, 0)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{host} does not resolve: {e}"))
        .find(|a| a.is_ipv4())
        .unwrap_or_else(|| panic!("{host} has no IPv4 address"))
        .ip()
}

/// `NAME=value` lines a container wrote (its environment plus HOST_NAME / HOST_IP).
fn container_report(dir: &Path, id: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join(format!("{id}.env"))).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Checks one READY container against what it reported, the NodeManager it ran on, and what
/// it asked for.
fn check_container(api: &Api, nodes: &BTreeMap<String, String>, dir: &Path, c: &Container) {
    // Its address and host name are its NodeManager's own, not the machine's.
    assert_eq!(c.hostname, c.bare_host, "{c:?}");
    let ip: IpAddr = c.ip.parse().unwrap_or_else(|_| panic!("{c:?}: ip"));
    assert_eq!(ip, resolve(&c.bare_host), "{c:?}: ip is not its node's");
    assert!(!ip.to_string().ends_with(".0.0.1"), "{c:?}");

    // What the container itself saw.
    let report = wait_for(
        &format!("{} to write its report", c.id),
        Duration::from_secs(60),
        || {
            let r = container_report(dir, &c.id);
            r.contains_key("HOST_IP").then_some(r)
        },
        || format!("no {}.env in {}", c.id, dir.display()),
    );
    assert_eq!(report.get("CONTAINER_ID"), Some(&c.id), "{report:?}");
    assert_eq!(report.get("HOST_NAME"), Some(&c.bare_host), "{report:?}");
    assert_eq!(report.get("HOST_IP"), Some(&c.ip), "{report:?}");
    assert_eq!(report.get("NM_HOST"), Some(&c.bare_host), "{report:?}");
    // The services framework puts no instance name in the environment, but substitutes it
    // for ${COMPONENT_INSTANCE_NAME} in configuration.env (see the spec).
    assert_eq!(report.get("RH_INSTANCE"), Some(&c.instance), "{report:?}");
    assert!(
        !report.contains_key("COMPONENT_INSTANCE_NAME"),
        "{report:?}"
    );

    // The NodeManager that runs it (found through the RM's node list) gave it what it asked.
    let node_web = nodes
        .get(&c.bare_host)
        .unwrap_or_else(|| panic!("{c:?}: no RUNNING node {} in {nodes:?}", c.bare_host));
    let at_node = api.container_at_node(node_web, &c.id);
    assert_eq!(at_node["state"], "RUNNING", "{at_node:#}");
    assert_eq!(at_node["totalVCoresNeeded"], CPUS, "{at_node:#}");
    assert_eq!(at_node["totalMemoryNeededMB"], MEMORY_MB, "{at_node:#}");
    assert_eq!(at_node["user"], USER, "{at_node:#}");
    let node_id = at_node["nodeId"].as_str().unwrap_or_default();
    assert!(
        node_id.starts_with(&format!("{}:", c.bare_host)),
        "{at_node:#}"
    );
}

/// The keys of every object in `v`, by their path (array elements merged under `[]`), short of
/// maps whose keys are the spec's own (env, properties, ...).
fn shape(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    const USER_KEYED: [&str; 4] = ["env", "properties", "additional", "node_attributes"];
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                out.insert(p.clone());
                if !USER_KEYED.contains(&k.as_str()) {
                    shape(x, &p, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| shape(x, &format!("{path}[]"), out)),
        _ => {}
    }
}

/// The live answer has the same fields as the recorded one in yarn/fixtures/ that the YARN
/// adapter is written against (a Hadoop upgrade that changes them fails here).
fn same_shape(live: &Value, fixture: &str) {
    let path = common::repo().join("yarn/fixtures").join(fixture);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let recorded: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
    shape(&recorded, "", &mut want);
    shape(live, "", &mut got);
    assert_eq!(got, want, "live answer vs {fixture}: {live:#}");
}

fn distinct_hosts(cs: &[Container]) -> BTreeSet<String> {
    cs.iter().map(|c| c.bare_host.clone()).collect()
}

/// Processes of containers with CONTAINER_ID=`id`.
fn container_processes(id: &str) -> Vec<(i32, String)> {
    processes_with_env(&format!("CONTAINER_ID={id}"))
}

#[test]
fn a_service_runs_one_container_per_node_flexes_decommissions_stops_and_is_destroyed() {
    let Some(tb) = yarn_testbed() else {
        return;
    };
    let api = Api::new(&tb);
    let version = api.call(Method::GET, "/app/v1/services/version", None);
    assert_eq!(version.status, StatusCode::OK, "{}", version.body);
    assert!(
        version.body["hadoop_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        version.body
    );
    let nodes = api.node_web_addresses();
    assert!(
        nodes.len() >= 4,
        "flexing to 4 one-per-node containers needs 4 NodeManagers: {nodes:?}"
    );
    // Each NodeManager is a host of its own: its own name, address and web port.
    let ips: BTreeSet<IpAddr> = nodes.keys().map(|h| resolve(h)).collect();
    let webs: BTreeSet<&String> = nodes.values().collect();
    assert_eq!(ips.len(), nodes.len(), "{nodes:?} resolve to {ips:?}");
    assert_eq!(webs.len(), nodes.len(), "{nodes:?}");

    let name = service_name("tb");
    let marker = format!("RH_YARN_TEST={name}");
    // Containers run as root on this machine and write here (a shared file system on a real
    // cluster).
    let dir = tempfile::Builder::new()
        .prefix("rh-yarn-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path().display();
    // launch_container.sh runs this as `exec /bin/bash -c "<launch_command> 1>stdout 2>stderr"`:
    // no double quotes in it, and the redirection only catches its last command.
    let launch = format!(
        "env > {d}/$CONTAINER_ID.tmp; echo HOST_NAME=$(hostname) >> {d}/$CONTAINER_ID.tmp; \
         echo HOST_IP=$(hostname -i) >> {d}/$CONTAINER_ID.tmp; \
         mv {d}/$CONTAINER_ID.tmp {d}/$CONTAINER_ID.env; while true; do sleep 5; done"
    );
    let spec = json!({
        "name": name,
        "version": "1.0",
        "configuration": {
            // READY is checked every 30 s by default; a second is enough here.
            "properties": { "yarn.service.readiness-check-interval.seconds": "1" }
        },
        "components": [{
            "name": COMPONENT,
            "number_of_containers": 3,
            "restart_policy": "NEVER",
            "launch_command": launch,
            "resource": { "cpus": CPUS, "memory": MEMORY_MB.to_string() },
            // One container per NodeManager.
            "placement_policy": { "constraints": [{
                "type": "ANTI_AFFINITY", "scope": "NODE", "target_tags": [COMPONENT]
            }]},
            "configuration": { "env": {
                "RH_YARN_TEST": name,
                "RH_INSTANCE": "${COMPONENT_INSTANCE_NAME}"
            } }
        }]
    });

    let created = api.call(Method::POST, "/app/v1/services", Some(&spec));
    let _guard = ServiceGuard {
        api: &api,
        name: name.clone(),
        marker: marker.clone(),
    };
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:#}", created.body);
    assert_eq!(created.body["state"], "ACCEPTED", "{:#}", created.body);
    assert!(
        created.body["diagnostics"]
            .as_str()
            .is_some_and(|d| d.starts_with("Application ID: application_")),
        "{:#}",
        created.body
    );

    // 3 READY, on 3 different NodeManagers, each with its own address and what it asked for.
    let three = wait_ready(&api, &name, 3, ServiceIs::Stable);
    assert_eq!(distinct_hosts(&three).len(), 3, "{three:#?}");
    let service = api.service(&name).body;
    same_shape(&service, "service-stable.json");
    let comp = component(&service);
    assert_eq!(comp["resource"]["cpus"], CPUS, "{comp:#}");
    assert_eq!(
        comp["resource"]["memory"],
        MEMORY_MB.to_string(),
        "{comp:#}"
    );
    assert_eq!(comp["number_of_containers"], 3, "{comp:#}");
    for c in &three {
        check_container(&api, &nodes, dir.path(), c);
    }

    // Flex to 4: the 4th lands on the one NodeManager still free.
    let flexed = api.call(
        Method::PUT,
        &format!("/app/v1/services/{name}/components/{COMPONENT}"),
        Some(&json!({ "number_of_containers": 4 })),
    );
    assert_eq!(flexed.status, StatusCode::OK, "{:#}", flexed.body);
    assert!(
        flexed.body["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("from 3 to 4")),
        "{:#}",
        flexed.body
    );
    let four = wait_ready(&api, &name, 4, ServiceIs::StableOrStarted);
    assert_eq!(distinct_hosts(&four).len(), 4, "{four:#?}");
    let old: BTreeSet<_> = three.iter().map(|c| c.id.clone()).collect();
    let new: Vec<_> = four.iter().filter(|c| !old.contains(&c.id)).collect();
    assert_eq!(new.len(), 1, "the first 3 kept running: {four:#?}");
    check_container(&api, &nodes, dir.path(), new[0]);

    // Decommission one named instance: it goes, and the component shrinks to 3.
    let gone = four
        .iter()
        .find(|c| c.instance == format!("{COMPONENT}-1"))
        .unwrap_or_else(|| panic!("no instance {COMPONENT}-1 in {four:#?}"))
        .clone();
    let decommissioned = api.call(
        Method::PUT,
        &format!("/app/v1/services/{name}"),
        Some(&json!({ "components": [{
            "name": COMPONENT, "decommissioned_instances": [gone.instance]
        }]})),
    );
    assert_eq!(
        decommissioned.status,
        StatusCode::ACCEPTED,
        "{:#}",
        decommissioned.body
    );
    let left = wait_for(
        &format!("{} to be decommissioned", gone.instance),
        SLOW,
        || {
            let s = api.service(&name).body;
            let cs = containers(&s);
            let comp = component(&s);
            (comp["number_of_containers"] == 3
                && comp["decommissioned_instances"] == json!([gone.instance])
                && cs.len() == 3
                && cs.iter().all(|c| c.instance != gone.instance))
            .then_some(cs)
        },
        || explain(&api, &name),
    );
    assert!(left.iter().all(|c| c.state == "READY"), "{left:#?}");
    wait_for(
        &format!("the processes of {} to end", gone.id),
        Duration::from_secs(60),
        || container_processes(&gone.id).is_empty().then_some(()),
        || format!("{:#?}", container_processes(&gone.id)),
    );
    for c in &left {
        assert!(
            !container_processes(&c.id).is_empty(),
            "{} stopped with {}",
            c.id,
            gone.id
        );
    }

    // Stop: the application ends and every container process with it.
    let stopped = api.call(
        Method::PUT,
        &format!("/app/v1/services/{name}"),
        Some(&json!({ "state": "STOPPED" })),
    );
    assert_eq!(stopped.status, StatusCode::OK, "{:#}", stopped.body);
    wait_for(
        &format!("service {name} STOPPED"),
        SLOW,
        || (api.service(&name).body["state"] == "STOPPED").then_some(()),
        || explain(&api, &name),
    );
    wait_for(
        "no container process left",
        Duration::from_secs(60),
        || processes_with_env(&marker).is_empty().then_some(()),
        || format!("{:#?}", processes_with_env(&marker)),
    );
    // A stopped service lists no components at all (not components without containers).
    same_shape(&api.service(&name).body, "service-stopped.json");

    // Destroy: it is gone from the API.
    let destroyed = api.call(Method::DELETE, &format!("/app/v1/services/{name}"), None);
    assert_eq!(destroyed.status, StatusCode::OK, "{:#}", destroyed.body);
    let after = api.service(&name);
    assert_eq!(after.status, StatusCode::NOT_FOUND, "{:#}", after.body);
    assert!(processes_with_env(&marker).is_empty());
}

#[test]
fn a_service_for_a_queue_that_does_not_exist_is_refused_with_a_clear_error() {
    let Some(tb) = yarn_testbed() else {
        return;
    };
    let api = Api::new(&tb);
    let name = service_name("noq");
    let spec = json!({
        "name": name,
        "version": "1.0",
        "queue": "no-such-queue",
        "components": [{
            "name": COMPONENT,
            "number_of_containers": 1,
            "restart_policy": "NEVER",
            "launch_command": "sleep 600",
            "resource": { "cpus": 1, "memory": "256" },
            "configuration": { "env": { "RH_YARN_TEST": name } }
        }]
    });
    let refused = api.call(Method::POST, "/app/v1/services", Some(&spec));
    let _guard = ServiceGuard {
        api: &api,
        name: name.clone(),
        marker: format!("RH_YARN_TEST={name}"),
    };
    // The services API answers 500 (not 400) with the scheduler's reason.
    assert_eq!(
        refused.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{:#}",
        refused.body
    );
    let why = refused.body["diagnostics"].as_str().unwrap_or_default();
    assert!(
        why.contains("unknown queue: no-such-queue"),
        "{:#}",
        refused.body
    );
    same_shape(&refused.body, "error-bad-queue.json");
    let after = api.service(&name);
    assert_eq!(after.status, StatusCode::NOT_FOUND, "{:#}", after.body);
    same_shape(&after.body, "error-not-found.json");
    assert!(processes_with_env(&format!("RH_YARN_TEST={name}")).is_empty());
}
