//! RabbitMQ isolation helpers (filled in by its own work item).
