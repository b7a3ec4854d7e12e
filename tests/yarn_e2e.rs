//! ray-hpc on a real Apache Hadoop YARN (yarn/testbed: a ResourceManager with the services REST
//! API and four NodeManagers, from Maven Central), with the real Ray: a cluster as a YARN
//! service, its grant, a driver on every node, a worker flexed up for demand and decommissioned
//! when idle, `down`, and a service YARN refuses.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// The test bed's ResourceManager, brought up if it is not (None: no test bed here).
fn yarn_rm() -> Option<String> {
    yarn_testbed().map(|t| t.web)
}

/// One REST call to the ResourceManager: (HTTP status, body).
fn rest(rm: &str, method: &str, path: &str) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-s", "-m", "30", "-X", method, "-w", "\n%{http_code}"])
        .arg(format!("{rm}/app/v1/{path}?user.name=rh"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn component<'a>(service: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    service["components"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// The instance names of a component's containers that run.
fn running(service: &serde_json::Value, name: &str) -> Vec<String> {
    component(service, name)
        .and_then(|c| c["containers"].as_array())
        .map(|cs| {
            cs.iter()
                .filter(|c| matches!(c["state"].as_str(), Some("READY" | "RUNNING_BUT_UNREADY")))
                .filter_map(|c| c["component_instance_name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

struct YarnCluster<'a> {
    home: &'a TestHome,
    rm: String,
    name: String,
    env: Vec<(String, String)>,
    /// PATH for ray-hpc's commands (with the Hadoop client, for `Way::Cli`).
    path: String,
}

impl Drop for YarnCluster<'_> {
    /// However the test ends, YARN keeps no service of it (a failed one would keep its name).
    fn drop(&mut self) {
        let service = format!("services/{}", self.service());
        if self.status().0 == 200 {
            let _ = rest(&self.rm, "DELETE", &service);
        }
    }
}

impl<'a> YarnCluster<'a> {
    fn service(&self) -> String {
        format!("rh-{}", self.name)
    }

    fn status(&self) -> (u16, serde_json::Value) {
        rest(&self.rm, "GET", &format!("services/{}", self.service()))
    }

    fn ray_hpc(&self, args: &[&str]) -> Output {
        self.home
            .command(args)
            .env("PATH", &self.path)
            .output()
            .unwrap()
    }

    /// Every container log of the service's application on the test bed's NodeManagers.
    fn logs(&self) -> String {
        let (_, svc) = self.status();
        let Some(app) = svc["id"].as_str() else {
            return format!("(no application id; the service says {svc})");
        };
        let mut out = String::new();
        for nm in 1..=9 {
            let dir = PathBuf::from(format!("/var/lib/ray-hpc-yarn/nm{nm}/logs/{app}"));
            let Ok(containers) = std::fs::read_dir(&dir) else {
                continue;
            };
            for c in containers.flatten() {
                for f in ["stderr.txt", "stdout.txt"] {
                    let p = c.path().join(f);
                    let t = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = t.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    out.push_str(&format!("==> {}\n{}\n", p.display(), tail.join("\n")));
                }
            }
        }
        out
    }

    fn python(&self, code: &str) -> Output {
        Command::new(venv_bin().join("python"))
            .args(["-c", code])
            .envs(self.env.iter().cloned())
            .env("PATH", test_path())
            .current_dir(self.home.path())
            .output()
            .unwrap()
    }

    fn down(&self) {
        let out = self.ray_hpc(&["down", &self.name]);
        assert!(out.status.success(), "{}\n{}", text(&out), self.logs());
    }
}

const CONFIG: &str = "[yarn]\nuser = \"rh\"\n\n[autoscaler]\nenabled = true\nmax_workers = 3\nidle_timeout_s = 10\n\n[[node_types]]\nname = \"cpu\"\ncpus = 1\nmemory = \"1G\"\n";

const ALIVE_NODES: &str = "import ray, json\nray.init()\nnodes = [n for n in ray.nodes() if n['Alive']]\nprint('NODES', json.dumps([[n['NodeManagerAddress'], n['Resources'].get('CPU', 0), n['Resources'].get('memory', 0)] for n in nodes]), flush=True)\n";

fn alive_nodes(c: &YarnCluster) -> Option<Vec<serde_json::Value>> {
    let out = c.python(ALIVE_NODES);
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = log.lines().find_map(|l| l.strip_prefix("NODES "))?;
    serde_json::from_str(line).ok()
}

/// How ray-hpc reaches YARN in a test.
#[derive(Clone, Copy)]
enum Way {
    /// The services REST API, the address from `up --rm`.
    Rest,
    /// The Hadoop client (`yarn app`, which the test bed's speaks RPC with), `[yarn] api =
    /// "cli"`, no address given.
    Cli,
}

#[test]
fn a_cluster_as_a_yarn_service_grows_for_demand_shrinks_when_idle_and_goes() {
    grows_for_demand_shrinks_when_idle_and_goes(Way::Rest, "yarn1");
}

#[test]
fn the_same_through_the_hadoop_client() {
    grows_for_demand_shrinks_when_idle_and_goes(Way::Cli, "yarn3");
}

fn grows_for_demand_shrinks_when_idle_and_goes(way: Way, name: &str) {
    let Some(rm) = yarn_rm() else { return };
    let home = TestHome::new();
    let (config, path) = match way {
        Way::Rest => (CONFIG.to_string(), test_path()),
        Way::Cli => (
            CONFIG.replace("[yarn]\n", "[yarn]\napi = \"cli\"\n"),
            format!("/var/lib/ray-hpc-yarn/bin:{}", test_path()),
        ),
    };
    let cfg = home.write("yarn.toml", &config);
    let started = Instant::now();
    let mut args = vec![
        "--config",
        cfg.to_str().unwrap(),
        "--scheduler",
        "yarn",
        "up",
        "--name",
        name,
        "--nodes",
        "3",
        "--cpus-per-node",
        "1",
        "--memory",
        "2G",
        "--time",
        "30m",
    ];
    if let Way::Rest = way {
        args.extend(["--rm", &rm]);
    }
    let out = home.command(&args).env("PATH", &path).output().unwrap();
    let c = YarnCluster {
        home: &home,
        rm: rm.clone(),
        name: name.into(),
        env: exports(&String::from_utf8_lossy(&out.stdout)),
        path,
    };
    assert!(out.status.success(), "{}\n{}", text(&out), c.logs());
    eprintln!("up to ready: {:.1}s", started.elapsed().as_secs_f64());

    // The service: a head and the two `--nodes` workers, each in a container of its own.
    let (code, svc) = c.status();
    assert_eq!(code, 200, "{svc}");
    assert_eq!(running(&svc, "ray-head").len(), 1, "{svc:#}");
    let nodes = wait_for(
        "the two workers to join",
        Duration::from_secs(180),
        || alive_nodes(&c).filter(|n| n.len() == 3),
        || c.logs(),
    );
    eprintln!("up to 3 nodes: {:.1}s", started.elapsed().as_secs_f64());
    // The grant, not the machine: one CPU and at most 2 GiB on every node.
    for n in &nodes {
        assert_eq!(n[1].as_f64(), Some(1.0), "{nodes:?}");
        assert!(
            n[2].as_f64().unwrap() <= 2.0 * 1024.0 * 1024.0 * 1024.0,
            "{nodes:?}"
        );
    }
    // Each at its NodeManager's address (YARN may put two containers on one host).
    for n in &nodes {
        let ip = n[0].as_str().unwrap_or_default();
        assert!(ip.starts_with("127.0.0.2"), "{nodes:?}");
    }

    let status = c.ray_hpc(&["status", name]);
    let shown = text(&status);
    assert!(
        status.status.success() && shown.contains("READY") && shown.contains("yarn"),
        "{shown}"
    );

    // doctor's checks of the cluster itself (the machine's own limits are this host's business).
    let doctor = text(&c.ray_hpc(&["doctor", name]));
    for check in ["head-reachable", "token-perms", "socket-path"] {
        assert!(
            doctor
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check}: {doctor}"
        );
    }

    // A driver through `submit` that uses every node.
    let submitted = c.ray_hpc(&[
        "submit",
        name,
        "--",
        "python",
        "-c",
        "import ray, socket\nray.init()\nfrom ray.util.placement_group import placement_group\npg = placement_group([{'CPU': 1}] * 3, strategy='STRICT_SPREAD')\nray.get(pg.ready())\n@ray.remote(num_cpus=1)\ndef where():\n    return ray.get_runtime_context().get_node_id()\nfrom ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as P\nips = ray.get([where.options(scheduling_strategy=P(pg, placement_group_bundle_index=i)).remote() for i in range(3)])\nprint('NODES USED', len(set(ips)), flush=True)\n",
    ]);
    assert!(
        submitted.status.success() && text(&submitted).contains("NODES USED 3"),
        "{}\n{}",
        text(&submitted),
        c.logs()
    );

    // Demand for a fourth node: the cpu component is flexed up and its container joins.
    let demanded = Instant::now();
    let out = c.python(
        "import ray\nfrom ray.util.placement_group import placement_group, remove_placement_group\nray.init()\npg = placement_group([{'CPU': 1}] * 4, strategy='STRICT_SPREAD')\nprint('PG READY', pg.wait(timeout_seconds=240), flush=True)\nremove_placement_group(pg)\n",
    );
    assert!(
        out.status.success() && text(&out).contains("PG READY True"),
        "{}\n{}\n{}",
        text(&out),
        c.status().1,
        c.logs()
    );
    eprintln!(
        "demand to a fourth node: {:.1}s",
        demanded.elapsed().as_secs_f64()
    );
    let (_, svc) = c.status();
    assert_eq!(
        running(&svc, "ray-worker-cpu"),
        ["ray-worker-cpu-0"],
        "{svc:#}"
    );

    // Idle past idle_timeout_s: drained, and exactly that instance decommissioned.
    wait_for(
        "the idle worker to be decommissioned",
        Duration::from_secs(180),
        || {
            let (_, svc) = c.status();
            let cpu = component(&svc, "ray-worker-cpu")?;
            (cpu["decommissioned_instances"] == serde_json::json!(["ray-worker-cpu-0"])
                && running(&svc, "ray-worker-cpu").is_empty())
            .then_some(())
        },
        || format!("{}\n{}", c.status().1, c.logs()),
    );
    assert_eq!(running(&c.status().1, "ray-worker").len(), 2);

    let record = home.cluster_record();
    c.down();
    let (code, gone) = c.status();
    assert_eq!(code, 404, "the service is destroyed: {gone}");
    home.assert_no_leftovers(Duration::from_secs(60));
    for dir in temp_dirs(&record) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert_eq!(home.cluster_record()["state"], "ENDED");
}

#[test]
fn services_yarn_refuses_say_why_and_leave_nothing() {
    let Some(rm) = yarn_rm() else { return };
    let home = TestHome::new();
    let cfg = home.write("yarn.toml", CONFIG);
    let out = home
        .command(&[
            "--config",
            cfg.to_str().unwrap(),
            "--scheduler",
            "yarn",
            "up",
            "--rm",
            &rm,
            "--name",
            "yarn2",
            "--queue",
            "no-such-queue",
        ])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("unknown queue") && said.contains("no-such-queue"),
        "{said}"
    );
    assert_eq!(home.cluster_record()["state"], "FAILED");
    let (code, body) = rest(&rm, "GET", "services/rh-yarn2");
    assert_eq!(code, 404, "{body}");

    // A node type larger than YARN's largest container: refused when the service is created.
    let big = home.write(
        "big.toml",
        &CONFIG.replace("memory = \"1G\"", "memory = \"64G\""),
    );
    let out = home
        .command(&[
            "--config",
            big.to_str().unwrap(),
            "--scheduler",
            "yarn",
            "up",
            "--rm",
            &rm,
            "--name",
            "yarn5",
        ])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("ray-worker-cpu") && said.contains("max container memory"),
        "{said}"
    );
    assert_eq!(rest(&rm, "GET", "services/rh-yarn5").0, 404);
    home.assert_no_leftovers(Duration::from_secs(10));
}

#[test]
fn a_tarball_artifact_carries_ray_hpc_into_the_containers() {
    let Some(rm) = yarn_rm() else { return };
    let home = TestHome::new();
    // The site's tarball: ray-hpc in bin/ (Ray comes from the shared PATH here).
    let pack = home.path().join("pack");
    std::fs::create_dir_all(pack.join("bin")).unwrap();
    std::fs::copy(ray_hpc(), pack.join("bin/ray-hpc")).unwrap();
    let tarball = home.path().join("ray-hpc.tar.gz");
    let out = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&pack)
        .arg("bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let cfg = home.write(
        "yarn.toml",
        &format!(
            "[yarn]\nuser = \"rh\"\nartifact = \"file://{}\"\n",
            tarball.display()
        ),
    );
    let name = "yarn4";
    let out = home
        .command(&[
            "--config",
            cfg.to_str().unwrap(),
            "--scheduler",
            "yarn",
            "up",
            "--rm",
            &rm,
            "--name",
            name,
            "--nodes",
            "2",
            "--cpus-per-node",
            "1",
            "--memory",
            "2G",
        ])
        .output()
        .unwrap();
    let c = YarnCluster {
        home: &home,
        rm: rm.clone(),
        name: name.into(),
        env: exports(&String::from_utf8_lossy(&out.stdout)),
        path: test_path(),
    };
    assert!(out.status.success(), "{}\n{}", text(&out), c.logs());
    // The head and the worker run the ray-hpc YARN unpacked in their containers.
    let localized: Vec<String> = home
        .leftovers()
        .into_iter()
        .map(|(_, cmd)| cmd)
        .filter(|cmd| cmd.starts_with("lib/bin/ray-hpc "))
        .collect();
    assert!(
        localized.iter().any(|c| c.contains(" run --name yarn4"))
            && localized.iter().any(|c| c.contains(" agent --join yarn4")),
        "{localized:#?}\n{}",
        c.logs()
    );
    let nodes = wait_for(
        "the worker to join",
        Duration::from_secs(120),
        || alive_nodes(&c).filter(|n| n.len() == 2),
        || c.logs(),
    );
    assert_eq!(nodes.len(), 2);
    c.down();
    assert_eq!(c.status().0, 404);
    home.assert_no_leftovers(Duration::from_secs(60));
}
