//! The failed-authentication limit (`[limits] auth_failures_per_minute`).
//!
//! Failed authentications with credentials (an unknown, revoked or expired API key or access
//! token, a wrong Basic secret on the token endpoint, a wrong key on the UI's sign-in form)
//! are counted per client address over a rolling minute. Once an address has made more than
//! the limit, its failing attempts are answered `429` with `Retry-After` instead of `401`.
//!
//! Credentials are still checked for a blocked address, so a correct key or token keeps
//! working from every address, including one shared with an attacker (a NAT, a proxy); only
//! the failures change status. What a blocked address sends again is not checked again:
//! the fingerprints of the credentials that failed from it last are remembered, and a
//! repeat (the common case, a client retrying with a wrong key) is answered `429` without
//! touching the database.
//!
//! The state is this process's memory: each server counts on its own, and a restart
//! forgets. It is bounded: at most [`MAX_TRACKED_ADDRESSES`] addresses, each a fixed-size
//! window; when full, addresses without a failure in the last minute are dropped, then the
//! one idle longest. IPv6 addresses count per `/64` (one host usually has a whole `/64`).

use crate::error::{ApiError, AuthFailed};
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

/// Length of the rolling window, seconds (one bucket per second).
const WINDOW_SECS: u64 = 60;
/// Most client addresses tracked at once (a few MB at most).
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;
/// Failed credentials remembered per address, to refuse repeats without a lookup.
const REMEMBERED_FAILURES: usize = 4;

/// SHA-256 of the credentials of a request and where they were sent.
pub type Fingerprint = [u8; 32];

/// Counts failed authentications per client address (see the module documentation).
pub struct AuthFailureLimiter {
    /// Failures per minute allowed; 0: no limit.
    limit: u32,
    epoch: Instant,
    addresses: Mutex<HashMap<IpAddr, Window>>,
}

/// One address's failures in the last minute, in one-second buckets.
struct Window {
    counts: [u32; WINDOW_SECS as usize],
    /// The second (since the limiter's epoch) the buckets were last advanced to.
    second: u64,
    /// The credentials that failed last from this address, oldest first.
    failed: Vec<Fingerprint>,
}

impl Window {
    fn new(now: u64) -> Self {
        Window {
            counts: [0; WINDOW_SECS as usize],
            second: now,
            failed: Vec::new(),
        }
    }

    /// Moves the window to second `now`, forgetting what is older than a minute.
    fn advance(&mut self, now: u64) {
        if now <= self.second {
            return;
        }
        if now - self.second >= WINDOW_SECS {
            self.counts = [0; WINDOW_SECS as usize];
            self.failed.clear();
        } else {
            for s in self.second + 1..=now {
                self.counts[(s % WINDOW_SECS) as usize] = 0;
            }
        }
        self.second = now;
    }

    fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    fn record(&mut self, now: u64, fingerprint: Option<Fingerprint>) {
        let bucket = &mut self.counts[(now % WINDOW_SECS) as usize];
        *bucket = bucket.saturating_add(1);
        if let Some(fp) = fingerprint {
            self.failed.retain(|f| *f != fp);
            if self.failed.len() == REMEMBERED_FAILURES {
                self.failed.remove(0);
            }
            self.failed.push(fp);
        }
    }

    /// Seconds from `now` until fewer than `limit` failures are in the window (the next
    /// failure is then answered 401 again). The window must be advanced to `now`.
    fn retry_after(&self, now: u64, limit: u32) -> u64 {
        let mut remaining = self.total();
        for age in (0..WINDOW_SECS).rev() {
            let Some(second) = now.checked_sub(age) else {
                continue;
            };
            remaining -= u64::from(self.counts[(second % WINDOW_SECS) as usize]);
            if remaining < u64::from(limit) {
                // The bucket of `second` leaves the window at `second + WINDOW_SECS`.
                return WINDOW_SECS - age;
            }
        }
        WINDOW_SECS
    }
}

impl AuthFailureLimiter {
    /// A limiter allowing `limit` failures per minute and address (0: no limit).
    pub fn new(limit: u32) -> Self {
        AuthFailureLimiter {
            limit,
            epoch: Instant::now(),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// Whether failures are limited at all.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// A blocked address sending credentials that already failed from it: records the
    /// failure and returns the `Retry-After` seconds (the caller answers 429 without
    /// checking the credentials). `None`: check them.
    pub fn repeated_failure(&self, ip: IpAddr, fingerprint: &Fingerprint) -> Option<u64> {
        self.repeated_failure_at(address_key(ip), fingerprint, self.now())
    }

    fn repeated_failure_at(&self, key: IpAddr, fingerprint: &Fingerprint, now: u64) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let window = addresses.get_mut(&key)?;
        window.advance(now);
        if window.total() < u64::from(self.limit) || !window.failed.contains(fingerprint) {
            return None;
        }
        window.record(now, Some(*fingerprint));
        Some(window.retry_after(now, self.limit))
    }

    /// Records a failed authentication from `ip`. `Some(seconds)`: the address is over the
    /// limit; answer 429 with that `Retry-After` instead of 401.
    pub fn record_failure(&self, ip: IpAddr, fingerprint: Option<Fingerprint>) -> Option<u64> {
        self.record_failure_at(address_key(ip), fingerprint, self.now())
    }

    fn record_failure_at(
        &self,
        key: IpAddr,
        fingerprint: Option<Fingerprint>,
        now: u64,
    ) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if !addresses.contains_key(&key) && addresses.len() >= MAX_TRACKED_ADDRESSES {
            make_room(&mut addresses, now);
        }
        let window = addresses.entry(key).or_insert_with(|| Window::new(now));
        window.advance(now);
        window.record(now, fingerprint);
        (window.total() > u64::from(self.limit)).then(|| window.retry_after(now, self.limit))
    }

    /// Addresses tracked now (for tests).
    pub fn tracked(&self) -> usize {
        self.addresses.lock().map(|a| a.len()).unwrap_or_default()
    }
}

/// Drops addresses without a failure in the last minute; if none, the one idle longest.
fn make_room(addresses: &mut HashMap<IpAddr, Window>, now: u64) {
    addresses.retain(|_, w| {
        now.saturating_sub(w.second) < WINDOW_SECS && {
            w.advance(now);
            w.total() > 0
        }
    });
    if addresses.len() >= MAX_TRACKED_ADDRESSES {
        if let Some(stalest) = addresses
            .iter()
            .min_by_key(|(_, w)| w.second)
            .map(|(k, _)| *k)
        {
            addresses.remove(&stalest);
        }
    }
}

/// The address failures are counted under: IPv4 addresses as they are (also when mapped
/// into IPv6), IPv6 addresses by their `/64`.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The credentials a request carries (API key header, `Authorization`, `api_key` /
/// `access_token` query parameters) and the path they were sent to, hashed; `None` when it
/// carries none. The same credentials sent to the same path always get the same answer.
pub fn fingerprint(path: &str, headers: &HeaderMap, query: Option<&str>) -> Option<Fingerprint> {
    let mut parts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for name in [crate::auth::API_KEY_HEADER, AUTHORIZATION.as_str()] {
        for value in headers.get_all(name) {
            parts.push((name.into(), value.as_bytes().into()));
        }
    }
    if let Some(q) = query.filter(|q| q.contains("api_key") || q.contains("access_token")) {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == "api_key" || k == "access_token" {
                parts.push((k.as_bytes().into(), v.as_bytes().into()));
            }
        }
    }
    fingerprint_of(
        path,
        parts.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
}

/// The fingerprint of credentials given as `(name, value)` pairs sent to `path`; `None`
/// without any.
pub fn fingerprint_of<'a>(
    path: &str,
    parts: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<Fingerprint> {
    let mut hash = Sha256::new();
    let mut any = false;
    for (name, value) in parts {
        any = true;
        for bytes in [name, value] {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
    }
    any.then(|| {
        hash.update(path.as_bytes());
        hash.finalize().into()
    })
}

/// The client's IP address (`None` when the server was not started with connection info,
/// e.g. a router driven directly in a test).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Middleware over the API routes: counts the `401`s of wrong credentials per client address
/// and turns them into `429` past the limit; refuses a blocked address's repeats of
/// credentials that already failed without running the handler.
pub async fn limit_auth_failures(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limiter = &state.auth_failures;
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let Some(ip) = ip.filter(|_| limiter.enabled()) else {
        return next.run(request).await;
    };
    let fp = fingerprint(
        request.uri().path(),
        request.headers(),
        request.uri().query(),
    );
    if let Some(retry_after_secs) = fp.as_ref().and_then(|fp| limiter.repeated_failure(ip, fp)) {
        return too_many(limiter, retry_after_secs);
    }
    let response = next.run(request).await;
    if response.extensions().get::<AuthFailed>().is_none() {
        return response;
    }
    match limiter.record_failure(ip, fp) {
        Some(retry_after_secs) => {
            tracing::warn!(%ip, retry_after_secs, "failed authentication over the limit of the address");
            too_many(limiter, retry_after_secs)
        }
        None => response,
    }
}

fn too_many(limiter: &AuthFailureLimiter, retry_after_secs: u64) -> Response {
    ApiError::TooManyAuthFailures {
        retry_after_secs,
        limit: limiter.limit,
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn past_the_limit_failures_are_refused_until_the_minute_has_room() {
        let l = AuthFailureLimiter::new(3);
        for _ in 0..3 {
            assert_eq!(l.record_failure_at(A, None, 100), None);
        }
        assert_eq!(l.record_failure_at(A, None, 100), Some(60));
        assert_eq!(l.record_failure_at(B, None, 100), None, "per address");
        // 20 s later all four are still in the window; room again once they leave, at 160.
        assert_eq!(l.record_failure_at(A, None, 120), Some(40));
        // At 160 only the failure of second 120 is left.
        assert_eq!(l.record_failure_at(A, None, 160), None);
        assert_eq!(l.record_failure_at(A, None, 160), None);
        // 120, 160, 160, 160: when 120 leaves, three are left, so room again at 220.
        assert_eq!(l.record_failure_at(A, None, 160), Some(60));
    }

    #[test]
    fn retry_after_is_when_the_oldest_needed_failures_leave() {
        let l = AuthFailureLimiter::new(2);
        assert_eq!(l.record_failure_at(A, None, 0), None);
        assert_eq!(l.record_failure_at(A, None, 10), None);
        // 0, 10, 30: at 60 only 10 and 30 remain (2, not below the limit); at 70, one.
        assert_eq!(l.record_failure_at(A, None, 30), Some(40));
        // A long pause forgets everything.
        assert_eq!(l.record_failure_at(A, None, 1000), None);
    }

    #[test]
    fn zero_disables() {
        let l = AuthFailureLimiter::new(0);
        for _ in 0..1000 {
            assert_eq!(l.record_failure_at(A, None, 5), None);
        }
        assert_eq!(l.tracked(), 0);
        assert_eq!(l.repeated_failure_at(A, &[0; 32], 5), None);
    }

    #[test]
    fn repeats_of_failed_credentials_are_refused_only_once_blocked() {
        let l = AuthFailureLimiter::new(2);
        let bad = [1; 32];
        let other = [2; 32];
        assert_eq!(l.repeated_failure_at(A, &bad, 0), None, "unknown address");
        assert_eq!(l.record_failure_at(A, Some(bad), 0), None);
        assert_eq!(l.repeated_failure_at(A, &bad, 0), None, "not blocked yet");
        assert_eq!(l.record_failure_at(A, Some(bad), 0), None);
        assert_eq!(l.repeated_failure_at(A, &bad, 1), Some(59));
        assert_eq!(
            l.repeated_failure_at(A, &other, 1),
            None,
            "other credentials are checked"
        );
        assert_eq!(l.repeated_failure_at(B, &bad, 1), None, "other address");
        // A minute without failures forgets the address's failed credentials.
        assert_eq!(l.record_failure_at(A, None, 200), None);
        assert_eq!(l.repeated_failure_at(A, &bad, 200), None);
    }

    #[test]
    fn memory_is_bounded() {
        let l = AuthFailureLimiter::new(5);
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 500) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.record_failure_at(ip, Some([7; 32]), u64::from(i) / 1000);
        }
        assert!(l.tracked() <= MAX_TRACKED_ADDRESSES);
        // A minute later, the addresses without a failure in the window make room.
        for i in 0..10 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            l.record_failure_at(ip, None, 10_000);
        }
        assert_eq!(l.tracked(), 10);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), A);
    }

    #[test]
    fn fingerprints_cover_credentials_and_path() {
        let mut h = HeaderMap::new();
        assert_eq!(fingerprint("/v0/evi/chats", &h, None), None);
        assert_eq!(fingerprint("/v0/evi/chats", &h, Some("page_size=1")), None);
        h.insert("x-hume-api-key", "k1".parse().unwrap());
        let one = fingerprint("/v0/evi/chats", &h, None).unwrap();
        assert_eq!(fingerprint("/v0/evi/chats", &h, None), Some(one));
        assert_ne!(fingerprint("/oauth2-cc/token", &h, None), Some(one));
        h.insert("x-hume-api-key", "k2".parse().unwrap());
        assert_ne!(fingerprint("/v0/evi/chats", &h, None), Some(one));
        let q = fingerprint("/v0/evi/chat", &HeaderMap::new(), Some("api_key=k1")).unwrap();
        let t = fingerprint("/v0/evi/chat", &HeaderMap::new(), Some("access_token=k1")).unwrap();
        assert_ne!(q, t);
    }
}
