//! The services under test as real processes: the ingresses and the workers, configured
//! alike (one `AMQP_URL`, the suite's delay tiers, short timeouts), each answering
//! `/readyz` and `/metrics` on a port of its own.

use std::time::Duration;

use super::procs::{LogDir, Service};
use crate::{bin_path, rabbit::pick_free_port, worker_harness::metric_sum};

/// What to start.
pub struct Setup<'a> {
    /// One broker URL, or a cluster's nodes comma-separated.
    pub amqp_url: String,
    pub inventory_url: String,
    /// `XSOLLA_WEBHOOK_SECRET` of every ingress.
    pub secret: &'a str,
    /// `RETRY_DELAYS` as `(label, delay)`: the labels are what the variable takes.
    pub retry_delays: &'a [(&'a str, Duration)],
    pub ingresses: usize,
    pub workers: usize,
    /// Hand each process the node list of `amqp_url` rotated by its position (ingresses
    /// first, then workers), so that they start on different nodes of a cluster as they
    /// would behind a load-balanced name; otherwise all start on the first node.
    pub spread_nodes: bool,
}

impl Setup<'_> {
    /// `AMQP_URL` of process `k`.
    fn amqp_url_of(&self, k: usize) -> String {
        let nodes: Vec<&str> = self.amqp_url.split(',').collect();
        if !self.spread_nodes {
            return self.amqp_url.clone();
        }
        let n = nodes.len();
        (0..n)
            .map(|i| nodes[(i + k) % n])
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The running services.
pub struct System {
    pub ingresses: Vec<Service>,
    pub workers: Vec<Service>,
}

impl System {
    /// Starts every ingress, then every worker, each once its `/readyz` says so.
    pub async fn start(setup: &Setup<'_>, logs: &LogDir) -> anyhow::Result<System> {
        let delays = setup
            .retry_delays
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(",");
        let common = |k: usize, pairs: &[(&str, String)]| -> Vec<(String, String)> {
            [
                ("AMQP_URL", setup.amqp_url_of(k)),
                ("RETRY_DELAYS", delays.clone()),
                ("PUBLISH_TIMEOUT", "2s".into()),
                // Also the liveness probe's bound: a silent node is left in about 4 s.
                ("AMQP_CONNECT_TIMEOUT", "2s".into()),
                ("SHUTDOWN_TIMEOUT", "5s".into()),
            ]
            .iter()
            .chain(pairs)
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
        };
        let mut ingresses = Vec::new();
        for n in 1..=setup.ingresses {
            let listen = format!("127.0.0.1:{}", pick_free_port()?);
            let env = common(
                n - 1,
                &[
                    ("INGRESS_LISTEN", listen.clone()),
                    ("XSOLLA_WEBHOOK_SECRET", setup.secret.into()),
                ],
            );
            // One ingress keeps the plain name its logs always had.
            let name = if setup.ingresses == 1 {
                "ingress".to_owned()
            } else {
                format!("ingress-{n}")
            };
            ingresses.push(Service::new(&name, bin_path("ingress"), env, listen, logs));
        }
        let mut workers = Vec::new();
        for n in 1..=setup.workers {
            let ops = format!("127.0.0.1:{}", pick_free_port()?);
            let env = common(
                setup.ingresses + n - 1,
                &[
                    ("INVENTORY_URL", setup.inventory_url.clone()),
                    ("WORKER_LISTEN", ops.clone()),
                    ("WORKER_CONCURRENCY", "16".into()),
                    ("INVENTORY_TIMEOUT", "1s".into()),
                    ("QUICK_RETRIES", "1".into()),
                    ("RETRY_BUDGET", "10m".into()),
                ],
            );
            let name = format!("worker-{n}");
            workers.push(Service::new(&name, bin_path("worker"), env, ops, logs));
        }
        for s in ingresses.iter_mut().chain(&mut workers) {
            s.start().await?;
        }
        Ok(System { ingresses, workers })
    }

    /// `http://<ingress i>/webhooks/xsolla`.
    pub fn webhook_url(&self, i: usize) -> String {
        format!("http://{}/webhooks/xsolla", self.ingresses[i].ops)
    }

    /// Deliveries the workers hold right now (`worker_in_flight`); `None` if one of them
    /// does not answer.
    pub async fn in_flight(&self) -> Option<f64> {
        let mut sum = 0.0;
        for w in &self.workers {
            sum += in_flight(w).await?;
        }
        Some(sum)
    }

    /// A line per service that exited on its own (none should).
    pub fn exits(&mut self) -> Vec<String> {
        self.ingresses
            .iter_mut()
            .chain(&mut self.workers)
            .filter_map(|s| {
                s.exited()
                    .map(|status| format!("{} exited on its own: {status}", s.name))
            })
            .collect()
    }

    /// Every child's log file, for failure messages.
    pub fn logs(&self) -> String {
        self.ingresses
            .iter()
            .chain(&self.workers)
            .flat_map(Service::log_files)
            .map(|p| format!("  {}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `worker_in_flight` of one worker; `None` if it does not answer.
pub async fn in_flight(worker: &Service) -> Option<f64> {
    let text = metrics(worker).await?;
    Some(metric_sum(&text, "worker_in_flight", &[]))
}

/// The service's `/metrics` text; `None` if it does not answer.
pub async fn metrics(service: &Service) -> Option<String> {
    reqwest::get(format!("http://{}/metrics", service.ops))
        .await
        .ok()?
        .text()
        .await
        .ok()
}
