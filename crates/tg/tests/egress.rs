//! Result downloads held to the egress policy, against the fake KIE (result
//! files, redirects, download-url) and the fake Bot API over real HTTP.
//!
//! The fakes listen on 127.0.0.1; a test names a result host that the
//! policy "resolves" to a forbidden address (`EgressPolicy::pin_host`), so
//! the address rule is exercised exactly where production applies it: in
//! the download client's resolver, before any connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use kiebot_testkit::kie::FakeKie;
use kiebot_testkit::telegram::{FakeTelegram, MediaSource};
use kiebot_tg::delivery::{
    DeliveryError, DeliveryKind, DeliveryOptions, DeliveryRequest, FreshLinkFuture, FreshLinks,
    LinkError, Route, deliver_with,
};
use kiebot_tg::egress::{AddressClass, EgressPolicy, Refusal};
use kiebot_tg::rate_limit::DeliveryLimiter;
use teloxide::Bot;
use teloxide::types::ChatId;

const CHAT: ChatId = ChatId(77);

struct NoLimit;

impl DeliveryLimiter for NoLimit {
    fn acquire(&self, _chat: ChatId) -> BoxFuture<'_, ()> {
        futures::future::ready(()).boxed()
    }
    fn note_retry_after(
        &self,
        _chat: Option<ChatId>,
        _retry_after: std::time::Duration,
    ) -> BoxFuture<'_, ()> {
        futures::future::ready(()).boxed()
    }
}

/// KIE's download-url endpoint of the fake, over HTTP.
struct FakeKieLinks {
    kie: FakeKie,
    http: reqwest::Client,
}

impl FreshLinks for FakeKieLinks {
    fn fresh_link<'a>(&'a self, url: &'a str) -> FreshLinkFuture<'a> {
        Box::pin(async move {
            let reply: serde_json::Value = self
                .http
                .post(format!(
                    "{}/api/v1/common/download-url",
                    self.kie.base_url()
                ))
                .bearer_auth(self.kie.api_key())
                .json(&serde_json::json!({ "url": url }))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| LinkError {
                    retryable: true,
                    message: e.to_string(),
                })?
                .json()
                .await
                .map_err(|e| LinkError {
                    retryable: true,
                    message: e.to_string(),
                })?;
            reply["data"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| LinkError {
                    retryable: false,
                    message: reply["msg"].to_string(),
                })
        })
    }
}

fn bot(fake: &FakeTelegram) -> Bot {
    Bot::new(fake.token()).set_api_url(fake.api_url().parse().expect("api url"))
}

fn image(url: &str) -> DeliveryRequest {
    DeliveryRequest {
        kind: DeliveryKind::Image,
        urls: vec![url.to_owned()],
        text: None,
        caption: "Done".to_owned(),
        keyboard: None,
        tracks: Vec::new(),
    }
}

fn options(policy: EgressPolicy, kie: Option<&FakeKie>) -> DeliveryOptions {
    let mut options = DeliveryOptions::with_egress(policy).expect("download client");
    options.fresh_links = kie.map(|kie| {
        Arc::new(FakeKieLinks {
            kie: kie.clone(),
            http: reqwest::Client::new(),
        }) as Arc<dyn FreshLinks>
    });
    options
}

fn port(kie: &FakeKie) -> u16 {
    url::Url::parse(&kie.base_url())
        .unwrap()
        .port()
        .expect("port")
}

#[tokio::test]
async fn a_host_resolving_to_a_private_or_metadata_address_is_never_fetched_and_a_fresh_link_delivers()
 {
    for (addr, class) in [
        ("10.0.0.1", AddressClass::Private),
        ("169.254.169.254", AddressClass::Metadata),
    ] {
        let kie = FakeKie::start().await;
        let tg = FakeTelegram::start().await;
        kie.add_file_host("results.kie.test");
        let policy = EgressPolicy::new(["results.kie.test", "127.0.0.1"])
            .allow_http(true)
            .allow_loopback(true)
            .pin_host("results.kie.test", &[addr.parse::<IpAddr>().unwrap()]);
        let url = format!(
            "http://results.kie.test:{}/files/results/t1/0.png",
            port(&kie)
        );
        tg.reject_url_media(1);

        let done = deliver_with(
            &bot(&tg),
            &NoLimit,
            CHAT,
            &image(&url),
            &options(policy, Some(&kie)),
        )
        .await
        .expect("delivered through a fresh link");

        assert_eq!(
            done.refusals,
            [Refusal::Address {
                host: "results.kie.test".into(),
                addr: addr.parse().unwrap(),
                class
            }],
            "{addr}"
        );
        assert_eq!(done.refusals[0].reason(), "address");
        assert_eq!(done.route, Route::Upload, "{addr}");
        // Only the fresh link reached a file server; the refused address
        // never got past the resolver.
        let requests = kie.file_requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(requests[0].starts_with("direct/"), "{requests:?}");
        let photos = tg.sent_of("sendPhoto");
        assert!(matches!(
            photos.last().unwrap().media[0].source,
            MediaSource::Upload { .. }
        ));
    }
}

#[tokio::test]
async fn a_redirect_to_the_metadata_service_is_not_followed() {
    let kie = FakeKie::start().await;
    let tg = FakeTelegram::start().await;
    let port = port(&kie);
    // Straight to the address, and through a name that resolves to it.
    kie.redirect_file(
        "results/r1/0.png",
        "http://169.254.169.254/latest/meta-data/",
    );
    kie.redirect_file(
        "results/r2/0.png",
        &format!("http://meta.kie.test:{port}/latest/meta-data/"),
    );
    let policy = EgressPolicy::new(["127.0.0.1", "169.254.169.254", "meta.kie.test"])
        .allow_http(true)
        .allow_loopback(true)
        .pin_host("meta.kie.test", &["169.254.169.254".parse().unwrap()]);
    for task in ["r1", "r2"] {
        tg.reject_url_media(1);
        let url = format!("{}/files/results/{task}/0.png", kie.base_url());
        let done = deliver_with(
            &bot(&tg),
            &NoLimit,
            CHAT,
            &image(&url),
            &options(policy.clone(), Some(&kie)),
        )
        .await
        .expect("delivered through a fresh link");
        assert!(
            matches!(
                done.refusals.as_slice(),
                [Refusal::Address {
                    class: AddressClass::Metadata,
                    ..
                }]
            ),
            "{task}: {:?}",
            done.refusals
        );
        assert_eq!(done.route, Route::Upload);
    }
    let requests = kie.file_requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(
        requests.iter().all(|p| !p.contains("meta-data")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed_and_nothing_is_sent_when_no_link_is_acceptable() {
    let kie = FakeKie::start().await;
    let tg = FakeTelegram::start().await;
    // The URL names 127.0.0.1 itself; KIE's fresh link is on loopback too.
    let policy = EgressPolicy::new(["127.0.0.1"]).allow_http(true);
    let url = format!("{}/files/results/t1/0.png", kie.base_url());
    let err = deliver_with(
        &bot(&tg),
        &NoLimit,
        CHAT,
        &image(&url),
        &options(policy, Some(&kie)),
    )
    .await
    .expect_err("refused");
    let DeliveryError::Refused(refusal) = &err else {
        panic!("{err:?}");
    };
    assert!(matches!(
        refusal,
        Refusal::Address {
            class: AddressClass::Loopback,
            ..
        }
    ));
    assert!(!err.is_retryable(), "final: the caller gives up");
    assert!(tg.sent().is_empty(), "nothing sent: {:?}", tg.sent());
    assert!(kie.file_requests().is_empty());

    // A name that resolves to loopback: Telegram may fetch it by URL, we may
    // not; with no acceptable fresh link the user gets the link.
    tg.reject_url_media(1);
    let policy = EgressPolicy::new(["localhost", "127.0.0.1"]).allow_http(true);
    let url = format!("http://localhost:{}/files/results/t2/0.png", port(&kie));
    let done = deliver_with(
        &bot(&tg),
        &NoLimit,
        CHAT,
        &image(&url),
        &options(policy, Some(&kie)),
    )
    .await
    .expect("delivered as a link");
    assert_eq!(done.route, Route::Link);
    assert!(
        done.refusals.iter().all(|r| matches!(
            r,
            Refusal::Address {
                class: AddressClass::Loopback,
                ..
            }
        )),
        "{:?}",
        done.refusals
    );
    assert_eq!(done.refusals.len(), 2, "the URL, then KIE's fresh link");
    assert!(kie.file_requests().is_empty());
    assert!(
        tg.sent_of("sendMessage")[0]
            .text
            .as_deref()
            .unwrap()
            .contains(&url)
    );
}

#[tokio::test]
async fn plain_http_and_hosts_off_the_allow_list_are_refused() {
    let kie = FakeKie::start().await;
    let tg = FakeTelegram::start().await;
    let url = format!("{}/files/results/t1/0.png", kie.base_url());

    let https_only = EgressPolicy::new(["127.0.0.1"]).allow_loopback(true);
    let err = deliver_with(
        &bot(&tg),
        &NoLimit,
        CHAT,
        &image(&url),
        &options(https_only, None),
    )
    .await
    .expect_err("http refused");
    assert_eq!(err, DeliveryError::Refused(Refusal::Scheme("http".into())));

    // The production default: KIE's hosts only. KIE will not refresh a
    // foreign URL either (422).
    let foreign = "https://evil.example/files/results/t1/0.png";
    let err = deliver_with(
        &bot(&tg),
        &NoLimit,
        CHAT,
        &image(foreign),
        &options(EgressPolicy::default(), Some(&kie)),
    )
    .await
    .expect_err("host refused");
    assert_eq!(
        err,
        DeliveryError::Refused(Refusal::Host("evil.example".into()))
    );
    assert!(tg.sent().is_empty());
    assert!(kie.file_requests().is_empty());
}

#[tokio::test]
async fn a_file_over_the_cap_is_aborted_while_streaming_and_sent_as_a_link() {
    let kie = FakeKie::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = EgressPolicy::new(["127.0.0.1"])
        .allow_http(true)
        .allow_loopback(true);
    let mut opts = options(policy, None);
    opts.max_download_bytes = 1024 * 1024;
    opts.temp_dir = dir.path().to_owned();
    let url = format!("{}/files/results/t1/0.mp4", kie.base_url());
    let mut video = image(&url);
    video.kind = DeliveryKind::Video;

    // No Content-Length: only the bytes themselves tell the size.
    for declare_length in [false, true] {
        kie.set_result_size(Some(3 * 1024 * 1024), declare_length);
        tg.reject_url_media(1);
        let done = deliver_with(&bot(&tg), &NoLimit, CHAT, &video, &opts)
            .await
            .expect("delivered as a link");
        assert_eq!(done.refusals, [Refusal::TooBig(1024 * 1024)]);
        assert_eq!(done.route, Route::Link);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "the partial file is removed"
        );
    }
    assert!(
        tg.sent_of("sendVideo")
            .iter()
            .all(|c| matches!(c.media[0].source, MediaSource::Url(_))),
        "nothing uploaded"
    );

    // Under the cap the file goes up from disk.
    kie.set_result_size(Some(900 * 1024), false);
    tg.reject_url_media(1);
    let done = deliver_with(&bot(&tg), &NoLimit, CHAT, &video, &opts)
        .await
        .expect("uploaded");
    assert_eq!(done.route, Route::Upload);
    assert!(done.refusals.is_empty());
    let last = tg.sent_of("sendVideo").pop().unwrap();
    assert_eq!(
        last.media[0].source,
        MediaSource::Upload {
            file_name: "0.mp4".into(),
            size: 900 * 1024
        }
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}
