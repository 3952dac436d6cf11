//! Result URLs the egress policy refuses, through the whole pipeline on both
//! deployments: the generation is delivered from KIE's fresh link
//! (download-url), or, when no link is acceptable, its delivery is given up
//! at once rather than retried forever; money follows the finalizer's rules
//! either way (captured once on KIE's success).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kiebot_app::harness::{Flavor, Harness};
use kiebot_domain::{GenerationStatus, Money};
use kiebot_testkit::kie::Endpoint;
use kiebot_testkit::telegram::MediaSource;
use kiebot_tg::delivery::DeliveryOptions;
use kiebot_tg::egress::EgressPolicy;

const SETTLE: Duration = Duration::from_secs(60);

macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                $body(Flavor::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fleet() {
                $body(Flavor::Fleet).await;
            }
        }
    };
}

fn kie_port(h: &Harness) -> u16 {
    url::Url::parse(&h.kie.base_url()).unwrap().port().unwrap()
}

/// Swaps the context's download policy (keeping KIE's fresh links) before
/// any worker runs.
fn set_policy(h: &mut Harness, policy: EgressPolicy) {
    let ctx = Arc::get_mut(&mut h.ctx).expect("no worker started yet");
    let fresh_links = ctx.delivery.fresh_links.clone();
    ctx.delivery = DeliveryOptions::with_egress(policy).unwrap();
    ctx.delivery.fresh_links = fresh_links;
}

async fn a_result_on_the_metadata_address_is_delivered_from_a_fresh_link(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let host = "results.kie.test";
    h.kie.add_file_host(host);
    h.kie
        .set_result_base(Some(format!("http://{host}:{}", kie_port(&h))));
    set_policy(
        &mut h,
        EgressPolicy::new([host, "127.0.0.1"])
            .allow_http(true)
            .allow_loopback(true)
            .pin_host(host, &["169.254.169.254".parse().unwrap()]),
    );
    h.telegram.reject_url_media(1);
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.start_workers(2);
    let id = h
        .confirm(user, "google/nano-banana", Money::from_minor(1_000))
        .await;
    h.wait_settled(SETTLE).await.unwrap();

    assert_eq!(h.statuses(&[id]).await, [GenerationStatus::Delivered]);
    assert_eq!(h.kie.calls(Endpoint::DownloadUrl), 1);
    let requests = h.kie.file_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].starts_with("direct/"), "{requests:?}");
    let photo = h.telegram.sent_of("sendPhoto").pop().unwrap();
    assert!(matches!(photo.media[0].source, MediaSource::Upload { .. }));
    let wallet = h.ctx.store.ledger().wallet(user).await.unwrap();
    assert_eq!(wallet.balance, Money::from_minor(4_000));
    h.assert_money_consistent().await;
    h.cleanup().await;
}
on_both!(
    metadata_address_fresh_link,
    a_result_on_the_metadata_address_is_delivered_from_a_fresh_link
);

async fn a_result_with_no_acceptable_link_is_given_up_not_retried(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    // Loopback forbidden: the result URL and KIE's fresh link both name
    // 127.0.0.1.
    set_policy(&mut h, EgressPolicy::new(["127.0.0.1"]).allow_http(true));
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.start_workers(2);
    let id = h
        .confirm(user, "google/nano-banana", Money::from_minor(1_000))
        .await;
    // A given-up delivery leaves the row `succeeded` with its reason.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let g = loop {
        let g = h.ctx.store.generations().get(id).await.unwrap().unwrap();
        if g.delivery_error.is_some() {
            break g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never given up: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    h.stop_workers().await;
    assert_eq!(
        h.ctx.store.generations().count_untold().await.unwrap(),
        0,
        "not due for another attempt"
    );

    // Finished at KIE (captured, as for any delivery that cannot be made),
    // out of the retry loop after one attempt, nothing fetched or sent.
    assert_eq!(h.statuses(&[id]).await, [GenerationStatus::Succeeded]);
    let why = g.delivery_error.unwrap_or_default();
    assert!(why.contains("result URL refused"), "{why}");
    assert!(why.contains("loopback"), "{why}");
    assert_eq!(g.delivery_attempts, 1);
    assert!(h.kie.file_requests().is_empty());
    assert!(h.telegram.sent_of("sendPhoto").is_empty());
    // Paid for nothing: the capture is paid back and the user told.
    let wallet = h.ctx.store.ledger().wallet(user).await.unwrap();
    assert_eq!(wallet.balance, Money::from_minor(5_000));
    let told = h.telegram.sent_of("sendMessage");
    assert_eq!(told.len(), 1, "{told:?}");
    h.assert_money_consistent().await;
    h.cleanup().await;
}
on_both!(
    no_acceptable_link_given_up,
    a_result_with_no_acceptable_link_is_given_up_not_retried
);
