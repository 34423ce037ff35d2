//! Durable publishing for the HTTP edge: bounded in-flight publishes on the supervised
//! session, each confirmed by the broker before the request may be answered 204.

use std::{
    future::Future,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use lapin::BasicProperties;
use metrics::{Gauge, Histogram};
use shared::{
    amqp::Link,
    publish::{PublishError, publish_confirmed},
    topology::EXCHANGE,
};
use tokio::sync::Semaphore;

/// Why a webhook is not durable yet (answered 503).
#[derive(Debug, thiserror::Error)]
pub enum NotDurable {
    #[error("too many publishes awaiting a broker confirm")]
    Overloaded,
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl NotDurable {
    pub fn kind(&self) -> &'static str {
        match self {
            NotDurable::Overloaded => "overloaded",
            NotDurable::Publish(e) => e.kind(),
        }
    }
}

/// Where verified webhooks go: the seam between the answer table and the broker. The
/// product's is [`Publisher`]; tests of the routes use their own, without a broker.
pub trait Publish: Send + Sync + 'static {
    /// Resolves `Ok` only once the message is durable (the broker confirmed it).
    fn publish(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> impl Future<Output = Result<(), NotDurable>> + Send;
}

impl Publish for Publisher {
    fn publish(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> impl Future<Output = Result<(), NotDurable>> + Send {
        Publisher::publish(self, routing_key, body, properties)
    }
}

/// Publishes to `xsolla.webhooks` through the current broker session.
#[derive(Clone)]
pub struct Publisher {
    link: Link,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    meters: Arc<PublishMeters>,
}

/// The hot handles, looked up once (see [`crate::meters`]): the in-flight gauge (set twice
/// per webhook) and the confirm time of an acked publish.
#[derive(Default)]
struct PublishMeters {
    in_flight: OnceLock<Gauge>,
    acked: OnceLock<Histogram>,
}

impl Publisher {
    pub fn new(link: Link, max_in_flight: usize, timeout: Duration) -> Publisher {
        Publisher {
            link,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            timeout,
            meters: Arc::default(),
        }
    }

    /// Connected and topology declared.
    pub fn is_ready(&self) -> bool {
        self.link.is_ready()
    }

    /// Publishes and waits for the confirm. Never waits for a permit or a connection:
    /// if either is missing the caller answers 503 at once and Xsolla re-sends later.
    pub async fn publish(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), NotDurable> {
        let permit = self
            .permits
            .try_acquire()
            .map_err(|_| NotDurable::Overloaded)?;
        self.report_in_flight();
        let result = self.publish_now(routing_key, body, properties).await;
        drop(permit);
        self.report_in_flight();
        result.map_err(NotDurable::from)
    }

    async fn publish_now(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let session = self.link.current().ok_or(PublishError::NotConnected)?;
        let started = Instant::now();
        let result = publish_confirmed(
            session.channel(),
            EXCHANGE,
            routing_key,
            body,
            properties,
            self.timeout,
        )
        .await;
        let took = started.elapsed().as_secs_f64();
        match &result {
            Ok(()) => self
                .meters
                .acked
                .get_or_init(
                    || metrics::histogram!("ingress_publish_confirm_seconds", "result" => "ack"),
                )
                .record(took),
            Err(e) => metrics::histogram!("ingress_publish_confirm_seconds", "result" => e.kind())
                .record(took),
        }
        if matches!(
            result,
            Err(PublishError::Amqp(_) | PublishError::Timeout(_))
        ) {
            self.link.report_error();
        }
        result
    }

    fn report_in_flight(&self) {
        let in_flight = self.max_in_flight - self.permits.available_permits();
        self.meters
            .in_flight
            .get_or_init(|| metrics::gauge!("ingress_publishes_in_flight"))
            .set(in_flight as f64);
    }
}
