//! `ingress`: see the crate docs and the README.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ingress::run_main().await
}
