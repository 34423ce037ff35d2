//! `xsolla-sim`: plays Xsolla against a webhook endpoint, and a game against `order-status`.
//! `send` delivers one signed webhook (optionally with Xsolla's re-send schedule); `load`
//! measures throughput and latency; `jwt` mints a player token; `watch` tracks orders over
//! the Centrifuge WebSocket like a game client. The work is in `tests::sim`; this file is
//! options and printing.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use shared::config::parse_duration;
use tests::sim::{
    self, Answer, Delivery, Kind, LoadPlan, Mode, Outcome, Overrides, Policy, Sender, Template,
    Verdict,
    jwt::{PlayerClaims, mint_hs256},
    schedule,
    watch::{Source, TokenPlacement, WatchEnd, WatchEvent, WatchOptions},
};
use tokio::time::Instant;

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_GAVE_UP: u8 = 3;

/// Sends correctly signed Xsolla webhooks to your endpoint, the way Xsolla sends them, and
/// follows orders on `order-status` the way a game client does.
///
/// Bodies are Xsolla's published examples with the user, item, order id and delivery
/// mode you choose, signed as `Authorization: Signature sha1(body ‖ secret)`.
///
/// Exit status of send/load: 0 acknowledged (200/201/204; any 2xx for payment, refund and
/// user_validation), 1 refused with a 4xx Xsolla does not retry, 2 bad usage, 3 never
/// acknowledged (5xx, other codes, no answer, after the retries if --retry).
/// Of watch: 0 final status (or the server's 4500 "tracking finished"), 1 refused (connect
/// error or a 35xx close), 2 bad usage, 3 ended without a final status (4501, other
/// closes, --for elapsed).
#[derive(Parser, Debug)]
#[command(name = "xsolla-sim", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where webhooks go and how they are signed (send, load).
#[derive(Args, Debug)]
struct Target {
    /// Webhook URL to send to.
    #[arg(
        long,
        env = "XSOLLA_SIM_URL",
        default_value = "http://127.0.0.1:8080/webhooks/xsolla"
    )]
    url: String,

    /// Project secret key the webhooks are signed with (Publisher Account → Project
    /// settings → Webhooks). A comma-separated list signs with the first.
    #[arg(long, env = "XSOLLA_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,

    /// Longest wait for one answer; past it the attempt counts as no answer.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
}

const EXAMPLES: &str = "\
Examples:
  export XSOLLA_WEBHOOK_SECRET=my-secret
  xsolla-sim send order_paid --user player-1 --sku sword --quantity 2 --order-id 1001
  xsolla-sim send order_canceled --order-id 1001 --mode separate
  xsolla-sim send order_paid --retry --time-scale 0.001   # 5 min waits become 300 ms
  xsolla-sim send payment --print-body --dry-run          # show the body and header only
  xsolla-sim load --rate 200 --duration 30s --concurrency 32
  xsolla-sim load --concurrency 64 --duration 10s --json  # as fast as answers come

  export STATUS_JWT_HS256_SECRET=my-status-secret           # order-status's HS256 key
  xsolla-sim jwt --user player-1 --ttl 10m                  # a player token, as the game backend signs it
  curl -H \"Authorization: Bearer $(xsolla-sim jwt --user player-1)\" \\
       http://127.0.0.1:8081/api/v2/project/42/order/1001
  xsolla-sim watch --project 42 --user player-1 --order 1001   # paid … done, with timestamps";

#[derive(Subcommand, Debug)]
enum Command {
    /// Send one webhook and show every attempt and how the delivery ended.
    Send(SendArgs),
    /// Send many webhooks with distinct ids; report throughput and latency percentiles.
    Load(LoadArgs),
    /// Print a player JWT for order-status (HS256; `sub` = the user, `exp` = now + --ttl).
    Jwt(JwtArgs),
    /// Follow a player's orders on order-status's WebSocket like a game client: history
    /// since offset 0, then live changes, one timestamped line per status.
    Watch(WatchArgs),
}

/// How a player token is signed (jwt, watch).
#[derive(Args, Debug)]
struct Signing {
    /// HS256 secret of order-status (its STATUS_JWT_HS256_SECRET); a comma-separated list
    /// signs with the first.
    #[arg(long, env = "STATUS_JWT_HS256_SECRET", hide_env_values = true)]
    secret: Option<String>,

    /// How long the token is valid.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    ttl: Duration,

    /// Claim that carries the user id (order-status's STATUS_JWT_USER_CLAIM).
    #[arg(long, env = "STATUS_JWT_USER_CLAIM", default_value = "sub")]
    user_claim: String,

    /// `iss` claim (when order-status checks STATUS_JWT_ISSUER).
    #[arg(long, env = "STATUS_JWT_ISSUER")]
    issuer: Option<String>,

    /// `aud` claim (when order-status checks STATUS_JWT_AUDIENCE).
    #[arg(long, env = "STATUS_JWT_AUDIENCE")]
    audience: Option<String>,
}

#[derive(Args, Debug)]
struct JwtArgs {
    /// The player: the `user.external_id` Xsolla sends in the webhooks.
    #[arg(long)]
    user: String,

    #[command(flatten)]
    signing: Signing,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// order-status's WebSocket endpoint.
    #[arg(
        long,
        env = "XSOLLA_SIM_WATCH_URL",
        default_value = "ws://127.0.0.1:8081/connection/websocket"
    )]
    url: String,

    /// Xsolla project id (`data.project_id`).
    #[arg(long)]
    project: i64,

    /// The player (`data.user_external_id`; the token's user is what counts).
    #[arg(long)]
    user: String,

    /// Stop at this order's final status (done or canceled); without it, watch until the
    /// server closes the connection or --for passes.
    #[arg(long)]
    order: Option<i64>,

    /// The player's JWT; without it one is minted for --user with --secret.
    #[arg(long, env = "AUTH_JWT", hide_env_values = true)]
    token: Option<String>,

    /// Where the token goes: `data` (data.auth, as Xsolla's clients) or `token`
    /// (connect.token, as a Centrifugo client).
    #[arg(long, value_enum, default_value_t = TokenPlacement::Data)]
    send_token_as: TokenPlacement,

    /// Give up after this long.
    #[arg(long = "for", default_value = "10m", value_parser = parse_duration)]
    max_time: Duration,

    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    signing: Signing,
}

/// Shared by `send` and `load`.
#[derive(Args, Debug)]
struct Delivering {
    /// Delivery mode of order_paid/order_canceled: `combined` (payment data under
    /// `billing`, accounts since 2025-01-22) or `separate` (no `billing`).
    #[arg(long, value_enum, default_value_t = Mode::Combined)]
    mode: Mode,

    /// Behave like Xsolla on failure: re-send on 5xx, other codes or no answer. Orders:
    /// 2 × 5 min, 7 × 15 min, 10 × 60 min (20 sends); payment/refund: the same waits
    /// cut at 12 retries; user_validation: never re-sent.
    #[arg(long)]
    retry: bool,

    /// Multiply every retry wait by this (0.001 turns 5 min into 300 ms).
    #[arg(long, env = "XSOLLA_SIM_TIME_SCALE", default_value_t = 1.0, value_parser = parse_scale)]
    time_scale: f64,

    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SendArgs {
    /// Which webhook.
    #[arg(value_enum)]
    r#type: Kind,

    /// User id: `user.external_id` in orders, `user.id` otherwise.
    #[arg(long)]
    user: Option<String>,

    /// Item SKU; with --sku or --quantity the webhook carries exactly that one item.
    #[arg(long)]
    sku: Option<String>,

    /// Item quantity (at least 1).
    #[arg(long)]
    quantity: Option<u64>,

    /// Order id (`order.id`); for payment/refund the transaction id.
    #[arg(long)]
    order_id: Option<u64>,

    #[command(flatten)]
    delivering: Delivering,

    #[command(flatten)]
    target: Target,

    /// Print the body and its Authorization header before sending.
    #[arg(long)]
    print_body: bool,

    /// Build and sign only; send nothing (implies --print-body).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Which webhook, each with its own id (`<run id> × 10⁹ + n`).
    #[arg(long = "type", value_enum, default_value_t = Kind::OrderPaid)]
    kind: Kind,

    /// Webhooks started per second (open loop). Without it: closed loop, each of
    /// --concurrency senders sends its next webhook as soon as the last is settled.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,

    /// How long to start new webhooks; the run then waits for those in flight.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// Requests in flight at most (also the keep-alive pool's size).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,

    /// Id prefix of this run (six digits); random by default.
    #[arg(long, value_parser = clap::value_parser!(u64).range(100_000..1_000_000))]
    run_id: Option<u64>,

    #[command(flatten)]
    delivering: Delivering,

    #[command(flatten)]
    target: Target,
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err(format!("`{s}` is not a factor ≥ 0 like 1, 0.01 or 0.001")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("`{s}` is not a rate > 0 (webhooks per second)")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Send(args) => match webhook_secret(&args.target) {
            Some(secret) => send(&args.target, args, secret).await,
            None => return missing_webhook_secret(),
        },
        Command::Load(args) => match webhook_secret(&args.target) {
            Some(secret) => load(&args.target, args, secret).await,
            None => return missing_webhook_secret(),
        },
        Command::Jwt(args) => jwt(args),
        Command::Watch(args) => watch(args).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("xsolla-sim: {e:#}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn webhook_secret(target: &Target) -> Option<&str> {
    first_secret(target.secret.as_deref())
}

/// The first of a comma-separated list, if not empty.
fn first_secret(list: Option<&str>) -> Option<&str> {
    list.and_then(|s| s.split(',').next())
        .filter(|s| !s.is_empty())
}

fn missing_webhook_secret() -> ExitCode {
    eprintln!("xsolla-sim: set the project secret with --secret or XSOLLA_WEBHOOK_SECRET");
    ExitCode::from(EXIT_USAGE)
}

/// A token for `user` signed as `signing` says.
fn mint(user: &str, signing: &Signing) -> anyhow::Result<String> {
    let Some(secret) = first_secret(signing.secret.as_deref()) else {
        anyhow::bail!("set order-status's HS256 secret with --secret or STATUS_JWT_HS256_SECRET");
    };
    let mut claims = PlayerClaims::new(user, signing.ttl);
    claims.user_claim = signing.user_claim.clone();
    claims.issuer = signing.issuer.clone();
    claims.audience = signing.audience.clone();
    mint_hs256(secret, &claims)
}

fn jwt(args: &JwtArgs) -> anyhow::Result<ExitCode> {
    println!("{}", mint(&args.user, &args.signing)?);
    Ok(ExitCode::SUCCESS)
}

async fn watch(args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token {
        Some(token) if !token.is_empty() => token.clone(),
        _ => mint(&args.user, &args.signing)?,
    };
    let options = WatchOptions {
        url: args.url.clone(),
        project_id: args.project,
        user: args.user.clone(),
        token,
        placement: args.send_token_as,
        order: args.order,
        max_time: args.max_time,
    };
    let json = args.json;
    let end = sim::watch::watch(&options, |event| print_watch_event(event, json)).await?;
    let at = timestamp();
    if json {
        let mut line = serde_json::to_value(&end)?;
        line["at"] = at.into();
        println!("{line}");
    } else {
        let text = match &end {
            WatchEnd::Final { order_id, status } => {
                format!("final      order {order_id}  {status}")
            }
            WatchEnd::Refused { code, message } => format!("refused    {code} {message}"),
            WatchEnd::Closed {
                code: Some(code),
                reason,
            } => format!("closed     {code} {reason}"),
            WatchEnd::Closed { code: None, reason } => format!("closed     {reason}"),
            WatchEnd::Deadline => format!(
                "gave up    after {}",
                humantime::format_duration(args.max_time)
            ),
        };
        println!("{at}  {text}");
    }
    Ok(match end {
        WatchEnd::Final { .. }
        | WatchEnd::Closed {
            code: Some(4500), ..
        } => ExitCode::SUCCESS,
        WatchEnd::Refused { .. } => ExitCode::from(EXIT_REFUSED),
        WatchEnd::Closed {
            code: Some(3500..=3999),
            ..
        } => ExitCode::from(EXIT_REFUSED),
        WatchEnd::Closed { .. } | WatchEnd::Deadline => ExitCode::from(EXIT_GAVE_UP),
    })
}

fn print_watch_event(event: &WatchEvent, json: bool) {
    let at = timestamp();
    if json {
        let mut line = serde_json::to_value(event).unwrap_or_default();
        line["at"] = at.into();
        println!("{line}");
        return;
    }
    match event {
        WatchEvent::Connected { client, channels } => {
            println!(
                "{at}  connected  client {client}  channels {}",
                channels.join(",")
            );
        }
        WatchEvent::Status {
            source,
            order_id,
            status,
            offset,
            ..
        } => {
            let source = match source {
                Source::History => "history",
                Source::Live => "live",
            };
            let offset = offset
                .map(|o| format!("  (offset {o})"))
                .unwrap_or_default();
            println!("{at}  {source:<9}  order {order_id}  {status}{offset}");
        }
        WatchEvent::HistoryError { code, message } => {
            println!("{at}  history error {code} {message}");
        }
    }
}

/// Now, RFC 3339 UTC with milliseconds (fixed width, so lines align).
fn timestamp() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

async fn send(cli: &Target, args: &SendArgs, secret: &str) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        user: args.user.clone(),
        sku: args.sku.clone(),
        quantity: args.quantity,
        order_id: args.order_id,
        mode: args.delivering.mode,
    };
    let webhook = sim::build(args.r#type, &overrides, secret)?;
    if args.print_body || args.dry_run {
        println!("Authorization: {}", webhook.authorization);
        println!("{}", String::from_utf8_lossy(&webhook.body));
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let policy = policy(&args.delivering);
    let sender = Sender::new(&cli.url, policy, 1, cli.timeout)?;
    if !args.delivering.json {
        let id = match webhook.kind {
            Kind::UserValidation => format!("user {}", webhook.id),
            Kind::Payment | Kind::Refund => format!("transaction {}", webhook.id),
            _ => format!("order {} ({:?} mode)", webhook.id, overrides.mode).to_lowercase(),
        };
        println!("POST {} · {} · {id}", cli.url, webhook.kind);
    }
    let delays = if policy.retry {
        schedule::retry_delays(webhook.kind)
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let mut n = 0usize;
    // Each answer's body (what tells one 400 from another), in attempt order.
    let bodies = std::cell::RefCell::new(Vec::new());
    let delivery = sim::send::deliver_with(webhook.kind, policy, started, || {
        n += 1;
        let (attempt, sender, webhook, delays) = (n, &sender, &webhook, &delays);
        let (quiet, bodies) = (args.delivering.json, &bodies);
        async move {
            let sent = Instant::now();
            let (answer, body) = sender.attempt_with_body(webhook).await;
            if !quiet {
                let next = next_step(
                    webhook.kind,
                    &answer,
                    delays.get(attempt - 1).copied(),
                    policy,
                );
                println!(
                    "  #{attempt:<2} +{:>9.1} ms  {answer}  ({:.1} ms){next}",
                    (sent - started).as_secs_f64() * 1000.0,
                    sent.elapsed().as_secs_f64() * 1000.0,
                );
                if !body.is_empty() {
                    println!("       {body}");
                }
            }
            bodies.borrow_mut().push(body);
            answer
        }
    })
    .await;
    if args.delivering.json {
        let mut delivery_json = serde_json::to_value(&delivery)?;
        if let Some(attempts) = delivery_json["attempts"].as_array_mut() {
            for (attempt, body) in attempts.iter_mut().zip(bodies.into_inner()) {
                attempt["body"] = body.into();
            }
        }
        let report = serde_json::json!({
            "url": cli.url, "notification_type": webhook.kind.as_str(), "id": webhook.id,
            "acknowledged": delivery.acknowledged(), "final_status": delivery.final_status(),
            "delivery": delivery_json,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", summary(&delivery));
    }
    Ok(exit_code(delivery.outcome))
}

/// What Xsolla does next, after `answer`.
fn next_step(kind: Kind, answer: &Answer, wait: Option<Duration>, policy: Policy) -> String {
    match (sim::classify(kind, answer.status()), wait) {
        (Verdict::Acknowledged, _) => String::new(),
        (Verdict::Refused, _) => "  → no-retry code: Xsolla stops".into(),
        (Verdict::Retry, Some(wait)) => format!(
            "  → re-send in {}{}",
            humantime::format_duration(wait),
            if policy.time_scale == 1.0 {
                String::new()
            } else {
                format!(
                    " × {} = {:.1?}",
                    policy.time_scale,
                    schedule::scaled(wait, policy.time_scale)
                )
            }
        ),
        (Verdict::Retry, None) if policy.retry => "  → schedule exhausted".into(),
        (Verdict::Retry, None) => "  → Xsolla would re-send (use --retry)".into(),
    }
}

fn summary(d: &Delivery) -> String {
    let n = d.attempts.len();
    let sends = if n == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{n} attempts")
    };
    match d.outcome {
        Outcome::Acknowledged => format!(
            "acknowledged after {sends} ({:.1} ms from the first send)",
            d.ack_latency.unwrap_or_default().as_secs_f64() * 1000.0
        ),
        Outcome::Refused => format!("refused after {sends}: Xsolla does not retry this code"),
        Outcome::GaveUp => format!("not acknowledged after {sends}"),
    }
}

fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Acknowledged => ExitCode::SUCCESS,
        Outcome::Refused => ExitCode::from(EXIT_REFUSED),
        Outcome::GaveUp => ExitCode::from(EXIT_GAVE_UP),
    }
}

fn policy(d: &Delivering) -> Policy {
    Policy {
        retry: d.retry,
        time_scale: d.time_scale,
    }
}

async fn load(cli: &Target, args: &LoadArgs, secret: &str) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        mode: args.delivering.mode,
        ..Default::default()
    };
    let template = Template::new(args.kind, &overrides)?;
    let policy = policy(&args.delivering);
    let concurrency = args.concurrency as usize;
    let sender = Sender::new(&cli.url, policy, concurrency, cli.timeout)?;
    let plan = LoadPlan {
        rate: args.rate,
        duration: args.duration,
        concurrency,
        run_id: args.run_id.unwrap_or_else(sim::new_run_id),
    };
    if policy.retry && policy.time_scale >= 0.1 {
        eprintln!(
            "xsolla-sim: note: --retry follows Xsolla's schedule × {} (up to {} per webhook); the run waits for every webhook to settle",
            policy.time_scale,
            humantime::format_duration(schedule::scaled(
                schedule::retry_delays(args.kind).iter().sum(),
                policy.time_scale
            ))
        );
    }
    let report = sim::load::run(&sender, &template, secret, &plan).await;
    if args.delivering.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.refused > 0 {
        ExitCode::from(EXIT_REFUSED)
    } else if report.gave_up > 0 {
        ExitCode::from(EXIT_GAVE_UP)
    } else {
        ExitCode::SUCCESS
    })
}
