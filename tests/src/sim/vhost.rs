//! A throwaway RabbitMQ vhost (made with `rabbitmqctl`) on any broker URL, so a benchmark
//! has its own queues on a shared node. Tests use `crate::rabbit::TestVhost` instead.

use lapin::{Connection, ConnectionProperties, options::QueuePurgeOptions};

/// A vhost that is deleted on [`Vhost::delete`] or, failing that, on drop.
#[derive(Debug)]
pub struct Vhost {
    pub name: String,
    url: String,
    deleted: bool,
}

impl Vhost {
    /// Creates `<prefix>-<random>` and grants the URL's user (default `guest`) everything
    /// on it. `base_url` is an `amqp://user:pass@host:port[/vhost]` URL; its vhost is
    /// replaced.
    pub async fn create(base_url: &str, prefix: &str) -> anyhow::Result<Vhost> {
        let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]).await?;
        let mut vhost = Vhost {
            url: with_vhost(base_url, &name),
            name,
            deleted: false,
        };
        let user = user_of(base_url);
        if let Err(e) = rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &user,
            ".*",
            ".*",
            ".*",
        ])
        .await
        {
            vhost.delete().await;
            return Err(e);
        }
        Ok(vhost)
    }

    /// The AMQP URL of this vhost.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Deletes it (queues and all), best effort.
    pub async fn delete(&mut self) {
        if !self.deleted {
            self.deleted = true;
            let _ = rabbitmqctl(&["delete_vhost", &self.name]).await;
        }
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        // A failed test or an interrupted benchmark must not leave vhosts behind.
        if !self.deleted {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["-q", "delete_vhost", &self.name])
                .output();
        }
    }
}

/// `rabbitmqctl -q <args>` through [`crate::rabbit::rabbitmqctl`], up to three times: the
/// CLI's own Erlang node sometimes fails to start ("Distribution failed") while other CLI
/// calls run beside it.
async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match crate::rabbit::rabbitmqctl(args).await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 3 && format!("{e:#}").contains("Distribution failed") => {
                tokio::time::sleep(std::time::Duration::from_millis(500 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `amqp://u:p@h:port/<vhost>`, whatever path `base` had.
pub fn with_vhost(base: &str, vhost: &str) -> String {
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let encoded = vhost.replace('%', "%25").replace('/', "%2f");
    format!("{}/{encoded}", &base[..authority_end])
}

fn user_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.split_once('@') {
        Some((userinfo, _)) => userinfo.split(':').next().unwrap_or("guest").to_owned(),
        None => "guest".to_owned(),
    }
}

/// Declares the bridge's default topology, as the ingress and the worker do at start-up, so a
/// phase that runs before them (a baseline) finds the same exchange and queues.
pub async fn declare_topology(amqp_url: &str) -> anyhow::Result<()> {
    let connection = shared::amqp::connect(amqp_url, "xsolla-bench topology").await?;
    let channel = connection.create_channel().await?;
    let declared =
        shared::topology::declare(&channel, &shared::topology::Topology::default()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(declared?)
}

/// Drops every ready message in `queue`; returns how many.
pub async fn purge(amqp_url: &str, queue: &str) -> anyhow::Result<u32> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let purged = channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await;
    let _ = connection.close(200, "done".into()).await;
    Ok(purged?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_vhost_of_a_url() {
        assert_eq!(
            with_vhost("amqp://guest:guest@127.0.0.1:5672/%2f", "sim-1"),
            "amqp://guest:guest@127.0.0.1:5672/sim-1"
        );
        assert_eq!(with_vhost("amqp://h:5672", "a/b"), "amqp://h:5672/a%2fb");
        assert_eq!(user_of("amqp://bob:pw@h/"), "bob");
        assert_eq!(user_of("amqp://h/"), "guest");
    }
}
