//! `ingress`: see the crate docs and the README.

// mimalloc: the edge allocates and frees small buffers per request (headers, body, JSON
// fields); glibc's malloc/free took ~27% of the ingress's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ingress::run_main().await
}
