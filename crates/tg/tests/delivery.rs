//! Result delivery against the fake Bot API over real HTTP.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::FutureExt;
use futures::future::BoxFuture;
use kiebot_testkit::telegram::{FakeTelegram, Fault, MediaKind, MediaSource};
use kiebot_tg::delivery::{
    Delivered, DeliveryError, DeliveryKind, DeliveryOptions, DeliveryRequest, Route, deliver_with,
};
use kiebot_tg::egress::EgressPolicy;
use kiebot_tg::rate_limit::{DeliveryLimiter, InProcessLimiter, LimiterConfig};
use teloxide::Bot;
use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup};

const CHAT: ChatId = ChatId(4242);

/// Downloads allowed from the loopback file host and the example hosts
/// (the egress rules themselves are tested in `egress.rs`).
fn test_options() -> DeliveryOptions {
    DeliveryOptions::with_egress(
        EgressPolicy::new(["127.0.0.1", "results.example", "r.example"])
            .allow_http(true)
            .allow_loopback(true),
    )
    .expect("download client")
}

async fn deliver(
    bot: &Bot,
    limiter: &dyn DeliveryLimiter,
    chat: ChatId,
    request: &DeliveryRequest,
) -> Result<Delivered, DeliveryError> {
    deliver_with(bot, limiter, chat, request, &test_options()).await
}

fn bot(fake: &FakeTelegram) -> Bot {
    Bot::new(fake.token()).set_api_url(fake.api_url().parse().expect("valid api url"))
}

fn keyboard() -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![
        InlineKeyboardButton::callback("Repeat", "v1:rep:7"),
        InlineKeyboardButton::callback("Menu", "v1:menu"),
    ]])
}

fn request(kind: DeliveryKind, urls: &[&str]) -> DeliveryRequest {
    DeliveryRequest {
        kind,
        urls: urls.iter().map(|u| (*u).to_owned()).collect(),
        text: None,
        caption: "Done: a red fox".to_owned(),
        keyboard: Some(keyboard()),
        tracks: Vec::new(),
    }
}

/// A limiter generous enough never to slow these tests, counting its use.
#[derive(Default)]
struct CountingLimiter {
    acquired: AtomicUsize,
    retry_afters: Mutex<Vec<(Option<ChatId>, Duration)>>,
}

impl DeliveryLimiter for CountingLimiter {
    fn acquire(&self, _chat: ChatId) -> BoxFuture<'_, ()> {
        self.acquired.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(()).boxed()
    }

    fn note_retry_after(&self, chat: Option<ChatId>, retry_after: Duration) -> BoxFuture<'_, ()> {
        self.retry_afters
            .lock()
            .expect("lock")
            .push((chat, retry_after));
        futures::future::ready(()).boxed()
    }
}

/// A local file host standing in for KIE's result storage.
async fn file_host() -> String {
    let app = axum::Router::new()
        .route("/cat.png", axum::routing::get(|| async { vec![7u8; 1000] }))
        .route("/dog.png", axum::routing::get(|| async { vec![8u8; 2000] }))
        .route(
            "/clip.mp4",
            axum::routing::get(|| async { vec![9u8; 3000] }),
        )
        .route(
            "/gone.png",
            axum::routing::get(|| async { StatusCode::NOT_FOUND }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn a_single_image_is_sent_as_a_photo_by_url_with_its_caption_and_keyboard() {
    let fake = FakeTelegram::start().await;
    let limiter = CountingLimiter::default();
    let url = "https://results.example/fox.png";

    let done = deliver(
        &bot(&fake),
        &limiter,
        CHAT,
        &request(DeliveryKind::Image, &[url]),
    )
    .await
    .expect("delivered");

    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "sendPhoto");
    assert_eq!(sent[0].media[0].source, MediaSource::Url(url.to_owned()));
    assert_eq!(sent[0].text.as_deref(), Some("Done: a red fox"));
    assert_eq!(
        sent[0].reply_markup.as_ref().expect("keyboard")["inline_keyboard"][0][0]["callback_data"],
        "v1:rep:7"
    );
    assert_eq!(done.route, Route::Url);
    assert_eq!(done.file_ids, [sent[0].media[0].file_id.clone()]);
    assert_eq!(done.message_ids.len(), 1);
    assert_eq!(limiter.acquired.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn three_images_arrive_as_one_album_followed_by_the_caption_and_keyboard() {
    let fake = FakeTelegram::start().await;
    let urls = [
        "https://r.example/1.png",
        "https://r.example/2.png",
        "https://r.example/3.png",
    ];

    let done = deliver(
        &bot(&fake),
        &CountingLimiter::default(),
        CHAT,
        &request(DeliveryKind::Image, &urls),
    )
    .await
    .expect("delivered");

    let sent = fake.sent();
    assert_eq!(
        sent.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(),
        ["sendMediaGroup", "sendMessage"]
    );
    assert_eq!(sent[0].media.len(), 3);
    assert!(sent[0].media.iter().all(|m| m.kind == MediaKind::Photo));
    assert_eq!(sent[1].text.as_deref(), Some("Done: a red fox"));
    assert!(sent[1].reply_markup.is_some());
    assert_eq!(done.file_ids.len(), 3);
    assert_eq!(done.message_ids.len(), 4);
    assert_eq!(done.route, Route::Url);
    let album: Vec<_> = fake
        .messages_to(CHAT.0)
        .into_iter()
        .filter(|m| m.media_group_id.is_some())
        .collect();
    assert_eq!(album.len(), 3);
}

#[tokio::test]
async fn eleven_images_make_an_album_of_ten_and_a_single_photo() {
    let fake = FakeTelegram::start().await;
    let urls: Vec<String> = (0..11)
        .map(|i| format!("https://r.example/{i}.png"))
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();

    let done = deliver(
        &bot(&fake),
        &CountingLimiter::default(),
        CHAT,
        &request(DeliveryKind::Image, &urls),
    )
    .await
    .expect("delivered");

    let methods: Vec<String> = fake.sent().into_iter().map(|c| c.method).collect();
    assert_eq!(methods, ["sendMediaGroup", "sendPhoto", "sendMessage"]);
    assert_eq!(done.file_ids.len(), 11);
}

#[tokio::test]
async fn a_url_telegram_refuses_is_downloaded_and_uploaded_instead() {
    let fake = FakeTelegram::start().await;
    let host = file_host().await;
    fake.reject_url_media(1);
    let url = format!("{host}/cat.png");

    let done = deliver(
        &bot(&fake),
        &CountingLimiter::default(),
        CHAT,
        &request(DeliveryKind::Image, &[&url]),
    )
    .await
    .expect("delivered");

    assert_eq!(fake.rejected().len(), 1);
    let photos = fake.sent_of("sendPhoto");
    assert_eq!(photos.len(), 1);
    assert_eq!(
        photos[0].media[0].source,
        MediaSource::Upload {
            file_name: "cat.png".into(),
            size: 1000
        }
    );
    assert_eq!(photos[0].text.as_deref(), Some("Done: a red fox"));
    assert!(photos[0].reply_markup.is_some());
    assert_eq!(done.route, Route::Upload);
    assert_eq!(done.file_ids, [photos[0].media[0].file_id.clone()]);
}

#[tokio::test]
async fn a_refused_album_is_uploaded_as_an_album() {
    let fake = FakeTelegram::start().await;
    let host = file_host().await;
    fake.reject_url_media(1);
    let (a, b) = (format!("{host}/cat.png"), format!("{host}/dog.png"));

    let done = deliver(
        &bot(&fake),
        &CountingLimiter::default(),
        CHAT,
        &request(DeliveryKind::Image, &[&a, &b]),
    )
    .await
    .expect("delivered");

    let albums = fake.sent_of("sendMediaGroup");
    assert_eq!(albums.len(), 1);
    assert!(matches!(
        albums[0].media[1].source,
        MediaSource::Upload { size: 2000, .. }
    ));
    assert_eq!(done.route, Route::Upload);
}

#[tokio::test]
async fn when_the_upload_is_refused_too_the_user_gets_a_link() {
    let fake = FakeTelegram::start().await;
    let host = file_host().await;
    fake.reject_url_media(1);
    fake.set_upload_limit(10);
    let url = format!("{host}/clip.mp4");

    let done = deliver(
        &bot(&fake),
        &CountingLimiter::default(),
        CHAT,
        &request(DeliveryKind::Video, &[&url]),
    )
    .await
    .expect("delivered");

    assert_eq!(
        fake.rejected()
            .iter()
            .map(|r| r.error_code)
            .collect::<Vec<_>>(),
        [400, 413]
    );
    let messages = fake.sent_of("sendMessage");
    assert_eq!(messages.len(), 1);
    let text = messages[0].text.as_deref().expect("text");
    assert!(text.starts_with("Done: a red fox"), "{text}");
    assert!(text.contains(&url), "{text}");
    assert!(messages[0].reply_markup.is_some());
    assert_eq!(done.route, Route::Link);
    assert!(done.file_ids.is_empty());
}

#[tokio::test]
async fn a_result_that_cannot_be_downloaded_goes_as_a_link() {
    let fake = FakeTelegram::start().await;
    let host = file_host().await;
    fake.reject_url_media(1);
    let url = format!("{host}/gone.png");

    let done = deliver(
        &bot(&fake),
        &CountingLimiter::default(),
        CHAT,
        &request(DeliveryKind::Image, &[&url]),
    )
    .await
    .expect("delivered");

    assert_eq!(done.route, Route::Link);
    assert_eq!(
        fake.call_count("sendPhoto"),
        1,
        "no upload of a failed download"
    );
    assert!(
        fake.sent_of("sendMessage")[0]
            .text
            .as_deref()
            .expect("text")
            .contains(&url)
    );
}

#[tokio::test]
async fn a_429_with_retry_after_1_is_waited_out_and_the_photo_sent_exactly_once() {
    let fake = FakeTelegram::start().await;
    let limiter = CountingLimiter::default();
    fake.fail_next("sendPhoto", 1, Fault::TooManyRequests { retry_after: 1 });
    let started = Instant::now();

    let done = deliver(
        &bot(&fake),
        &limiter,
        CHAT,
        &request(DeliveryKind::Image, &["https://r.example/a.png"]),
    )
    .await
    .expect("delivered");

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(fake.call_count("sendPhoto"), 2);
    assert_eq!(fake.sent_of("sendPhoto").len(), 1);
    assert_eq!(fake.messages_to(CHAT.0).len(), 1);
    assert_eq!(done.route, Route::Url);
    assert_eq!(
        *limiter.retry_afters.lock().expect("lock"),
        [(None, Duration::from_secs(1))]
    );
    assert_eq!(
        limiter.acquired.load(Ordering::SeqCst),
        2,
        "the retry waited on the limiter too"
    );
}

#[tokio::test]
async fn a_429_longer_than_the_wait_budget_is_reported_as_retryable() {
    let fake = FakeTelegram::start().await;
    fake.fail_next("sendMessage", 1, Fault::TooManyRequests { retry_after: 30 });
    let options = DeliveryOptions {
        max_retry_wait: Duration::from_secs(5),
        ..test_options()
    };
    let text = DeliveryRequest {
        text: Some("hello".into()),
        ..request(DeliveryKind::Text, &[])
    };

    let err = deliver_with(
        &bot(&fake),
        &CountingLimiter::default(),
        CHAT,
        &text,
        &options,
    )
    .await
    .expect_err("over budget");

    assert_eq!(
        err,
        DeliveryError::RateLimited {
            retry_after: Duration::from_secs(30)
        }
    );
    assert!(err.is_retryable());
    assert!(fake.sent().is_empty());
}

#[tokio::test]
async fn a_user_who_blocked_the_bot_gets_nothing_and_the_error_is_final() {
    let fake = FakeTelegram::start().await;
    fake.block_user(CHAT.0);
    let urls = ["https://r.example/1.png", "https://r.example/2.png"];

    let err = deliver(
        &bot(&fake),
        &CountingLimiter::default(),
        CHAT,
        &request(DeliveryKind::Image, &urls),
    )
    .await
    .expect_err("blocked");

    assert!(matches!(err, DeliveryError::Blocked(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(fake.sent().is_empty());
    assert_eq!(
        fake.call_count("sendMediaGroup"),
        1,
        "a blocked user is not retried"
    );
}

#[tokio::test]
async fn a_long_text_is_split_into_messages_under_the_limit_with_the_keyboard_last() {
    let fake = FakeTelegram::start().await;
    let paragraph = "word ".repeat(199) + "end.";
    let body = vec![paragraph; 10].join("\n\n");
    let text = DeliveryRequest {
        text: Some(body.clone()),
        caption: "Transcript:".into(),
        ..request(DeliveryKind::Text, &[])
    };

    let done = deliver(&bot(&fake), &CountingLimiter::default(), CHAT, &text)
        .await
        .expect("delivered");

    let sent = fake.sent_of("sendMessage");
    assert_eq!(sent.len(), 3, "about 10 000 characters make three messages");
    assert_eq!(done.message_ids.len(), 3);
    assert_eq!(done.route, Route::Text);
    for (i, call) in sent.iter().enumerate() {
        let piece = call.text.as_deref().expect("text");
        assert!(piece.encode_utf16().count() <= 4096);
        assert_eq!(
            call.reply_markup.is_some(),
            i == 2,
            "only the last message has the keyboard"
        );
    }
    assert!(
        sent[0]
            .text
            .as_deref()
            .expect("text")
            .starts_with("Transcript:")
    );
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let all: Vec<String> = sent
        .iter()
        .flat_map(|c| words(c.text.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(all, words(&format!("Transcript: {body}")));
}

#[tokio::test]
async fn video_and_audio_go_as_their_own_kinds_and_an_overlong_caption_follows_separately() {
    let fake = FakeTelegram::start().await;
    let limiter = CountingLimiter::default();
    deliver(
        &bot(&fake),
        &limiter,
        CHAT,
        &request(DeliveryKind::Video, &["https://r.example/v.mp4"]),
    )
    .await
    .expect("video");
    let long_caption = DeliveryRequest {
        caption: "x".repeat(1500),
        ..request(DeliveryKind::Audio, &["https://r.example/a.mp3"])
    };
    let done = deliver(&bot(&fake), &limiter, CHAT, &long_caption)
        .await
        .expect("audio");

    let methods: Vec<String> = fake.sent().into_iter().map(|c| c.method).collect();
    assert_eq!(methods, ["sendVideo", "sendAudio", "sendMessage"]);
    let audio = &fake.sent_of("sendAudio")[0];
    assert!(audio.text.is_none() && audio.reply_markup.is_none());
    assert_eq!(done.file_ids, [audio.media[0].file_id.clone()]);
}

#[tokio::test]
async fn the_in_process_limiter_spaces_a_burst_to_one_chat() {
    let fake = FakeTelegram::start().await;
    let limiter = InProcessLimiter::new(LimiterConfig {
        global_per_second: 25,
        per_chat_interval: Duration::from_millis(300),
        per_chat_burst: 1,
    });
    let started = Instant::now();
    let text = DeliveryRequest {
        text: Some("hi".into()),
        keyboard: None,
        ..request(DeliveryKind::Text, &[])
    };
    for _ in 0..3 {
        deliver(&bot(&fake), &limiter, CHAT, &text)
            .await
            .expect("sent");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.sent_of("sendMessage").len(), 3);
}

#[tokio::test]
async fn an_empty_request_is_an_error_and_sends_nothing() {
    let fake = FakeTelegram::start().await;
    let empty = DeliveryRequest {
        caption: String::new(),
        keyboard: None,
        ..request(DeliveryKind::Image, &[])
    };
    let err = deliver(&bot(&fake), &CountingLimiter::default(), CHAT, &empty)
        .await
        .expect_err("empty");
    assert_eq!(err, DeliveryError::Empty);
    assert!(fake.sent().is_empty());
}
