//! `kubewire bench apiserver`: the API server's throughput, list cost and watch delay, measured
//! against an in-process server on loopback through the same kube-rs client components use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

#[derive(clap::Args)]
pub struct Options {
    /// Creates in the sequential run (the concurrent run does twice as many).
    #[arg(long, default_value_t = 2000)]
    creates: usize,
    /// Pods to list.
    #[arg(long, default_value_t = 100_000)]
    pods: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 200)]
    watchers: usize,
    /// Writes the watchers must see.
    #[arg(long, default_value_t = 10_000)]
    writes: usize,
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn config_map(name: String) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name);
    cm.data = Some([("key".to_string(), "value".to_string())].into());
    cm
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{i:06}"), "labels": {"app": "bench", "shard": (i % 16).to_string()}},
        "spec": {"nodeName": format!("node-{}", i % 50), "containers": [{"name": "app", "image": "kubewire", "ports": [{"containerPort": 8080}]}]},
    }))
    .expect("literal pod")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

/// Creates `total` objects with `clients` concurrent clients; returns creates per second.
async fn create_many<K, F>(
    api: &Api<K>,
    total: usize,
    clients: usize,
    what: &str,
    make: F,
) -> Result<f64>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(usize) -> K + Send + Sync + Copy + 'static,
{
    let bar = progress(total, what);
    let start = Instant::now();
    futures::stream::iter(0..total)
        .map(|i| {
            let api = api.clone();
            let bar = bar.clone();
            async move {
                api.create(&PostParams::default(), &make(i)).await?;
                bar.inc(1);
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(clients)
        .try_collect::<Vec<_>>()
        .await?;
    bar.finish_and_clear();
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(opts: Options) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a scratch data dir")?;
    let config = kubewire_apiserver::Config::new("127.0.0.1:0".parse()?, dir.path());
    let server = kubewire_apiserver::Server::start(config)
        .await
        .context("starting the API server")?;
    let client = kubewire_api::client::from_kubeconfig(server.kubeconfig_path()).await?;
    tokio::spawn(server.run());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["seq", "par", "list", "fanout"] {
        let mut n = Namespace::default();
        n.metadata.name = Some(ns.to_string());
        namespaces.create(&PostParams::default(), &n).await?;
    }
    println!(
        "kubewire bench apiserver (data in {}, every write fsynced before it is acknowledged)\n",
        dir.path().display()
    );
    println!("{:<44} {:>14} {:>12}", "measure", "result", "goal");

    let seq: Api<ConfigMap> = Api::namespaced(client.clone(), "seq");
    let rate = create_many(&seq, opts.creates, 1, "sequential creates", |i| {
        config_map(format!("cm-{i}"))
    })
    .await?;
    println!(
        "{:<44} {:>12.0}/s {:>12}",
        "durable creates, 1 client", rate, ""
    );
    let par: Api<ConfigMap> = Api::namespaced(client.clone(), "par");
    let rate = create_many(&par, opts.creates * 2, 16, "concurrent creates", |i| {
        config_map(format!("cm-{i}"))
    })
    .await?;
    println!(
        "{:<44} {:>12.0}/s {:>12}",
        "durable creates, 16 clients (group commit)", rate, "≥ 1000/s"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "list");
    let before = rss_kib("VmRSS:");
    let rate = create_many(&pods, opts.pods, 64, "seeding pods", pod).await?;
    let stored = rss_kib("VmRSS:").saturating_sub(before);
    println!(
        "{:<44} {:>12.0}/s {:>12}",
        format!("pod creates, 64 clients ({} pods)", opts.pods),
        rate,
        ""
    );
    let mut list_times = Vec::new();
    let mut list_bytes = 0;
    let hwm_before = rss_kib("VmHWM:");
    for _ in 0..3 {
        let req = http::Request::get("/api/v1/namespaces/list/pods").body(Vec::new())?;
        let start = Instant::now();
        let text = client.request_text(req).await?;
        list_times.push(start.elapsed());
        list_bytes = text.len();
    }
    list_times.sort();
    println!(
        "{:<44} {:>12.0}ms {:>12}",
        format!(
            "list {} pods ({} MiB), best of 3",
            opts.pods,
            list_bytes >> 20
        ),
        list_times[0].as_secs_f64() * 1e3,
        "≤ 1000ms"
    );
    println!(
        "{:<44} {:>12}MiB {:>12}",
        "  memory to hold them (process RSS growth)",
        stored >> 10,
        ""
    );
    println!(
        "{:<44} {:>12}MiB {:>12}",
        "  peak extra memory while listing",
        rss_kib("VmHWM:").saturating_sub(hwm_before) >> 10,
        ""
    );

    let (p50, p99, seen) = watch_fanout(&client, opts.watchers, opts.writes).await?;
    println!(
        "{:<44} {:>12.1}ms {:>12}",
        format!(
            "watch delay p50 ({} watchers, {} writes)",
            opts.watchers, opts.writes
        ),
        p50.as_secs_f64() * 1e3,
        ""
    );
    println!(
        "{:<44} {:>12.1}ms {:>12}",
        "watch delay p99 (acknowledged → delivered)",
        p99.as_secs_f64() * 1e3,
        "≤ 50ms"
    );
    println!(
        "{:<44} {:>14} {:>12}",
        "events delivered",
        seen,
        opts.watchers * opts.writes
    );
    Ok(())
}

/// Starts `watchers` watches, makes `writes` creates with 16 writers, and returns the p50 and
/// p99 delay from each create's acknowledgement to its delivery at each watcher.
async fn watch_fanout(
    client: &kube::Client,
    watchers: usize,
    writes: usize,
) -> Result<(Duration, Duration, usize)> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "fanout");
    let rv = api
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let received: Arc<Mutex<Vec<(String, Instant)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(watchers * writes)));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let api = api.clone();
        let rv = rv.clone();
        let received = received.clone();
        let stream = api.watch(&WatchParams::default().timeout(290), &rv).await?;
        tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut local = Vec::with_capacity(writes);
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Added(cm) = event {
                    local.push((cm.metadata.name.unwrap_or_default(), Instant::now()));
                    if local.len() == writes {
                        break;
                    }
                }
            }
            received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(local);
        }));
    }
    let acked: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(writes)));
    let bar = progress(writes, "watched writes");
    futures::stream::iter(0..writes)
        .map(|i| {
            let api = api.clone();
            let acked = acked.clone();
            let bar = bar.clone();
            async move {
                let name = format!("w-{i}");
                api.create(&PostParams::default(), &config_map(name.clone()))
                    .await?;
                acked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name, Instant::now());
                bar.inc(1);
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    bar.finish_and_clear();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner());
    let received = received.lock().unwrap_or_else(|p| p.into_inner());
    let mut delays: Vec<Duration> = received
        .iter()
        .filter_map(|(name, at)| Some(at.saturating_duration_since(*acked.get(name)?)))
        .collect();
    delays.sort();
    Ok((
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        received.len(),
    ))
}
