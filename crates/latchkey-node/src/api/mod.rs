//! The HTTP API (docs/API.md): routes, shared state, and the guards every request passes —
//! a cap on requests at once, per-client-IP rate limits, body limits and timeouts.

mod chain;
mod error;
mod mailbox;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{watch, Semaphore};
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;
pub use mailbox::TTL_HEADER;

use crate::config::{Limits, Rate};
use crate::mailbox::Mailboxes;
use crate::metrics::{self, Metrics};
use crate::registry::Registry;
use crate::store::Store;

type Limiter = DefaultKeyedRateLimiter<IpAddr>;

/// Per-client-IP rate limiters, one per class of request.
#[derive(Debug, Default)]
pub struct Limiters {
    ops: Option<Limiter>,
    mailbox: Option<Limiter>,
    read: Option<Limiter>,
}

fn limiter(rate: Option<Rate>) -> Option<Limiter> {
    let rate = rate?;
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.max(rate.per_second)).unwrap_or(per_second);
    Some(RateLimiter::keyed(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

impl Limiters {
    pub fn new(limits: &Limits) -> Self {
        Limiters {
            ops: limiter(limits.ops_rate),
            mailbox: limiter(limits.mailbox_rate),
            read: limiter(limits.read_rate),
        }
    }

    /// Forgets clients whose allowance is full again (keeps memory bounded).
    pub fn forget_idle(&self) {
        for l in [&self.ops, &self.mailbox, &self.read].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub mailboxes: Arc<Mailboxes>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub limiters: Arc<Limiters>,
    pub permits: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
}

/// The node's routes with every guard in place.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let timeout = |d| TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, d);
    let mailboxes = Router::new()
        .route(
            "/v1/mailboxes/{mailbox}",
            get(mailbox::get_messages).post(mailbox::post_message),
        )
        .layer(DefaultBodyLimit::max(limits.max_mailbox_body))
        .layer(timeout(limits.request_timeout + limits.mailbox_max_wait));
    let rest = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route(
            "/v1/devices/{device}/ops",
            get(chain::get_ops).post(chain::post_ops),
        )
        .route("/v1/devices/{device}/head", get(chain::get_head))
        .route("/v1/devices/{device}/forks", get(chain::get_forks))
        .route("/v1/feed", get(chain::get_feed))
        .layer(DefaultBodyLimit::max(limits.max_ops_body))
        .layer(timeout(limits.request_timeout));
    Router::new()
        .merge(mailboxes)
        .merge(rest)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(timeout_as_json))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics_text(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/API.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see docs/API.md",
    )
}

/// Reads a query string, refusing a malformed one with `invalid_query`.
fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid_query(format!("{}; see docs/API.md", e.body_text())))
}

/// Caps requests in flight, then applies the per-IP rate limit of the request's class.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Ok(_permit) = st.permits.clone().try_acquire_owned() else {
        metrics::inc(&st.metrics.overloaded);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the node is serving its maximum of requests at once; retry shortly or ask another node",
        )
        .retry_after(1)
        .into_response();
    };
    let path = req.uri().path();
    let limiter = if path == "/healthz" {
        None
    } else if req.method() == Method::POST && path.starts_with("/v1/devices/") {
        st.limiters.ops.as_ref()
    } else if req.method() == Method::POST && path.starts_with("/v1/mailboxes/") {
        st.limiters.mailbox.as_ref()
    } else {
        st.limiters.read.as_ref()
    };
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let (Some(limiter), Some(ip)) = (limiter, ip) {
        if let Err(not_until) = limiter.check_key(&ip) {
            metrics::inc(&st.metrics.rate_limited);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests from {ip}; retry after {} ms",
                    wait.as_millis()
                ),
            )
            .retry_after(wait.as_secs_f64().ceil() as u64)
            .into_response();
        }
    }
    next.run(req).await
}

/// Gives the timeout layer's bare 408 the API's error shape.
async fn timeout_as_json(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status() == StatusCode::REQUEST_TIMEOUT {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took longer than the node allows; retry, or send less at once",
        )
        .into_response();
    }
    resp
}
