//! The deployment files agree with oclagl's defaults: ports, environment
//! variables, volume names and probes.

use std::path::Path;

use oclagl::serve::ServeArgs;
use serde_yaml::Value;

fn load(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A compose value with `${VAR:?…}` / `${VAR}` references filled from `vars`.
fn substituted(value: &str, vars: &[(&str, &str)]) -> String {
    let mut out = value.to_string();
    while let Some(start) = out.find("${") {
        let end = start + out[start..].find('}').expect("a closed ${…}");
        let name = out[start + 2..end].split([':', '-']).next().unwrap_or("");
        let (_, v) = vars
            .iter()
            .find(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("no test value for {name}"));
        out.replace_range(start..=end, v);
    }
    out
}

#[test]
fn the_compose_sidecar_starts_with_its_settings_and_the_gateway_has_its_token() {
    let compose = &load("deploy/docker-compose.yml")[0];
    let vars = [("OCLAGL_AUTH_TOKEN", "compose-test-token")];
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_oclagl"));
    cmd.arg("serve").current_dir(tmp.path());
    for (k, v) in compose["services"]["oclagl"]["environment"]
        .as_mapping()
        .unwrap()
    {
        let (k, v) = (s(k), substituted(&s(v), &vars));
        // Same addresses, on ports free here; folders in a temporary one.
        let v = match k.as_str() {
            "OCLAGL_GRPC_ADDR" | "OCLAGL_HTTP_ADDR" => {
                v.replace(":4317", ":0").replace(":4318", ":0")
            }
            "OCLAGL_DATA_DIR" | "OCLAGL_TRACES_DIR" => tmp
                .path()
                .join(v.trim_start_matches('/'))
                .display()
                .to_string(),
            _ => v,
        };
        cmd.env(k, v);
    }
    let out = cmd
        .env("OCLAGL_SUMMARY_EVERY", "0")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let ready = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .find(|l| l.contains("oclagl serve ready") || l.contains("refusing"));
    let _ = child.kill();
    let _ = child.wait();
    let ready = ready.unwrap_or_default();
    assert!(
        ready.contains("oclagl serve ready"),
        "the compose sidecar does not start: {ready}"
    );
    // The gateway authenticates with the same token.
    let gw = &compose["services"]["openclaw"]["environment"];
    assert_eq!(
        substituted(&s(&gw["OTEL_EXPORTER_OTLP_HEADERS"]), &vars),
        "authorization=Bearer%20compose-test-token"
    );
}

#[test]
fn compose_wires_the_gateway_to_the_sidecar() {
    let defaults = ServeArgs::default();
    let compose = &load("deploy/docker-compose.yml")[0];
    let oclagl = &compose["services"]["oclagl"];
    let env = &oclagl["environment"];
    assert_eq!(
        s(&env["OCLAGL_GRPC_ADDR"]),
        format!("0.0.0.0:{}", defaults.listen.grpc_addr.port())
    );
    assert_eq!(
        s(&env["OCLAGL_HTTP_ADDR"]),
        format!("0.0.0.0:{}", defaults.listen.http_addr.port())
    );
    let published: Vec<String> = oclagl["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    for port in [
        defaults.listen.grpc_addr.port(),
        defaults.listen.http_addr.port(),
    ] {
        assert!(
            published.contains(&format!("127.0.0.1:{port}:{port}")),
            "{published:?}"
        );
    }
    // The data folder is the mounted volume, and the traces live inside it.
    let data = s(&env["OCLAGL_DATA_DIR"]);
    let mounts: Vec<String> = oclagl["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert!(
        mounts.contains(&format!("oclagl-data:{data}")),
        "{mounts:?}"
    );
    assert!(s(&env["OCLAGL_TRACES_DIR"]).starts_with(&data));
    assert!(compose["volumes"]
        .as_mapping()
        .unwrap()
        .contains_key("oclagl-data"));
    // The gateway exports to the sidecar's OTLP/HTTP port.
    let gw = &compose["services"]["openclaw"]["environment"];
    assert_eq!(
        s(&gw["OTEL_EXPORTER_OTLP_ENDPOINT"]),
        format!("http://oclagl:{}", defaults.listen.http_addr.port())
    );
    assert_eq!(s(&gw["OTEL_EXPORTER_OTLP_PROTOCOL"]), "http/protobuf");
    assert!(s(&oclagl["healthcheck"]["test"][1]).contains("/health"));
}

#[test]
fn kubernetes_runs_oclagl_as_a_sidecar_of_the_gateway() {
    let defaults = ServeArgs::default();
    let docs = load("deploy/k8s/oclagl-sidecar.yaml");
    let by_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == *kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let config = &by_kind("ConfigMap")["data"];
    let pod = &by_kind("Deployment")["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    let find = |name: &str| containers.iter().find(|c| c["name"] == *name).unwrap();
    let (gateway, sidecar) = (find("openclaw"), find("oclagl"));
    // Same pod: the gateway reaches the sidecar on loopback, at its default port.
    let env = gateway["env"].as_sequence().unwrap();
    let endpoint = env
        .iter()
        .find(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap();
    assert_eq!(
        s(&endpoint["value"]),
        format!("http://127.0.0.1:{}", defaults.listen.http_addr.port())
    );
    assert!(defaults.listen.http_addr.ip().is_loopback());
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(s(&sidecar[probe]["httpGet"]["path"]), "/health");
        assert_eq!(
            s(&sidecar[probe]["httpGet"]["port"]),
            defaults.listen.http_addr.port().to_string()
        );
    }
    let ports: Vec<String> = sidecar["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| s(&p["containerPort"]))
        .collect();
    assert_eq!(
        ports,
        vec![
            defaults.listen.grpc_addr.port().to_string(),
            defaults.listen.http_addr.port().to_string()
        ]
    );
    // The ConfigMap's data dir is the mounted volume, which the pod declares.
    assert_eq!(
        s(&sidecar["envFrom"][0]["configMapRef"]["name"]),
        s(&by_kind("ConfigMap")["metadata"]["name"])
    );
    let mount = &sidecar["volumeMounts"][0];
    assert_eq!(s(&mount["mountPath"]), s(&config["OCLAGL_DATA_DIR"]));
    assert!(s(&config["OCLAGL_TRACES_DIR"]).starts_with(&s(&config["OCLAGL_DATA_DIR"])));
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("mounted volume is declared");
    assert_eq!(
        s(&volume["persistentVolumeClaim"]["claimName"]),
        s(&by_kind("PersistentVolumeClaim")["metadata"]["name"])
    );
    assert!(oclagl::args::parse_duration(&s(&config["OCLAGL_QUIET"])).is_ok());
}

#[test]
fn compose_forwards_to_jaeger_and_tempo_which_listen_where_oclagl_sends() {
    use oclagl::forward::{Destination, Protocol};
    let compose = &load("deploy/docker-compose.yml")[0];
    let services = &compose["services"];
    let forward = s(&services["oclagl"]["environment"]["OCLAGL_FORWARD"]);
    let dests: Vec<Destination> = forward.split(' ').map(|d| d.parse().unwrap()).collect();
    assert_eq!(dests.len(), 2);
    // Jaeger v2 (one image, configured with --set) takes OTLP/gRPC on 4317.
    let jaeger = &services["jaeger"];
    assert!(s(&jaeger["image"]).starts_with("jaegertracing/jaeger:2."));
    let args: Vec<String> = jaeger["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(dests[0].protocol, Protocol::Grpc);
    assert_eq!(dests[0].url, "http://jaeger:4317");
    assert!(args.contains(&"--set=receivers.otlp.protocols.grpc.endpoint=0.0.0.0:4317".to_string()));
    // Tempo's OTLP/HTTP receiver is on the port oclagl sends to, and Grafana
    // reads Tempo on its HTTP port.
    assert_eq!(dests[1].protocol, Protocol::HttpProtobuf);
    assert_eq!(dests[1].url, "http://tempo:4318/v1/traces");
    let tempo_mount = s(&services["tempo"]["volumes"][0]);
    let tempo_file = tempo_mount
        .split(':')
        .next()
        .unwrap()
        .trim_start_matches("./");
    let tempo = &load(&format!("deploy/{tempo_file}"))[0];
    let otlp = &tempo["distributor"]["receivers"]["otlp"]["protocols"];
    assert_eq!(s(&otlp["http"]["endpoint"]), "0.0.0.0:4318");
    assert_eq!(s(&otlp["grpc"]["endpoint"]), "0.0.0.0:4317");
    let grafana_mount = s(&services["grafana"]["volumes"][0]);
    let grafana_file = grafana_mount
        .split(':')
        .next()
        .unwrap()
        .trim_start_matches("./");
    let ds = &load(&format!("deploy/{grafana_file}"))[0]["datasources"][0];
    assert_eq!(s(&ds["type"]), "tempo");
    assert_eq!(
        s(&ds["url"]),
        format!("http://tempo:{}", s(&tempo["server"]["http_listen_port"]))
    );
    // Every UI is published on loopback only.
    for svc in ["jaeger", "grafana", "oclagl", "openclaw"] {
        for p in services[svc]["ports"].as_sequence().unwrap() {
            assert!(s(p).starts_with("127.0.0.1:"), "{svc}: {}", s(p));
        }
    }
}

#[test]
fn the_agl_harness_job_runs_oclagl_run_against_the_gateway_and_sidecar_of_its_service() {
    let defaults = ServeArgs::default();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/agl-harness-job.yaml.j2");
    let template = std::fs::read_to_string(path).unwrap();
    // Rendered as AGL v1's Kubernetes runner does: the Job's name, and the
    // rollout's input through its `yaml_escape` filter (a JSON string).
    let prompt = "list the files: \"a\" & b: {c}";
    let rendered = template
        .replace("{{ job_name }}", "agl-rollout-r1")
        .replace(
            "{{ input.prompt | yaml_escape }}",
            &serde_json::to_string(prompt).unwrap(),
        );
    assert!(
        !rendered.contains("{{"),
        "the template uses what AGL does not set"
    );
    let job: Value = serde_yaml::from_str(&rendered).unwrap();
    assert_eq!(job["kind"], "Job");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "run");
    let env: Vec<(String, &Value)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (s(&e["name"]), e))
        .collect();
    let value = |name: &str| {
        let (_, e) = env.iter().find(|(n, _)| n == name).unwrap();
        s(&e["value"])
    };
    assert_eq!(value("OCLAGL_RUN_PROMPT"), prompt);
    assert_eq!(value("OCLAGL_GATEWAY"), "ws");
    // Every OCLAGL_ variable is one `oclagl run` reads.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_oclagl"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for (name, _) in env.iter().filter(|(n, _)| n.starts_with("OCLAGL_")) {
        assert!(
            help.contains(&format!("env: {name}")),
            "oclagl run reads no {name}"
        );
    }
    // The URLs are the Service's, whose ports are the gateway's and the
    // sidecar's, in the pod of oclagl-sidecar.yaml.
    let service = &load("deploy/k8s/agl-harness-service.yaml")[0];
    let host = s(&service["metadata"]["name"]);
    let port = |name: &str| {
        let ports = service["spec"]["ports"].as_sequence().unwrap();
        let p = ports.iter().find(|p| p["name"] == *name).unwrap();
        assert_eq!(s(&p["port"]), s(&p["targetPort"]));
        s(&p["port"])
    };
    let sidecar = format!("http://{host}:{}", port("oclagl-http"));
    assert_eq!(
        port("oclagl-http"),
        defaults.listen.http_addr.port().to_string()
    );
    assert_eq!(value("OCLAGL_RUN_SIDECAR"), sidecar);
    assert_eq!(value("OTEL_EXPORTER_OTLP_ENDPOINT"), sidecar);
    assert_eq!(
        value("OCLAGL_GATEWAY_URL"),
        format!("http://{host}:{}", port("gateway"))
    );
    let docs = load("deploy/k8s/oclagl-sidecar.yaml");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"];
    for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v);
    }
    let gateway = pod["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "openclaw")
        .unwrap();
    assert_eq!(s(&gateway["ports"][0]["containerPort"]), port("gateway"));
    // The sidecar's token reaches the OTLP exporter too.
    assert_eq!(
        value("OTEL_EXPORTER_OTLP_HEADERS"),
        "authorization=Bearer%20$(OCLAGL_AUTH_TOKEN)"
    );
}
