//! `order-status`: see `ingress::status` and the README.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ingress::status::run_main().await
}
