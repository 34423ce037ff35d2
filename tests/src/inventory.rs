//! Demo inventory service (filled in by its own work item).
