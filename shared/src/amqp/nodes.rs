//! The broker nodes a process may use: `AMQP_URL` as a comma-separated list, the connect
//! timeout per node, the TLS trust (`AMQP_CA_FILE`), and which node to try first.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lapin::{Connection, ConnectionProperties, tcp::OwnedTLSConfig, uri::AMQPScheme, uri::AMQPUri};

use super::redact_url;

/// `AMQP_CONNECT_TIMEOUT`'s default: long enough for a TLS handshake to a loaded broker,
/// short enough that a black-holed first node does not keep a process unready for long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One entry of `AMQP_URL`.
#[derive(Debug, Clone)]
pub struct Node {
    url: String,
    addr: String,
    tls: bool,
    host: String,
}

impl Node {
    /// Lenient: an entry lapin cannot parse is kept (connecting to it fails with lapin's
    /// error), so that [`Brokers::from`] needs no error path; start-up validation goes
    /// through [`Brokers::parse`].
    fn new(url: &str) -> Node {
        let url = url.trim().to_owned();
        match url.parse::<AMQPUri>() {
            Ok(uri) => Node {
                addr: host_port(&uri),
                tls: uri.scheme == AMQPScheme::AMQPS,
                host: uri.authority.host,
                url,
            },
            Err(_) => Node {
                addr: redact_url(&url),
                tls: false,
                host: String::new(),
                url,
            },
        }
    }

    /// `host:port`, as logs and the `amqp_node` metric show it.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

fn host_port(uri: &AMQPUri) -> String {
    let host = &uri.authority.host;
    if host.contains(':') {
        format!("[{host}]:{}", uri.authority.port)
    } else {
        format!("{host}:{}", uri.authority.port)
    }
}

/// The nodes of one cluster, tried in turn. Clones share the "where to start" position, so
/// a reconnect starts from the node that last answered (or the one after a node that was
/// just lost) instead of paying a dead first node's timeout every time.
#[derive(Debug, Clone)]
pub struct Brokers {
    nodes: Arc<[Node]>,
    connect_timeout: Duration,
    tls: Arc<OwnedTLSConfig>,
    ca_file: Option<PathBuf>,
    start: Arc<AtomicUsize>,
}

impl From<&str> for Brokers {
    /// Splits the list without checking it (see [`Brokers::parse`] for that); default
    /// timeout, system roots only.
    fn from(list: &str) -> Brokers {
        Brokers::unchecked(list.split(',').map(Node::new).collect())
    }
}

impl From<String> for Brokers {
    fn from(list: String) -> Brokers {
        Brokers::from(list.as_str())
    }
}

impl From<&String> for Brokers {
    fn from(list: &String) -> Brokers {
        Brokers::from(list.as_str())
    }
}

impl Brokers {
    fn unchecked(nodes: Vec<Node>) -> Brokers {
        Brokers {
            nodes: nodes.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: Arc::new(OwnedTLSConfig::default()),
            ca_file: None,
            start: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Parses and checks a comma-separated list of `amqp://`/`amqps://` URLs. The error is
    /// one line naming the entry (1-based position when there are several) with its
    /// password hidden.
    pub fn parse(list: &str) -> Result<Brokers, String> {
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        let several = entries.len() > 1;
        let mut nodes = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            check_entry(entry).map_err(|e| {
                if several {
                    format!("entry {} of {}: {e}", i + 1, entries.len())
                } else {
                    e
                }
            })?;
            nodes.push(Node::new(entry));
        }
        Ok(Brokers::unchecked(nodes))
    }

    /// Each node gets `timeout` to complete TCP, TLS and the AMQP handshake.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Brokers {
        self.connect_timeout = timeout;
        self
    }

    /// Trusts the CA certificate(s) in the PEM file `path` for `amqps://` nodes, on top of
    /// the system roots (lapin's rustls connector always loads those; a private CA is
    /// added to them). Errs, naming the file, when it cannot be read or holds no
    /// certificate: rustls would otherwise skip what it cannot parse without a word.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Brokers, String> {
        let pem = read_ca_file(path)?;
        self.tls = Arc::new(OwnedTLSConfig {
            identity: None,
            cert_chain: Some(pem),
        });
        self.ca_file = Some(path.to_owned());
        Ok(self)
    }

    /// The nodes, in the configured order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The list with passwords hidden, for logs and errors.
    pub fn redacted(&self) -> String {
        self.nodes
            .iter()
            .map(|n| redact_url(&n.url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node indices in the order the next connect tries them.
    pub fn order(&self) -> Vec<usize> {
        rotation(self.start.load(Ordering::Relaxed), self.nodes.len())
    }

    /// The node at `index` was just lost: the next connect starts with the one after it.
    pub fn lost(&self, index: usize) {
        if !self.nodes.is_empty() {
            self.start
                .store((index + 1) % self.nodes.len(), Ordering::Relaxed);
        }
    }

    /// Connects to the first node that answers within the timeout, trying each once in
    /// [`Brokers::order`]; remembers it as the next start. The error lists every node's
    /// reason, passwords hidden.
    pub async fn connect(&self, name: &str) -> Result<(Connection, usize), ConnectError> {
        let mut failures = Vec::new();
        for i in self.order() {
            let node = &self.nodes[i];
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            let attempt = async {
                let runtime = lapin::runtime::default_runtime()?;
                Connection::connect_with_config(&node.url, properties, (*self.tls).clone(), runtime)
                    .await
            };
            let reason = match tokio::time::timeout(self.connect_timeout, attempt).await {
                Ok(Ok(connection)) => {
                    self.start.store(i, Ordering::Relaxed);
                    return Ok((connection, i));
                }
                Ok(Err(error)) => self.explain(node, &error),
                Err(_) => format!("no answer within {:?}", self.connect_timeout),
            };
            failures.push((node.addr.clone(), reason));
        }
        Err(ConnectError { failures })
    }

    /// lapin's error, or for the TLS failures people actually hit, a sentence saying what
    /// to fix instead of rustls's debug rendering.
    fn explain(&self, node: &Node, error: &lapin::Error) -> String {
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        let trusted = match &self.ca_file {
            Some(path) => format!("AMQP_CA_FILE {} or the system roots", path.display()),
            None => "the system roots (set AMQP_CA_FILE for a private CA)".into(),
        };
        if !node.tls {
            // lapin's frame parser chokes on a TLS alert: say what is likely wrong instead
            // of its parser debug dump.
            // (An empty host: the URL itself did not parse, and lapin says so.)
            if chain.contains("failed to parse") && !node.host.is_empty() {
                return "the server did not answer AMQP (a TLS port? use amqps://)".into();
            }
            return redact_secrets(&chain, &node.url);
        }
        // rustls words these as Debug names in some versions and sentences in others.
        let lower = chain.to_ascii_lowercase();
        let says = |words: &[&str]| words.iter().any(|w| lower.contains(w));
        if says(&["unknownissuer", "unknown issuer", "badsignature"]) {
            format!("TLS: the server's certificate is not trusted (not signed by {trusted})")
        } else if says(&["notvalidforname", "not valid for name"]) {
            format!(
                "TLS: the server's certificate is not valid for `{}` (the URL's host must be \
                 one the certificate names)",
                node.host
            )
        } else if says(&["expired", "notvalidyet", "not valid yet"]) {
            "TLS: the server's certificate is expired or not yet valid".into()
        } else if says(&[
            "invalidcontenttype",
            "corruptmessage",
            "invalid content type",
        ]) {
            "TLS: the server did not answer TLS (is this port an amqps:// listener?)".into()
        } else {
            redact_secrets(&chain, &node.url)
        }
    }
}

/// Every node tried and why each failed.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// `(host:port, reason)` in the order tried.
    pub failures: Vec<(String, String)>,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.failures.as_slice() {
            [] => write!(f, "no RabbitMQ node configured"),
            [(addr, reason)] => write!(f, "{addr}: {reason}"),
            all => {
                write!(f, "none of {} nodes answered: ", all.len())?;
                for (i, (addr, reason)) in all.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{addr}: {reason}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<ConnectError> for lapin::Error {
    fn from(e: ConnectError) -> lapin::Error {
        std::io::Error::other(e.to_string()).into()
    }
}

/// `start, start+1, …` modulo `len`: every node once, beginning with `start`.
fn rotation(start: usize, len: usize) -> Vec<usize> {
    if len == 0 {
        return Vec::new();
    }
    (0..len).map(|k| (start % len + k) % len).collect()
}

/// Some lapin messages quote the whole URL, password included.
fn redact_secrets(message: &str, url: &str) -> String {
    if url.is_empty() {
        message.to_owned()
    } else {
        message.replace(url, &redact_url(url))
    }
}

/// One entry: `amqp://` or `amqps://`, parsable by lapin.
fn check_entry(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("an empty entry (two commas, or a trailing one)".into());
    }
    if !(s.starts_with("amqp://") || s.starts_with("amqps://")) {
        return Err(format!(
            "`{}` must start with amqp:// or amqps://",
            redact_url(s)
        ));
    }
    s.parse::<AMQPUri>().map_err(|e| {
        let e = if e.contains(s) { "not a URL".into() } else { e };
        format!("`{}` is not a valid AMQP URL: {e}", redact_url(s))
    })?;
    Ok(())
}

/// Reads a PEM file and checks it holds at least one certificate.
pub fn read_ca_file(path: &Path) -> Result<String, String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not a PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "`{}` holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
            path.display()
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_visits_every_node_once_from_the_start() {
        assert_eq!(rotation(0, 3), [0, 1, 2]);
        assert_eq!(rotation(1, 3), [1, 2, 0]);
        assert_eq!(rotation(2, 3), [2, 0, 1]);
        assert_eq!(rotation(5, 3), [2, 0, 1]);
        assert_eq!(rotation(0, 1), [0]);
        assert!(rotation(0, 0).is_empty());
    }

    #[test]
    fn a_lost_node_moves_the_start_to_the_next_and_clones_share_it() {
        let brokers = Brokers::parse("amqp://a:5672,amqp://b:5673,amqp://c:5674").unwrap();
        let clone = brokers.clone();
        assert_eq!(brokers.order(), [0, 1, 2]);
        brokers.lost(0);
        assert_eq!(clone.order(), [1, 2, 0]);
        brokers.lost(2);
        assert_eq!(clone.order(), [0, 1, 2]);
    }

    #[test]
    fn parses_lists_and_shows_host_port() {
        let b =
            Brokers::parse("amqp://u:p@rmq-0:5672/%2f, amqps://u:p@rmq-1/%2f,amqp://10.0.0.7:5680")
                .unwrap();
        let addrs: Vec<_> = b.nodes().iter().map(Node::addr).collect();
        assert_eq!(addrs, ["rmq-0:5672", "rmq-1:5671", "10.0.0.7:5680"]);
        assert_eq!(
            b.redacted(),
            "amqp://u:***@rmq-0:5672/%2f,amqps://u:***@rmq-1/%2f,amqp://10.0.0.7:5680"
        );
        assert_eq!(Brokers::parse("amqp://h").unwrap().nodes().len(), 1);
    }

    #[test]
    fn a_bad_entry_is_named_by_position_without_its_password() {
        let err = Brokers::parse("amqp://u:secret@a/,http://u:secret@b/").unwrap_err();
        assert!(err.starts_with("entry 2 of 2: `http://u:***@b/`"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = Brokers::parse("amqp://a/,,amqp://b/").unwrap_err();
        assert!(err.starts_with("entry 2 of 3: an empty entry"), "{err}");
        let err = Brokers::parse("amqp://u:secret@a:notaport/").unwrap_err();
        assert!(!err.contains("secret") && !err.contains("entry"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("xb-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_ca_file(&empty).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        let err = read_ca_file(&dir.join("missing.pem")).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_connect_error_lists_every_node() {
        let e = ConnectError {
            failures: vec![
                ("a:1".into(), "refused".into()),
                ("b:2".into(), "no answer within 5s".into()),
            ],
        };
        assert_eq!(
            e.to_string(),
            "none of 2 nodes answered: a:1: refused; b:2: no answer within 5s"
        );
    }
}
