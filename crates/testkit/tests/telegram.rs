//! The fake Telegram Bot API, driven through teloxide (the client the bot
//! uses) and plain HTTP, over real loopback sockets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiebot_testkit::telegram::{FakeTelegram, FakeUser, Fault, FileContent, MediaSource};
use teloxide::net::Download;
use teloxide::payloads::{EditMessageTextSetters, SendMessageSetters, SetWebhookSetters};
use teloxide::prelude::*;
use teloxide::types::{
    ChatAction, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, InputMedia, InputMediaPhoto,
    LabeledPrice, MessageId, UpdateKind,
};
use teloxide::{ApiError, RequestError};

const SECOND: Duration = Duration::from_secs(1);

fn bot(fake: &FakeTelegram) -> Bot {
    Bot::new(fake.token()).set_api_url(fake.api_url().parse().expect("valid api url"))
}

fn keyboard(data: &str) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::callback("Go", data)]])
}

fn text_of(kind: &UpdateKind) -> Option<&str> {
    match kind {
        UpdateKind::Message(m) => m.text(),
        _ => None,
    }
}

#[tokio::test]
async fn get_me_describes_the_bot_behind_the_token() {
    let fake = FakeTelegram::start().await;
    let me = bot(&fake).get_me().await.expect("getMe");
    assert_eq!(me.id.0 as i64, fake.bot_id());
    assert!(me.is_bot);
    assert_eq!(me.username(), "kiebot_test_bot");
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let fake = FakeTelegram::start().await;
    let stranger = Bot::new("1:wrong").set_api_url(fake.api_url().parse().expect("url"));
    let err = stranger.get_me().await.expect_err("wrong token");
    assert!(
        matches!(err, RequestError::Api(ApiError::InvalidToken)),
        "{err:?}"
    );
}

#[tokio::test]
async fn long_polling_returns_injected_updates_in_order_with_offsets() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let first = fake.send_text(7, "/start");
    let second = fake.send_text(FakeUser::new(7).with_language("ru"), "hello");

    let updates = bot.get_updates().await.expect("getUpdates");
    assert_eq!(
        updates
            .iter()
            .map(|u| i64::from(u.id.0))
            .collect::<Vec<_>>(),
        [first, second]
    );
    assert_eq!(text_of(&updates[0].kind), Some("/start"));
    assert_eq!(text_of(&updates[1].kind), Some("hello"));
    let UpdateKind::Message(m) = &updates[1].kind else {
        panic!("a message")
    };
    assert_eq!(m.chat.id, ChatId(7));
    assert_eq!(
        m.from.as_ref().and_then(|u| u.language_code.as_deref()),
        Some("ru")
    );
    assert_eq!(m.id, MessageId(2), "message ids count per chat");

    // Without confirming, the same updates come again.
    assert_eq!(bot.get_updates().await.expect("getUpdates").len(), 2);

    // A long poll past the last update waits for the next one.
    let poll = tokio::spawn({
        let bot = bot.clone();
        async move {
            bot.get_updates()
                .offset(second as i32 + 1)
                .timeout(10)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long poll is held while there is nothing to deliver"
    );
    let third = fake.send_text(8, "later");
    let updates = tokio::time::timeout(5 * SECOND, poll)
        .await
        .expect("woken")
        .expect("join")
        .expect("poll");
    assert_eq!(updates.len(), 1);
    assert_eq!(i64::from(updates[0].id.0), third);
    assert_eq!(text_of(&updates[0].kind), Some("later"));
    assert_eq!(
        fake.pending_updates(),
        1,
        "the offset confirmed the first two"
    );

    // A poll with nothing pending returns empty when its timeout passes.
    let started = std::time::Instant::now();
    let empty = bot
        .get_updates()
        .offset(third as i32 + 1)
        .timeout(1)
        .await
        .expect("poll");
    assert!(empty.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(fake.pending_updates(), 0);
    assert_eq!(fake.call_count("getUpdates"), 4);
}

#[tokio::test]
async fn a_pressed_button_arrives_as_a_callback_query_on_the_bots_message() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    fake.send_text(42, "/start");
    let sent = bot
        .send_message(ChatId(42), "Pick one")
        .reply_markup(keyboard("v1:pick:1"))
        .await
        .expect("send");
    assert_eq!(sent.id, MessageId(2));
    assert_eq!(
        sent.reply_markup(),
        Some(&keyboard("v1:pick:1")),
        "inline keyboards are echoed"
    );

    let update_id = fake.press_button(42, sent.id.0, "v1:pick:1");
    let updates = bot.get_updates().offset(2).await.expect("poll");
    let UpdateKind::CallbackQuery(q) = &updates[0].kind else {
        panic!("callback query: {updates:?}")
    };
    assert_eq!(q.id.0, update_id.to_string());
    assert_eq!(q.data.as_deref(), Some("v1:pick:1"));
    assert_eq!(q.from.id.0, 42);
    let message = q
        .message
        .as_ref()
        .and_then(|m| m.regular_message())
        .expect("accessible message");
    assert_eq!(message.id, sent.id);
    assert_eq!(message.text(), Some("Pick one"));

    bot.answer_callback_query(q.id.clone())
        .text("Done")
        .await
        .expect("answer");
    let again = bot
        .answer_callback_query(q.id.clone())
        .await
        .expect_err("a query is answered once");
    assert!(
        matches!(again, RequestError::Api(ApiError::InvalidQueryId)),
        "{again:?}"
    );
    let answers = fake.answered_callbacks();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].callback_query_id, update_id.to_string());
    assert_eq!(answers[0].text.as_deref(), Some("Done"));

    // A press on a message the bot never sent is an inaccessible message.
    fake.press_button(42, 999, "v1:stale");
    let updates = bot
        .get_updates()
        .offset(i32::try_from(update_id).expect("small") + 1)
        .await
        .expect("poll");
    let UpdateKind::CallbackQuery(q) = &updates[0].kind else {
        panic!("callback query")
    };
    assert!(
        q.message
            .as_ref()
            .is_some_and(|m| m.regular_message().is_none())
    );
}

#[tokio::test]
async fn files_users_send_can_be_fetched_with_get_file_and_downloaded() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    fake.send_document(5, "notes.txt", "text/plain", b"some notes".to_vec());
    fake.send_photo(5, &b"\xff\xd8jpeg"[..]);
    fake.send_voice(5, FileContent::Zeros(2048));
    fake.send_audio(5, "song.mp3", "audio/mpeg", FileContent::Zeros(4096));
    fake.send_photo(5, FileContent::Zeros(21 * 1024 * 1024));

    let updates = bot.get_updates().await.expect("poll");
    let messages: Vec<_> = updates
        .iter()
        .map(|u| match &u.kind {
            UpdateKind::Message(m) => m.clone(),
            other => panic!("message expected: {other:?}"),
        })
        .collect();
    let document = messages[0].document().expect("document");
    assert_eq!(document.file_name.as_deref(), Some("notes.txt"));
    let file = bot
        .get_file(document.file.id.clone())
        .await
        .expect("getFile");
    assert_eq!(file.meta.size, 10);
    let mut downloaded = Vec::new();
    bot.download_file(&file.path, &mut downloaded)
        .await
        .expect("download");
    assert_eq!(downloaded, b"some notes");

    let sizes = messages[1].photo().expect("photo sizes");
    assert_eq!(sizes.len(), 2, "a thumbnail and the full size");
    let largest = sizes.last().expect("largest");
    let file = bot
        .get_file(largest.file.id.clone())
        .await
        .expect("getFile");
    let mut downloaded = Vec::new();
    bot.download_file(&file.path, &mut downloaded)
        .await
        .expect("download");
    assert_eq!(downloaded, b"\xff\xd8jpeg");

    assert_eq!(messages[2].voice().expect("voice").file.size, 2048);
    assert_eq!(
        messages[3].audio().expect("audio").file_name.as_deref(),
        Some("song.mp3")
    );

    let huge = messages[4].photo().and_then(|s| s.last()).expect("photo");
    assert_eq!(huge.file.size, 21 * 1024 * 1024);
    let err = bot
        .get_file(huge.file.id.clone())
        .await
        .expect_err("too big for getFile");
    assert!(
        matches!(err, RequestError::Api(ApiError::Unknown(ref d)) if d == "Bad Request: file is too big"),
        "{err:?}"
    );

    let err = bot
        .get_file("nope".to_owned().into())
        .await
        .expect_err("unknown file");
    assert!(matches!(err, RequestError::Api(_)), "{err:?}");
}

#[tokio::test]
async fn scripted_faults_come_back_as_telegram_errors_then_calls_succeed() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    fake.fail_next("sendMessage", 1, Fault::TooManyRequests { retry_after: 3 });
    fake.fail_next("sendMessage", 1, Fault::Blocked);
    fake.fail_next("sendMessage", 1, Fault::BadRequest("chat not found".into()));

    let err = bot.send_message(ChatId(1), "a").await.expect_err("429");
    assert!(
        matches!(err, RequestError::RetryAfter(s) if s.duration() == 3 * SECOND),
        "{err:?}"
    );
    let err = bot.send_message(ChatId(1), "a").await.expect_err("403");
    assert!(
        matches!(err, RequestError::Api(ApiError::BotBlocked)),
        "{err:?}"
    );
    let err = bot.send_message(ChatId(1), "a").await.expect_err("400");
    assert!(
        matches!(err, RequestError::Api(ApiError::ChatNotFound)),
        "{err:?}"
    );
    let ok = bot
        .send_message(ChatId(1), "a")
        .await
        .expect("faults are used up");
    assert_eq!(ok.id, MessageId(1), "refused calls create no messages");

    fake.fail_next("editMessageText", 1, Fault::NotModified);
    let err = bot
        .edit_message_text(ChatId(1), ok.id, "b")
        .await
        .expect_err("scripted");
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageNotModified)),
        "{err:?}"
    );
    let err = bot
        .edit_message_text(ChatId(1), ok.id, "a")
        .await
        .expect_err("same text");
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageNotModified)),
        "{err:?}"
    );
    let edited = bot
        .edit_message_text(ChatId(1), ok.id, "b")
        .reply_markup(keyboard("x"))
        .await
        .expect("edit");
    assert_eq!(edited.text(), Some("b"));

    assert_eq!(fake.call_count("sendMessage"), 4);
    assert_eq!(fake.call_count("editMessageText"), 3);
    let rejected = fake.rejected();
    assert_eq!(
        rejected.iter().map(|r| r.error_code).collect::<Vec<_>>(),
        [429, 403, 400, 400, 400]
    );
    let now = fake.messages_to(1);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].text.as_deref(), Some("b"));
    assert!(now[0].edited);
    assert!(now[0].reply_markup.is_some());

    fake.block_user(1);
    let err = bot
        .send_chat_action(ChatId(1), ChatAction::Typing)
        .await
        .expect_err("blocked");
    assert!(
        matches!(err, RequestError::Api(ApiError::BotBlocked)),
        "{err:?}"
    );
    fake.unblock_user(1);
    bot.send_chat_action(ChatId(1), ChatAction::Typing)
        .await
        .expect("unblocked");
}

#[tokio::test]
async fn media_by_url_upload_and_file_id_become_real_messages() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let chat = ChatId(9);
    let by_url = bot
        .send_photo(
            chat,
            InputFile::url("https://files.example/a.png".parse().expect("url")),
        )
        .caption("a cat")
        .await
        .expect("photo by url");
    let photo_id = by_url
        .photo()
        .and_then(|s| s.last())
        .expect("sizes")
        .file
        .id
        .clone();
    assert_eq!(by_url.caption(), Some("a cat"));

    let uploaded = bot
        .send_document(chat, InputFile::memory(b"%PDF".to_vec()).file_name("r.pdf"))
        .await
        .expect("upload");
    assert_eq!(uploaded.document().expect("document").file.size, 4);

    let again = bot
        .send_photo(chat, InputFile::file_id(photo_id.clone()))
        .await
        .expect("by file id");
    assert_eq!(
        again.photo().and_then(|s| s.last()).expect("sizes").file.id,
        photo_id
    );
    let err = bot
        .send_photo(chat, InputFile::file_id("unknown".to_owned().into()))
        .await
        .expect_err("bad id");
    assert!(
        matches!(err, RequestError::Api(ApiError::WrongFileIdOrUrl)),
        "{err:?}"
    );

    let album = bot
        .send_media_group(
            chat,
            vec![
                InputMedia::Photo(
                    InputMediaPhoto::new(InputFile::memory(vec![1, 2, 3]).file_name("1.png"))
                        .caption("album"),
                ),
                InputMedia::Photo(InputMediaPhoto::new(InputFile::url(
                    "https://files.example/2.png".parse().expect("url"),
                ))),
                InputMedia::Photo(InputMediaPhoto::new(
                    InputFile::memory(vec![4, 5]).file_name("3.png"),
                )),
            ],
        )
        .await
        .expect("album");
    assert_eq!(album.len(), 3);
    assert!(album.iter().all(|m| m.media_group_id().is_some()));
    let sent = fake.sent_of("sendMediaGroup");
    assert_eq!(sent[0].message_ids.len(), 3);
    assert!(matches!(
        sent[0].media[0].source,
        MediaSource::Upload { size: 3, .. }
    ));
    assert!(matches!(sent[0].media[1].source, MediaSource::Url(ref u) if u.ends_with("2.png")));
    assert_eq!(sent[0].text.as_deref(), Some("album"));

    fake.reject_url_media(2);
    let err = bot
        .send_video(
            chat,
            InputFile::url("https://files.example/v.mp4".parse().expect("url")),
        )
        .await
        .expect_err("refused url");
    assert!(
        matches!(err, RequestError::Api(ApiError::FailedToGetUrlContent)),
        "{err:?}"
    );
    let err = bot
        .send_media_group(
            chat,
            vec![
                InputMedia::Photo(InputMediaPhoto::new(InputFile::url(
                    "https://files.example/1.png".parse().expect("url"),
                ))),
                InputMedia::Photo(InputMediaPhoto::new(InputFile::url(
                    "https://files.example/2.png".parse().expect("url"),
                ))),
            ],
        )
        .await
        .expect_err("refused album");
    assert!(
        format!("{err}").contains("failed to send message #1"),
        "{err}"
    );

    fake.set_upload_limit(3);
    let err = bot
        .send_audio(chat, InputFile::memory(vec![0; 4]).file_name("a.mp3"))
        .await
        .expect_err("413");
    assert!(
        matches!(err, RequestError::Api(ApiError::RequestEntityTooLarge)),
        "{err:?}"
    );

    let messages = fake.messages_to(9);
    assert_eq!(
        messages.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(fake.sent().len(), 4);

    // Media sent by URL parse as their own kinds in teloxide.
    let video = bot
        .send_video(
            chat,
            InputFile::url("https://files.example/v.mp4".parse().expect("url")),
        )
        .await
        .expect("video");
    assert!(video.video().is_some(), "{video:?}");
    let audio = bot
        .send_audio(
            chat,
            InputFile::url("https://files.example/a.mp3".parse().expect("url")),
        )
        .await
        .expect("audio");
    assert_eq!(
        audio.audio().and_then(|a| a.file_name.as_deref()),
        Some("a.mp3")
    );
}

#[tokio::test]
async fn long_texts_and_oversized_callback_data_are_refused_like_telegram() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let err = bot
        .send_message(ChatId(3), "x".repeat(4097))
        .await
        .expect_err("too long");
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageIsTooLong)),
        "{err:?}"
    );
    bot.send_message(ChatId(3), "x".repeat(4096))
        .await
        .expect("exactly the limit");
    let err = bot
        .send_message(ChatId(3), "k")
        .reply_markup(keyboard(&"d".repeat(65)))
        .await
        .expect_err("data");
    assert!(
        matches!(err, RequestError::Api(ApiError::ButtonDataInvalid)),
        "{err:?}"
    );
}

#[tokio::test]
async fn stars_invoices_pre_checkout_answers_and_refunds_are_recorded() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let invoice = bot
        .send_invoice(
            ChatId(11),
            "Top up",
            "100 stars",
            "topup:100",
            "XTR",
            vec![LabeledPrice::new("Stars", 100)],
        )
        .await
        .expect("invoice");
    assert_eq!(invoice.invoice().expect("invoice").total_amount, 100);

    let q = fake.pre_checkout(11, "topup:100", "XTR", 100);
    let updates = bot.get_updates().await.expect("poll");
    let UpdateKind::PreCheckoutQuery(query) = &updates[0].kind else {
        panic!("pre-checkout")
    };
    assert_eq!(query.invoice_payload, "topup:100");
    bot.answer_pre_checkout_query(query.id.clone(), true)
        .await
        .expect("answer");
    assert_eq!(
        fake.pre_checkout_answers()[0].pre_checkout_query_id,
        q.to_string()
    );
    assert!(fake.pre_checkout_answers()[0].ok);

    fake.successful_payment(11, "topup:100", "charge-1", 100);
    let updates = bot
        .get_updates()
        .offset(i32::try_from(q).expect("small") + 1)
        .await
        .expect("poll");
    let UpdateKind::Message(m) = &updates[0].kind else {
        panic!("message")
    };
    let payment = m.successful_payment().expect("successful payment");
    assert_eq!(payment.telegram_payment_charge_id.0, "charge-1");
    assert_eq!(payment.total_amount, 100);

    bot.refund_star_payment(UserId(11), payment.telegram_payment_charge_id.clone())
        .await
        .expect("refund");
    let err = bot
        .refund_star_payment(UserId(11), payment.telegram_payment_charge_id.clone())
        .await
        .expect_err("refunded once");
    assert!(
        format!("{err}").contains("CHARGE_ALREADY_REFUNDED"),
        "{err}"
    );
    assert_eq!(fake.refunds().len(), 1);
    assert_eq!(fake.refunds()[0].user_id, 11);
}

#[tokio::test]
async fn set_my_commands_is_recorded() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    bot.set_my_commands(vec![teloxide::types::BotCommand::new("start", "Start")])
        .await
        .expect("set");
    let got = bot.get_my_commands().await.expect("get");
    assert_eq!(got[0].command, "start");
    assert_eq!(fake.my_commands().len(), 1);
}

/// What a webhook receiver saw: the secret header and the update, per call.
type Seen = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

/// A webhook receiver that answers 500 to its first request, then 200.
async fn webhook_receiver() -> (String, Seen) {
    use axum::http::{HeaderMap, StatusCode};
    let seen: Seen = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = Arc::clone(&seen);
            move |headers: HeaderMap, axum::Json(body): axum::Json<serde_json::Value>| {
                let seen = Arc::clone(&seen);
                let calls = Arc::clone(&calls);
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let secret = headers
                        .get("x-telegram-bot-api-secret-token")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.lock().expect("lock").push((secret, body));
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn a_webhook_receives_updates_in_order_with_the_secret_header() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let (url, seen) = webhook_receiver().await;
    bot.set_webhook(url.parse().expect("url"))
        .secret_token("s3cr3t_token")
        .await
        .expect("setWebhook");
    assert_eq!(
        fake.webhook().expect("set").secret_token.as_deref(),
        Some("s3cr3t_token")
    );

    let a = fake.send_text(21, "one");
    let b = fake.press_button(21, 1, "v1:x");
    fake.wait_for(|tg| tg.pending_updates() == 0, 5 * SECOND)
        .await
        .expect("delivered");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "the 500 was retried, nothing duplicated");
    assert!(
        seen.iter()
            .all(|(secret, _)| secret.as_deref() == Some("s3cr3t_token"))
    );
    assert_eq!(seen[0].1["update_id"], a);
    assert_eq!(seen[0].1["message"]["text"], "one");
    assert_eq!(seen[1].1["update_id"], b);
    assert_eq!(seen[1].1["callback_query"]["data"], "v1:x");

    let err = bot
        .get_updates()
        .await
        .expect_err("polling while a webhook is set");
    assert!(format!("{err}").contains("webhook is active"), "{err}");
    bot.delete_webhook().await.expect("deleteWebhook");
    assert!(fake.webhook().is_none());
    fake.send_text(21, "polled");
    assert_eq!(bot.get_updates().await.expect("poll").len(), 1);
}

#[tokio::test]
async fn concurrent_sends_get_unique_consecutive_message_ids() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let bot = bot.clone();
        tasks.push(tokio::spawn(async move {
            bot.send_message(ChatId(77 + i % 2), format!("m{i}")).await
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("send");
    }
    for chat in [77, 78] {
        let ids: Vec<i32> = fake
            .messages_to(chat)
            .iter()
            .map(|m| m.message_id)
            .collect();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    }
    assert_eq!(fake.call_count("sendMessage"), 200);
}

#[tokio::test]
async fn wait_for_times_out_with_a_list_of_what_was_seen() {
    let fake = FakeTelegram::start().await;
    bot(&fake)
        .send_message(ChatId(1), "only this")
        .await
        .expect("send");
    let err = fake
        .wait_for(
            |tg| tg.sent_of("sendPhoto").len() == 1,
            Duration::from_millis(200),
        )
        .await
        .expect_err("no photo");
    assert!(format!("{err:?}").contains("only this"));
    let call = fake
        .wait_for_call(|c| c.method == "sendMessage", SECOND)
        .await
        .expect("found");
    assert_eq!(call.text.as_deref(), Some("only this"));
}

#[tokio::test]
async fn star_transactions_list_payments_and_refunds_page_by_page() {
    use teloxide::payloads::GetStarTransactionsSetters;
    use teloxide::types::{TelegramTransactionId, TransactionPartner};

    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    for i in 0..120 {
        fake.register_charge(7, "p", &format!("c{i}"), 5);
    }
    fake.successful_payment(7, "p", "c-update", 5);
    fake.successful_payment(7, "p", "c-update", 5); // listed once
    let first = bot.get_star_transactions().limit(100).await.unwrap();
    let rest = bot
        .get_star_transactions()
        .offset(100)
        .limit(100)
        .await
        .unwrap();
    assert_eq!(first.transactions.len(), 100);
    assert_eq!(rest.transactions.len(), 21);
    assert_eq!(first.transactions[0].id.0, "c0");
    assert!(matches!(
        first.transactions[0].source,
        Some(TransactionPartner::User(_))
    ));

    // A refund whose answer is lost still happened, and is listed.
    fake.drop_reply_next("refundStarPayment", 1);
    let lost = bot
        .refund_star_payment(UserId(7), TelegramTransactionId("c3".into()))
        .await;
    assert!(matches!(lost, Err(RequestError::Network(_))), "{lost:?}");
    assert_eq!(fake.refunds().len(), 1);
    let again = bot
        .refund_star_payment(UserId(7), TelegramTransactionId("c3".into()))
        .await;
    assert!(
        matches!(&again, Err(e) if e.to_string().contains("CHARGE_ALREADY_REFUNDED")),
        "{again:?}"
    );
    assert!(fake.refund_outside_the_bot("c4"));
    assert!(!fake.refund_outside_the_bot("c4"));
    let all = bot
        .get_star_transactions()
        .offset(100)
        .limit(100)
        .await
        .unwrap();
    let refunds: Vec<&str> = all
        .transactions
        .iter()
        .filter(|t| t.receiver.is_some())
        .map(|t| t.id.0.as_str())
        .collect();
    assert_eq!(refunds, ["c3", "c4"]);
}
