//! kubectl against `kubewire apiserver`, used as a new user would: apply a directory of
//! manifests, re-apply after an edit, get -o yaml, get -w, label, scale, delete, and a bad
//! manifest rejected with field paths.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::ApiServer;

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn manifests() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

#[test]
fn kubectl_works_as_for_any_cluster() {
    if !common::have_tool("kubectl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(dir.path(), &[]);
    let kc = server.kubeconfig();
    let dir_arg = manifests();
    let dir_arg = dir_arg.to_str().unwrap();

    let applied = ok(&kc, &["apply", "-f", dir_arg]);
    for created in [
        "namespace/shop created",
        "deployment.apps/web created",
        "service/web created",
        "networkpolicy.networking.k8s.io/web-allow-frontend created",
        "ingress.networking.k8s.io/web created",
        "gateway.gateway.networking.k8s.io/shop created",
        "httproute.gateway.networking.k8s.io/web created",
    ] {
        assert!(
            applied.contains(created),
            "{created} missing from:\n{applied}"
        );
    }
    // Applying again changes nothing.
    let again = ok(&kc, &["apply", "-f", dir_arg]);
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");

    // The Service got its defaults and addresses from the server.
    let svc = ok(&kc, &["get", "service", "web", "-n", "shop", "-o", "yaml"]);
    let svc: serde_yaml::Value = serde_yaml::from_str(&svc).unwrap();
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.")),
        "{svc:?}"
    );
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port));
    assert_eq!(svc["spec"]["ports"][0]["protocol"].as_str(), Some("TCP"));

    // A watch sees the edit that a re-apply makes (a strategic merge patch).
    let mut watch = Command::new("kubectl")
        .env("KUBECONFIG", &kc)
        .args([
            "get",
            "deployment",
            "web",
            "-n",
            "shop",
            "-w",
            "-o",
            "jsonpath={.spec.replicas}{\"\\n\"}",
            "--request-timeout=20s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let edited = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(manifests().join("10-deployment.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 4");
    std::fs::write(edited.path(), text).unwrap();
    let out = ok(&kc, &["apply", "-f", edited.path().to_str().unwrap()]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    std::thread::sleep(Duration::from_millis(700));
    let _ = watch.kill();
    let mut seen = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let _ = watch.wait();
    assert!(
        seen.lines().any(|l| l == "2") && seen.lines().any(|l| l == "4"),
        "watch saw {seen:?}"
    );
    // The patch merged: the container list still has its probe and port.
    let dep = ok(
        &kc,
        &[
            "get",
            "deployment",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].ports[0].containerPort} {.metadata.generation}",
        ],
    );
    assert_eq!(dep, "8080 2");

    ok(
        &kc,
        &["label", "deployment", "web", "-n", "shop", "tier=front"],
    );
    let labels = ok(
        &kc,
        &[
            "get",
            "deployment",
            "-n",
            "shop",
            "-l",
            "tier=front",
            "-o",
            "name",
        ],
    );
    assert_eq!(labels.trim(), "deployment.apps/web");
    ok(
        &kc,
        &["scale", "deployment", "web", "-n", "shop", "--replicas=1"],
    );
    assert_eq!(
        ok(
            &kc,
            &[
                "get",
                "deployment",
                "web",
                "-n",
                "shop",
                "-o",
                "jsonpath={.spec.replicas}"
            ]
        ),
        "1"
    );

    // Tables print like a real cluster's.
    let table = ok(&kc, &["get", "services", "-n", "shop"]);
    assert!(
        table.starts_with("NAME")
            && table.contains("NodePort")
            && table.contains(&format!("80:{node_port}/TCP")),
        "{table}"
    );

    // A bad manifest: kubectl's usual error, with the field path.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  ports:\n  - port: 0\n",
    )
    .unwrap();
    let out = kubectl(&kc, &["apply", "-f", bad.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is invalid") && err.contains("spec.ports[0].port"),
        "{err}"
    );
    let unknown = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        unknown.path(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndatta:\n  a: b\n",
    )
    .unwrap();
    let out = kubectl(&kc, &["apply", "-f", unknown.path().to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"datta\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Delete, and the namespace takes its contents with it.
    ok(
        &kc,
        &[
            "delete",
            "-f",
            manifests().join("60-httproute.yaml").to_str().unwrap(),
        ],
    );
    ok(&kc, &["delete", "namespace", "shop", "--timeout=20s"]);
    let left = ok(
        &kc,
        &[
            "get",
            "all,networkpolicies,ingresses,gateways",
            "-n",
            "shop",
            "-o",
            "name",
        ],
    );
    assert_eq!(left.trim(), "", "namespace contents remain: {left}");
}
