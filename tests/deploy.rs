//! The files under `deploy/` are checked as far as this machine allows: Kubernetes manifests
//! against the API schemas (`kubernetes-validate --strict`, offline), the ConfigMaps against
//! the service itself, the Grafana dashboard against the real `/metrics` output, and the Istio
//! files for consistency. (The Envoy file is run for real in tests/envoy.rs.)
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assumption should stop the test"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_authz::config::Config;
use mcp_authz::testutil::{
    FakeIdp, TestKey, claims, config_yaml, external_program, grpc_check, shipped_policies, venv_bin,
};
use serde::Deserialize as _;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let Some(validator) = external_program(
        "kubernetes-validate",
        [venv_bin("kubernetes-validate")],
        |_| true,
        "MCP_AUTHZ_SKIP_ENVOY",
        "run scripts/test (installs kubernetes-validate into .venv)",
    ) else {
        return;
    };
    let out = std::process::Command::new(validator)
        .arg("--strict")
        .args(manifests())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for kind in [
        "deployment",
        "service",
        "configmap",
        "poddisruptionbudget",
        "horizontalpodautoscaler",
        "networkpolicy",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}/")),
            "{text}"
        );
    }
}

#[test]
fn the_deployment_is_locked_down_and_probed() {
    let d = yaml(&root().join("deploy/kubernetes/deployment.yaml"));
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["resources"]["limits"]["memory"].is_string());
    // Hot reload needs the policies mounted as a directory: subPath mounts never update.
    for m in c["volumeMounts"].as_array().unwrap() {
        assert!(m.get("subPath").is_none(), "{m}");
    }
    let annotations = &d["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
}

#[test]
fn the_policies_configmap_is_the_shipped_policies() {
    let cm = yaml(&root().join("deploy/kubernetes/policies.yaml"));
    let data = cm["data"].as_object().unwrap();
    for name in [
        "schema.cedarschema",
        "session.cedar",
        "tools.cedar",
        "guards.cedar",
        "entities.json",
    ] {
        let shipped = std::fs::read_to_string(shipped_policies().join(name)).unwrap();
        assert_eq!(
            data[name].as_str().unwrap().trim_end(),
            shipped.trim_end(),
            "deploy/kubernetes/policies.yaml is out of date for {name}"
        );
    }
}

#[test]
fn the_config_configmap_is_a_valid_config() {
    let cm = yaml(&root().join("deploy/kubernetes/config.yaml"));
    let text = cm["data"]["config.yaml"].as_str().unwrap();
    assert!(text.contains("dir: /etc/mcp-authz/policies"));
    let local = text.replace(
        "dir: /etc/mcp-authz/policies",
        &format!("dir: {}", shipped_policies().display()),
    );
    let config = Config::from_yaml(&local).unwrap();
    mcp_authz::policy::load_dir(&config.policies.dir).unwrap();
}

#[test]
fn istio_files_agree_with_each_other() {
    let mesh = yaml(&root().join("deploy/istio/mesh-config.yaml"));
    let policy = yaml(&root().join("deploy/istio/authorization-policy.yaml"));
    let provider = &mesh["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert_eq!(grpc["failOpen"], false);
    assert_eq!(grpc["port"], 9191);
    assert_eq!(grpc["includeRequestBodyInCheck"]["packAsBytes"], true);
    let service = yaml(&root().join("deploy/kubernetes/service.yaml"));
    assert_eq!(
        grpc["service"],
        format!(
            "{}.{}.svc.cluster.local",
            service["metadata"]["name"].as_str().unwrap(),
            service["metadata"]["namespace"].as_str().unwrap()
        )
    );
}

/// Only the callers of ext_authz reach the check port, only Prometheus the metrics port, and
/// the admin gRPC API is neither exposed nor in the Service.
#[test]
fn network_and_mesh_policies_admit_only_the_callers() {
    let np = yaml(&root().join("deploy/kubernetes/networkpolicy.yaml"));
    let deployment = yaml(&root().join("deploy/kubernetes/deployment.yaml"));
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let service = yaml(&root().join("deploy/kubernetes/service.yaml"));
    let service_ports: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(service_ports, ["grpc", "admin"]);
    let rules = np["spec"]["ingress"].as_array().unwrap();
    let mut ports = Vec::new();
    for rule in rules {
        // No rule admits every source.
        assert!(!rule["from"].as_array().unwrap().is_empty(), "{rule}");
        for p in rule["ports"].as_array().unwrap() {
            ports.push(p["port"].as_str().unwrap());
        }
    }
    ports.sort_unstable();
    assert_eq!(ports, ["admin", "grpc"]);
    // The admin gRPC API stays on its loopback default.
    let config = yaml(&root().join("deploy/kubernetes/config.yaml"));
    let config: Value =
        serde_yaml_ng::from_str(config["data"]["config.yaml"].as_str().unwrap()).unwrap();
    assert!(config["listen"].get("admin_grpc").is_none(), "{config}");

    let text =
        std::fs::read_to_string(root().join("deploy/istio/peer-authentication.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let peer = docs
        .iter()
        .find(|d| d["kind"] == "PeerAuthentication")
        .unwrap();
    assert_eq!(peer["spec"]["mtls"]["mode"], "STRICT");
    let allow = docs
        .iter()
        .find(|d| d["kind"] == "AuthorizationPolicy")
        .unwrap();
    assert_eq!(allow["spec"]["action"], "ALLOW");
    let check_rule = allow["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["to"][0]["operation"]["ports"][0] == "9191")
        .unwrap();
    assert!(
        !check_rule["from"][0]["source"]["principals"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(service["spec"]["ports"][0]["port"], 9191);
}

#[test]
fn the_dockerfile_is_multi_stage_and_unprivileged() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(text.contains("USER nonroot"));
    assert!(text.contains("--locked"));
}

/// Every metric the dashboard queries exists in the real `/metrics` output.
#[tokio::test]
async fn the_grafana_dashboard_queries_real_metrics() {
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    // With a shadow set (the shipped policies shadowing themselves), so its series exist.
    let yaml = config_yaml(&idp.issuer, "https://mcp.example.com/mcp", "").replace(
        "policies:\n  dir: ",
        &format!(
            "policies:\n  shadow_dir: {}\n  dir: ",
            root().join("policies").display()
        ),
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let running = mcp_authz::server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let token = key.token(&claims(&idp.issuer, "https://mcp.example.com/mcp"));
    grpc_check(
        running.grpc_addr,
        "POST",
        "mcp.example.com",
        "/mcp",
        Some(&token),
    )
    .await;
    // The shadow evaluation runs after the answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = reqwest::get(format!("http://{}/metrics", running.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/mcp-authz-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("mcp_authz_").or_else(|| rest.find("process_")) {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            metrics.lines().any(|l| l.starts_with(&name)),
            "the dashboard queries `{name}`, which /metrics does not export"
        );
    }
    running.stop().await;
}

/// Seconds in an Envoy or Istio duration (`2s`, `0.5s`).
fn seconds(value: &Value) -> f64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a duration: {value}"));
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a duration: {text}"))
}

/// The shutdown timing chain of docs/reliability/README.md ("Availability") holds for the
/// shipped files: Envoy's health check notices NOT_SERVING (interval × unhealthy_threshold)
/// before mcp-authz's default drain delay ends, and Kubernetes waits for drain delay and grace;
/// Envoy retries unanswered checks on another instance and ejects instances that stop
/// answering, within the check timeout.
#[test]
fn shutdown_timing_chain_and_retries_match_the_deploy_files() {
    let envoy = yaml(&root().join("deploy/envoy/envoy.yaml"));
    let clusters = envoy["static_resources"]["clusters"].as_array().unwrap();
    let authz = clusters.iter().find(|c| c["name"] == "mcp_authz").unwrap();
    let hc = &authz["health_checks"][0];
    let detect = seconds(&hc["interval"]) * hc["unhealthy_threshold"].as_f64().unwrap();
    assert!(
        seconds(&hc["no_traffic_interval"]) <= seconds(&hc["interval"]),
        "an idle cluster must notice as fast: {hc}"
    );
    assert_eq!(
        hc["grpc_health_check"]["service_name"],
        "envoy.service.auth.v3.Authorization"
    );

    // mcp-authz's defaults, as the shipped ConfigMap leaves them.
    let cm = yaml(&root().join("deploy/kubernetes/config.yaml"));
    let text = cm["data"]["config.yaml"].as_str().unwrap().replace(
        "dir: /etc/mcp-authz/policies",
        &format!("dir: {}", shipped_policies().display()),
    );
    let config = Config::from_yaml(&text).unwrap();
    let drain = config.shutdown.drain_delay.as_secs_f64();
    let grace = config.shutdown.grace.as_secs_f64();
    assert!(
        detect + seconds(&hc["timeout"]) <= drain,
        "Envoy needs {detect} s (+ one health-check timeout) to notice; the drain delay is {drain} s"
    );
    let deployment = yaml(&root().join("deploy/kubernetes/deployment.yaml"));
    let pod = &deployment["spec"]["template"];
    let termination = pod["spec"]["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap();
    assert!(
        drain + grace < termination,
        "terminationGracePeriodSeconds {termination} must exceed drain {drain} + grace {grace}"
    );
    let rollout = &deployment["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(rollout["maxUnavailable"], 0, "{rollout}");
    // In a mesh, the pod's sidecar stays for the whole shutdown.
    let istio: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["proxy.istio.io/config"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(seconds(&istio["terminationDrainDuration"]) >= drain + grace);

    // Retries: once, elsewhere, for checks without an answer; the per-try timeout Envoy derives
    // from max_interval is not shorter than the check timeout.
    let listener = &envoy["static_resources"]["listeners"][0];
    let filters = &listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
    let ext_authz = filters
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .unwrap();
    let grpc = &ext_authz["typed_config"]["grpc_service"];
    let timeout = seconds(&grpc["timeout"]);
    let retry = &grpc["retry_policy"];
    assert_eq!(retry["num_retries"], 1);
    let on: Vec<&str> = retry["retry_on"].as_str().unwrap().split(',').collect();
    for condition in ["connect-failure", "refused-stream", "reset", "unavailable"] {
        assert!(
            on.contains(&condition),
            "retry_on lacks {condition}: {on:?}"
        );
    }
    assert!(seconds(&retry["retry_back_off"]["max_interval"]) >= timeout);
    assert_eq!(
        retry["retry_host_predicate"][0]["name"],
        "envoy.retry_host_predicates.previous_hosts"
    );
    assert!(seconds(&authz["connect_timeout"]) < timeout);
    assert_eq!(ext_authz["typed_config"]["failure_mode_allow"], false);
    // mcp-authz answers or sheds a check well within the timeout: queue wait plus the longest
    // wait for a key refetch.
    let kid_wait = config.issuers[0].key_refresh.unknown_kid_wait.as_secs_f64();
    assert!(config.overload.max_queue_wait.as_secs_f64() + kid_wait < timeout);

    let outlier = &authz["outlier_detection"];
    assert_eq!(
        outlier["enforcing_consecutive_5xx"], 0,
        "a shed check is not a failure"
    );
    assert!(
        outlier["consecutive_local_origin_failure"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let rule = yaml(&root().join("deploy/istio/destination-rule.yaml"));
    let service = yaml(&root().join("deploy/kubernetes/service.yaml"));
    assert_eq!(
        rule["spec"]["host"],
        format!(
            "{}.{}.svc.cluster.local",
            service["metadata"]["name"].as_str().unwrap(),
            service["metadata"]["namespace"].as_str().unwrap()
        )
    );
    assert_eq!(
        rule["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"],
        0
    );
}

/// The Istio list filter is the shipped Envoy one, pointed at the mcp-authz Service, on the
/// workloads the authorization policy covers, right after its ext_authz filter.
#[test]
fn the_istio_list_filter_is_the_envoy_one() {
    let envoy = yaml(&root().join("deploy/envoy/envoy.yaml"));
    let filters = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"];
    let mut shipped = filters
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "mcp_list_filter")
        .unwrap()
        .clone();
    let istio = yaml(&root().join("deploy/istio/list-filter.yaml"));
    let patch = &istio["spec"]["configPatches"][0];
    assert_eq!(patch["patch"]["operation"], "INSERT_AFTER");
    assert_eq!(
        patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.ext_authz"
    );
    let policy = yaml(&root().join("deploy/istio/authorization-policy.yaml"));
    assert_eq!(
        istio["spec"]["workloadSelector"]["labels"],
        policy["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        istio["metadata"]["namespace"],
        policy["metadata"]["namespace"]
    );
    let ext_proc = |f: &mut serde_json::Value| {
        f["typed_config"]["xds_matcher"]["matcher_list"]["matchers"][0]["on_match"]["action"]
            ["typed_config"]["typed_config"]["typed_config"]
            .take()
    };
    let mut value = patch["patch"]["value"].clone();
    let mut theirs = ext_proc(&mut value);
    let mut ours = ext_proc(&mut shipped);
    assert_eq!(value, shipped, "the filters differ outside ext_proc");
    let grpc = theirs["grpc_service"]["envoy_grpc"].take();
    assert_eq!(
        grpc["cluster_name"],
        "outbound|9191||mcp-authz.mcp-authz.svc.cluster.local"
    );
    assert_eq!(grpc["authority"], "mcp-authz.mcp-authz.svc.cluster.local");
    ours["grpc_service"]["envoy_grpc"].take();
    assert_eq!(theirs, ours, "the ext_proc settings differ");
}
