//! `order-status`: see `ingress::status` and the README.

// mimalloc, as the ingress and the worker: a profile of the boot-time catch-up (a JSON tree
// per event, the view's small strings) spent 44 % of its samples in glibc's malloc/free
// (BENCHMARKS.md, "Order status and the event stream").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ingress::status::run_main().await
}
