//! Which result files this process may download, and downloading them.
//!
//! A result URL comes from KIE's reply, which we do not control: followed
//! blindly, it could make a worker fetch its cloud's metadata service
//! (`169.254.169.254`), a database on the private network, or a file larger
//! than the pod's memory. [`EgressPolicy`] decides what may be fetched:
//!
//! - **Scheme**: `https` only ([`EgressPolicy::allow_http`] is for the
//!   loopback fakes of tests and the demo).
//! - **Host**: on the allow-list of KIE's file hosts; an entry allows the
//!   host itself and its subdomains ([`DEFAULT_RESULT_HOSTS`]).
//! - **Address**: every address the host resolves to is checked in the
//!   client's DNS resolver, not in the URL string, so a name that resolves
//!   (or later re-resolves) to a forbidden address is never connected to:
//!   loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local
//!   (169.254/16, fe80::/10, cloud metadata included), CGNAT (100.64/10),
//!   unspecified, multicast and reserved ranges, IPv4 inside IPv6 included.
//!   Loopback is allowed only with [`EgressPolicy::allow_loopback`], off by
//!   default. An IP literal in a URL skips DNS, so [`EgressPolicy::check_url`]
//!   checks it there.
//! - **Redirects**: every hop is checked again (scheme, host, IP literal; its
//!   addresses in the resolver), at most [`MAX_REDIRECTS`] of them.
//!
//! [`fetch_to_file`] streams an allowed file into a temporary file with a size
//! cap enforced while streaming, so memory stays flat whatever the file's
//! size; the file is removed when the returned [`Fetched`] is dropped.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::io::AsyncWriteExt as _;
use tracing::Instrument as _;

/// KIE's file hosts (results, covers, uploads), each with its subdomains:
/// results come from `tempfile.aiquickdraw.com` and `file.aiquickdraw.com`,
/// uploads from `tempfile.redpandaai.co`, music from `*.kie.ai`.
pub const DEFAULT_RESULT_HOSTS: &[&str] = &["aiquickdraw.com", "redpandaai.co", "kie.ai"];

/// Most redirects followed for one download.
pub const MAX_REDIRECTS: usize = 5;

/// Why an address may not be connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// 127/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// A cloud metadata service (169.254.169.254, 169.254.170.2,
    /// 100.100.100.200, fd00:ec2::254).
    Metadata,
    /// 100.64/10 (carrier-grade NAT).
    Cgnat,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224/4, ff00::/8, 255.255.255.255.
    Multicast,
    /// Reserved, documentation and benchmarking ranges.
    Reserved,
}

impl AddressClass {
    /// A short label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::Metadata => "metadata",
            Self::Cgnat => "cgnat",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a non-public address; `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let o = ip.octets();
    if [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(169, 254, 170, 2),
        Ipv4Addr::new(100, 100, 100, 200),
    ]
    .contains(&ip)
    {
        return Some(AddressClass::Metadata);
    }
    Some(match o {
        [0, ..] => AddressClass::Unspecified,
        [127, ..] => AddressClass::Loopback,
        [10, ..] => AddressClass::Private,
        [172, b, ..] if (16..32).contains(&b) => AddressClass::Private,
        [192, 168, ..] => AddressClass::Private,
        [169, 254, ..] => AddressClass::LinkLocal,
        [100, b, ..] if (64..128).contains(&b) => AddressClass::Cgnat,
        [224..=239, ..] => AddressClass::Multicast,
        [255, 255, 255, 255] => AddressClass::Multicast,
        [240..=255, ..] => AddressClass::Reserved,
        [192, 0, 0 | 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => AddressClass::Reserved,
        [198, 18 | 19, ..] => AddressClass::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let s = ip.segments();
    // IPv4 carried in IPv6 (mapped, compatible, NAT64, 6to4) is judged by
    // its IPv4 address: `::ffff:169.254.169.254` is the metadata service.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return classify_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    if s[0] == 0x2002 {
        return classify_v4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(AddressClass::Metadata);
    }
    Some(match s[0] {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_loopback() => AddressClass::Loopback,
        x if x & 0xfe00 == 0xfc00 => AddressClass::Private,
        x if x & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        // Site-local, deprecated but still routed by some stacks.
        x if x & 0xffc0 == 0xfec0 => AddressClass::Private,
        x if x & 0xff00 == 0xff00 => AddressClass::Multicast,
        0x2001 if s[1] == 0xdb8 => AddressClass::Reserved,
        _ => return None,
    })
}

/// Why a URL, a redirect or a download was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not `https` (or not `http` either when plain HTTP is allowed).
    #[error("scheme {0:?} is not allowed")]
    Scheme(String),
    /// The host is not on the allow-list (or the URL has none).
    #[error("host {0:?} is not an allowed result host")]
    Host(String),
    /// The host is, or resolves to, an address that may not be reached.
    #[error("{host} is {addr}, a {class} address")]
    Address {
        /// The host as the URL names it.
        host: String,
        /// The forbidden address.
        addr: IpAddr,
        /// Why it is forbidden.
        class: AddressClass,
    },
    /// More redirects than [`MAX_REDIRECTS`].
    #[error("more than {0} redirects")]
    Redirects(usize),
    /// The file is larger than the cap (declared or while streaming).
    #[error("larger than {0} bytes")]
    TooBig(u64),
}

impl Refusal {
    /// A short label for metrics: `scheme`, `host`, `address`, `redirects`,
    /// `too_big`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Scheme(_) => "scheme",
            Self::Host(_) => "host",
            Self::Address { .. } => "address",
            Self::Redirects(_) => "redirects",
            Self::TooBig(_) => "too_big",
        }
    }

    /// Whether the URL itself is at fault (its scheme, host or addresses),
    /// as opposed to the file's size.
    pub fn is_egress(&self) -> bool {
        !matches!(self, Self::TooBig(_))
    }
}

/// What result downloads may reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    hosts: Arc<Vec<String>>,
    allow_http: bool,
    allow_loopback: bool,
    pinned: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl Default for EgressPolicy {
    /// KIE's hosts over https, no loopback.
    fn default() -> Self {
        Self::new(DEFAULT_RESULT_HOSTS.iter().copied())
    }
}

impl EgressPolicy {
    /// Allows `hosts` (and their subdomains) over https.
    pub fn new<S: AsRef<str>>(hosts: impl IntoIterator<Item = S>) -> Self {
        Self {
            hosts: Arc::new(
                hosts
                    .into_iter()
                    .map(|h| normalize_host(h.as_ref()))
                    .filter(|h| !h.is_empty())
                    .collect(),
            ),
            allow_http: false,
            allow_loopback: false,
            pinned: Arc::default(),
        }
    }

    /// Also allows plain `http` (the loopback fakes of tests and the demo).
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Also allows loopback addresses (the loopback fakes of tests and the
    /// demo). Every other forbidden range stays forbidden.
    pub fn allow_loopback(mut self, allow: bool) -> Self {
        self.allow_loopback = allow;
        self
    }

    /// Resolves `host` to `addrs` without asking DNS, and still checks the
    /// addresses: lets a test name a host that "resolves" to a forbidden
    /// address.
    pub fn pin_host(mut self, host: &str, addrs: &[IpAddr]) -> Self {
        Arc::make_mut(&mut self.pinned).insert(normalize_host(host), addrs.to_vec());
        self
    }

    /// The allowed hosts.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.iter().any(|allowed| {
            host == allowed
                || host
                    .strip_suffix(allowed.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }

    /// Checks what can be checked without DNS: the scheme, the host against
    /// the allow-list, and a host that is an IP literal.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refusal::Scheme(other.to_owned())),
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => normalize_host(d),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(Refusal::Host(String::new())),
        };
        if !self.host_allowed(&host) {
            return Err(Refusal::Host(host));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            self.check_addr(&host, ip)?;
        }
        Ok(())
    }

    /// Checks one address `host` resolved to.
    ///
    /// # Errors
    /// [`Refusal::Address`] for a forbidden address.
    pub fn check_addr(&self, host: &str, addr: IpAddr) -> Result<(), Refusal> {
        match classify(addr) {
            None => Ok(()),
            Some(AddressClass::Loopback) if self.allow_loopback => Ok(()),
            Some(class) => Err(Refusal::Address {
                host: host.to_owned(),
                addr,
                class,
            }),
        }
    }

    /// An HTTP client that enforces this policy on every connection and
    /// redirect (no proxies: a proxy would resolve names for us).
    ///
    /// # Errors
    /// The TLS backend could not be set up.
    pub fn client(&self, connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
        let for_redirects = self.clone();
        reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    return attempt.error(Refusal::Redirects(MAX_REDIRECTS));
                }
                match for_redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            }))
            .build()
    }
}

fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_end_matches('.')
        .trim_start_matches("*.")
        .to_ascii_lowercase()
}

/// Resolves names and drops every address the policy forbids; a name left
/// with none fails with the [`Refusal`], before any connection is tried.
struct GuardedResolver {
    policy: EgressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = normalize_host(name.as_str());
        Box::pin(async move {
            let found: Vec<SocketAddr> = match policy.pinned.get(&host) {
                Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_addr(&host, a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refused.get_or_insert(r);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(refusal) => {
                        tracing::warn!(%refusal, "result host refused after DNS");
                        Box::new(refusal)
                    }
                    None => format!("{host} has no address").into(),
                };
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The [`Refusal`] somewhere in an error's chain (the resolver's or the
/// redirect policy's, wrapped by reqwest and hyper).
pub fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refusal>() {
            return Some(r.clone());
        }
        current = e.source();
    }
    None
}

/// A downloaded file on disk, removed when dropped.
#[derive(Debug)]
pub struct Fetched {
    /// Where it is.
    pub path: tempfile::TempPath,
    /// Its size in bytes.
    pub size: u64,
    /// The `Content-Type` the server gave.
    pub content_type: Option<String>,
}

/// Why a download did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The policy refused the URL, a redirect, an address, or the size.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The server answered with an error status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The server sent no bytes.
    #[error("empty file")]
    Empty,
    /// The connection failed or timed out (the URL is left out).
    #[error("{0}")]
    Http(String),
    /// The temporary file could not be written.
    #[error("temporary file: {0}")]
    Io(String),
}

impl FetchError {
    fn from_reqwest(err: reqwest::Error) -> Self {
        match refusal_in(&err) {
            Some(refusal) => Self::Refused(refusal),
            None => Self::Http(describe(&err.without_url())),
        }
    }
}

fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Downloads `url` into a temporary file in `dir`, streaming, refusing more
/// than `max_bytes` (the declared length first, then while the bytes come).
/// `client` must come from [`EgressPolicy::client`] of the same `policy`.
///
/// # Errors
/// See [`FetchError`]; a partial file is removed.
pub async fn fetch_to_file(
    client: &reqwest::Client,
    policy: &EgressPolicy,
    url: &str,
    max_bytes: u64,
    timeout: Duration,
    dir: &std::path::Path,
) -> Result<Fetched, FetchError> {
    let span = tracing::info_span!(
        "download_result",
        outcome = tracing::field::Empty,
        size_bytes = tracing::field::Empty,
    );
    let result = async {
        let parsed = url::Url::parse(url).map_err(|e| FetchError::Http(format!("bad URL: {e}")))?;
        policy.check_url(&parsed).map_err(FetchError::Refused)?;
        let mut response = client
            .get(parsed)
            .timeout(timeout)
            .send()
            .await
            .map_err(FetchError::from_reqwest)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|len| len > max_bytes) {
            return Err(FetchError::Refused(Refusal::TooBig(max_bytes)));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let io = |e: std::io::Error| FetchError::Io(e.to_string());
        let (file, path) = tempfile::Builder::new()
            .prefix("kiebot-result-")
            .tempfile_in(dir)
            .map_err(io)?
            .into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut size: u64 = 0;
        while let Some(chunk) = response.chunk().await.map_err(FetchError::from_reqwest)? {
            size += chunk.len() as u64;
            if size > max_bytes {
                // `path` drops here and removes the partial file.
                return Err(FetchError::Refused(Refusal::TooBig(max_bytes)));
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        if size == 0 {
            return Err(FetchError::Empty);
        }
        Ok(Fetched {
            path,
            size,
            content_type,
        })
    }
    .instrument(span.clone())
    .await;
    match &result {
        Ok(file) => {
            span.record("outcome", "ok");
            span.record("size_bytes", file.size);
        }
        Err(FetchError::Refused(r)) => {
            span.record("outcome", r.reason());
        }
        Err(_) => {
            span.record("outcome", "failed");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn forbidden_ranges_are_classified() {
        for (addr, class) in [
            ("127.0.0.1", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.5.4", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("fd12::1", AddressClass::Private),
            ("169.254.169.254", AddressClass::Metadata),
            ("::ffff:169.254.169.254", AddressClass::Metadata),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("100.64.0.1", AddressClass::Cgnat),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("::ffff:10.1.2.3", AddressClass::Private),
            ("64:ff9b::a00:1", AddressClass::Private),
            ("2002:7f00:1::", AddressClass::Loopback),
        ] {
            assert_eq!(classify(ip(addr)), Some(class), "{addr}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn only_https_to_allowed_hosts_passes_the_url_check() {
        let policy = EgressPolicy::default();
        let ok = |u: &str| policy.check_url(&url::Url::parse(u).expect("url"));
        assert_eq!(ok("https://tempfile.aiquickdraw.com/a.png"), Ok(()));
        assert_eq!(ok("https://aiquickdraw.com/a.png"), Ok(()));
        assert_eq!(
            ok("http://tempfile.aiquickdraw.com/a.png"),
            Err(Refusal::Scheme("http".into()))
        );
        assert_eq!(
            ok("https://evilaiquickdraw.com/a.png"),
            Err(Refusal::Host("evilaiquickdraw.com".into()))
        );
        assert_eq!(
            ok("ftp://tempfile.aiquickdraw.com/a.png"),
            Err(Refusal::Scheme("ftp".into()))
        );
        let literal = EgressPolicy::new(["169.254.169.254", "127.0.0.1"]).allow_http(true);
        let refused = literal
            .check_url(&url::Url::parse("http://169.254.169.254/latest").expect("url"))
            .expect_err("metadata");
        assert_eq!(refused.reason(), "address");
        assert!(
            literal
                .check_url(&url::Url::parse("http://127.0.0.1:9/x").expect("url"))
                .is_err()
        );
        assert!(
            literal
                .clone()
                .allow_loopback(true)
                .check_url(&url::Url::parse("http://127.0.0.1:9/x").expect("url"))
                .is_ok()
        );
    }
}
