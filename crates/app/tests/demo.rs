//! `kiebot demo` end to end: the embedded process against the in-process
//! fakes, one scripted user from /start to two delivered results.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_buys_stars_and_delivers_an_image_and_a_video() {
    let mut out: Vec<u8> = Vec::new();
    let result = kiebot_app::demo::run(&mut out).await;
    let transcript = String::from_utf8(out).unwrap();
    let report = result.unwrap_or_else(|e| panic!("the demo failed: {e:#}\n{transcript}"));

    assert_eq!(report.delivered, 2, "{transcript}");
    assert!(report.balance_before.is_positive(), "{report:?}");
    assert!(report.charged.is_positive(), "{report:?}");
    assert_eq!(
        report.balance_after.minor(),
        report.balance_before.minor() - report.charged.minor(),
        "{report:?}"
    );
    for step in [
        "you: /start",
        "Русский ] [ 🇬🇧 English ]",
        "you press: 🇬🇧 English",
        "bot sends invoice:",
        "pre-checkout approved",
        "credited",
        "you: a lighthouse at dusk",
        "you send a photo",
        "bot sends photo:",
        "bot sends video:",
        "you: /balance",
        "summary: 2 results delivered",
        "app stopped cleanly",
    ] {
        assert!(
            transcript.contains(step),
            "missing {step:?} in:\n{transcript}"
        );
    }
}
