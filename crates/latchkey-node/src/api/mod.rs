//! The HTTP API (docs/API.md): routes, shared state, and the guards every request passes —
//! per-client-address rate limits, a cap on requests at once and a separate pool for long
//! polls (with a cap per address), body limits and timeouts.

mod chain;
mod consents;
mod error;
mod invites;
mod mailbox;
pub mod places;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::Uri;
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

pub(crate) use chain::chain_may_have_changed;
pub use error::ApiError;
pub use invites::EXPIRES_HEADER;
pub use mailbox::TTL_HEADER;
pub use places::Places;

use crate::admission::OwnerIndex;
use crate::config::{Limits, Rate};
use crate::consents::ConsentLogs;
use crate::mailbox::Mailboxes;
use crate::metrics::{self, Metrics};
use crate::registry::Registry;
use crate::store::Store;

type Limiter = DefaultKeyedRateLimiter<IpAddr>;

/// The address a client is counted as: an IPv4 address, or the /64 an IPv6 address is in (one
/// host is usually given a whole /64, so counting single IPv6 addresses would let it be
/// thousands of clients). An IPv4 address mapped into IPv6 counts as itself.
pub fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The client address a request came from, for handlers (set by the guard).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// A mailbox read that may wait: `GET /v1/mailboxes/…` with `wait_secs` above 0. A query that
/// does not parse is no long poll (the handler refuses it).
fn is_long_poll(method: &Method, uri: &Uri) -> bool {
    method == Method::GET
        && uri.path().starts_with("/v1/mailboxes/")
        && uri.query().is_some_and(|q| {
            q.split('&')
                .filter_map(|pair| pair.strip_prefix("wait_secs="))
                .any(|v| v.parse::<u64>().is_ok_and(|secs| secs > 0))
        })
}

/// Per-client-IP rate limiters, one per class of request.
#[derive(Debug, Default)]
pub struct Limiters {
    ops: Option<Limiter>,
    mailbox: Option<Limiter>,
    read: Option<Limiter>,
    invite: Option<Limiter>,
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
            invite: limiter(limits.invite_rate),
        }
    }

    /// Forgets clients whose allowance is full again (keeps memory bounded).
    pub fn forget_idle(&self) {
        for l in [&self.ops, &self.mailbox, &self.read, &self.invite]
            .into_iter()
            .flatten()
        {
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
    pub owner_index: Arc<OwnerIndex>,
    pub consents: Arc<ConsentLogs>,
    /// Places for ordinary requests.
    pub requests: Arc<Places>,
    /// Places for long polls, a pool of their own.
    pub long_polls: Arc<Places>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub limiters: Arc<Limiters>,
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
    let invites = Router::new()
        .route(
            "/v1/invites/{id}",
            get(invites::get_invite).put(invites::put_invite),
        )
        .layer(DefaultBodyLimit::max(limits.max_invite_body))
        .layer(timeout(limits.request_timeout));
    let consent_routes = Router::new()
        .route(
            "/v1/devices/{device}/consents",
            get(consents::get_consents).post(consents::post_consent),
        )
        .route(
            "/v1/devices/{device}/consents/forks",
            get(consents::get_consent_forks),
        )
        .route("/v1/consents/feed", get(consents::get_consent_feed))
        .layer(DefaultBodyLimit::max(limits.max_consent_body))
        .layer(timeout(limits.request_timeout));
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
        .merge(invites)
        .merge(consent_routes)
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

/// Applies the per-address rate limit of the request's class, then takes a place (within its
/// address's cap): a long poll in the long-poll pool, anything else among the ordinary
/// requests. Neither kind can take the other's places, and no request waits for one.
async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| {
            client_address(c.0.ip())
        });
    req.extensions_mut().insert(ClientAddress(address));
    let path = req.uri().path();
    let limiter = if path == "/healthz" {
        None
    } else if req.method() == Method::POST && path.starts_with("/v1/devices/") {
        st.limiters.ops.as_ref()
    } else if req.method() == Method::POST && path.starts_with("/v1/mailboxes/") {
        st.limiters.mailbox.as_ref()
    } else if req.method() == Method::PUT && path.starts_with("/v1/invites/") {
        st.limiters.invite.as_ref()
    } else {
        st.limiters.read.as_ref()
    };
    if let Some(limiter) = limiter {
        if let Err(not_until) = limiter.check_key(&address) {
            metrics::inc(&st.metrics.rate_limited);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests from {address}; retry after {} ms",
                    wait.as_millis()
                ),
            )
            .retry_after(wait.as_secs_f64().ceil() as u64)
            .into_response();
        }
    }
    let long_poll = is_long_poll(req.method(), req.uri());
    let places = if long_poll {
        &st.long_polls
    } else {
        &st.requests
    };
    let _place = match places.enter(address) {
        Ok(place) => place,
        Err(busy) => return busy_answer(&st, address, long_poll, busy),
    };
    next.run(req).await
}

fn busy_answer(st: &AppState, address: IpAddr, long_poll: bool, busy: places::Busy) -> Response {
    let m = &st.metrics;
    let error = match (long_poll, busy) {
        (true, places::Busy::Address) => {
            metrics::inc(&m.long_polls_refused_address);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_long_polls",
                format!(
                    "{address} holds its maximum of {} long polls at once on this node; wait \
                     for one to end, or read without wait_secs",
                    st.long_polls.per_address()
                ),
            )
        }
        (true, places::Busy::Pool) => {
            metrics::inc(&m.long_polls_refused_pool);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "long_polls_full",
                "the node holds its maximum of long polls at once; retry shortly, read without \
                 wait_secs, or ask another node",
            )
        }
        (false, places::Busy::Address) => {
            metrics::inc(&m.too_many_at_once);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_at_once",
                format!(
                    "{address} has its maximum of {} requests in flight on this node; wait for \
                     one to finish",
                    st.requests.per_address()
                ),
            )
        }
        (false, places::Busy::Pool) => {
            metrics::inc(&m.overloaded);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the node is serving its maximum of requests at once; retry shortly or ask \
                 another node",
            )
        }
    };
    error.retry_after(1).into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_as_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_address(a), client_address(b));
        assert_ne!(client_address(a), client_address(other));
        assert_eq!(
            client_address(a),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            client_address(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_address(v4), v4);
    }

    #[test]
    fn only_a_mailbox_read_that_waits_is_a_long_poll() {
        let long = |m: Method, u: &str| is_long_poll(&m, &u.parse().unwrap());
        let mb = format!("/v1/mailboxes/{}", "ab".repeat(32));
        assert!(long(Method::GET, &format!("{mb}?after=3&wait_secs=30")));
        assert!(!long(Method::GET, &format!("{mb}?wait_secs=0")));
        assert!(!long(Method::GET, &mb));
        assert!(!long(Method::GET, &format!("{mb}?wait_secs=soon")));
        assert!(!long(Method::POST, &format!("{mb}?wait_secs=30")));
        assert!(!long(Method::GET, "/v1/feed?wait_secs=30"));
    }
}
