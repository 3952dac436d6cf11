//! Random and mutated updates through the real router (`handle_update`)
//! against the fake Bot API: text, commands, wizard input, button presses
//! (harvested from what the bot showed, mutated, or made up), files of any
//! size, payments with arbitrary payloads, and update shapes the bot does
//! not handle. Generated with proptest's strategies from a fixed seed.
//!
//! Checked: nothing panics (a panic in a handler fails the run), and every
//! callback query is answered.
//!
//! Shared by the `router_fuzz` test (a size that keeps the suite quick) and
//! the `router_fuzz` bench (100,000 updates by default).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use teloxide::types::Update;

use crate::common::{App, Options};

/// What a simulated user does next.
#[derive(Debug, Clone)]
pub enum Act {
    /// Free text (a prompt, a number, junk).
    Text(String),
    /// A command with an optional argument.
    Command(&'static str, Option<String>),
    /// Presses the `pick`-th button the bot showed last (mutating its data
    /// when `mutate` is set).
    Press {
        pick: usize,
        mutate: Option<Mutation>,
    },
    /// Presses a button that never existed.
    PressRaw(String),
    /// A press with no message (inline mode) or without data (a game).
    PressOdd { no_message: bool },
    /// A photo of `size` bytes.
    Photo(u64),
    /// A document.
    Document {
        size: u64,
        mime: &'static str,
        name: String,
    },
    /// A voice note.
    Voice(u64),
    /// Telegram asks to approve a payment with this payload.
    PreCheckout { payload: String, amount: u32 },
    /// A payment went through with this payload.
    Payment { payload: String, amount: u32 },
    /// An update kind the bot does not handle.
    Other(u8),
}

/// How a real button's data is changed.
#[derive(Debug, Clone)]
pub enum Mutation {
    Truncate(usize),
    Append(String),
    FlipByte(usize),
}

const COMMANDS: &[&str] = &[
    "/start",
    "/menu",
    "/help",
    "/balance",
    "/history",
    "/promo",
    "/language",
    "/cancel",
    "/topup",
    "/admin",
    "/stats",
    "/start ref_",
    "/models",
];

const MIMES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "video/mp4",
    "audio/mpeg",
    "application/pdf",
    "application/octet-stream",
    "",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,60}",
        2 => "-?[0-9]{1,12}(\\.[0-9]{0,6})?",
        1 => "[a-z ]{0,20}",
        1 => proptest::collection::vec(any::<char>(), 0..40).prop_map(|v| v.into_iter().collect()),
        1 => (4000usize..5000).prop_map(|n| "x".repeat(n)),
        1 => Just(String::new()),
    ]
}

fn file_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..20_000_000,
        1 => 20_000_000u64..4_000_000_000,
        1 => Just(0u64),
        1 => Just(u64::from(u32::MAX)),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => text().prop_map(Act::Text),
        3 => (0..COMMANDS.len(), proptest::option::of("\\PC{0,30}"))
            .prop_map(|(i, a)| Act::Command(COMMANDS[i], a)),
        8 => (any::<usize>(), proptest::option::weighted(0.3, prop_oneof![
                (0usize..64).prop_map(Mutation::Truncate),
                "[:a-z0-9]{1,8}".prop_map(Mutation::Append),
                (0usize..64).prop_map(Mutation::FlipByte),
            ]))
            .prop_map(|(pick, mutate)| Act::Press { pick, mutate }),
        2 => prop_oneof!["\\PC{0,64}", "[a-z]{1,3}:[a-z0-9:]{0,40}"].prop_map(Act::PressRaw),
        1 => any::<bool>().prop_map(|no_message| Act::PressOdd { no_message }),
        1 => file_size().prop_map(Act::Photo),
        1 => (file_size(), 0..MIMES.len(), "\\PC{0,20}\\.[a-z0-9]{0,4}")
            .prop_map(|(size, m, name)| Act::Document { size, mime: MIMES[m], name }),
        1 => file_size().prop_map(Act::Voice),
        1 => ("\\PC{0,40}|v1:[0-9]{1,4}:[0-9]{1,5}:[0-9a-f]{16}", 0u32..100_000)
            .prop_map(|(payload, amount)| Act::PreCheckout { payload, amount }),
        1 => ("\\PC{0,40}|v1:[0-9]{1,4}:[0-9]{1,5}:[0-9a-f]{16}", 0u32..100_000)
            .prop_map(|(payload, amount)| Act::Payment { payload, amount }),
        1 => (0u8..6).prop_map(Act::Other),
    ]
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub updates: usize,
    pub presses: usize,
    pub unparsed: usize,
    pub elapsed: Duration,
}

fn user(id: i64) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": "u", "language_code": if id % 2 == 0 { "en" } else { "ru" } })
}

fn chat(id: i64) -> Value {
    json!({ "id": id, "type": "private", "first_name": "u" })
}

fn message(uid: i64, extra: Value) -> Value {
    let mut m =
        json!({ "message_id": 1, "date": 1_700_000_000, "chat": chat(uid), "from": user(uid) });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

fn mutate(data: &str, m: &Mutation) -> String {
    let mut bytes = data.as_bytes().to_vec();
    match m {
        Mutation::Truncate(n) => bytes.truncate(*n % (bytes.len() + 1)),
        Mutation::Append(s) => bytes.extend_from_slice(s.as_bytes()),
        Mutation::FlipByte(i) => {
            if !bytes.is_empty() {
                let i = i % bytes.len();
                bytes[i] = bytes[i].wrapping_add(1);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Builds the update JSON for `act` by `uid`; `Some(id)` of the callback
/// query when it is a press that must be answered.
fn build(app: &App, uid: i64, act: &Act, next: &AtomicI64) -> (Value, Option<String>) {
    let update_id = next.fetch_add(1, Ordering::Relaxed);
    let file = |n: i64| format!("fuzz-file-{n}");
    let cq = |data: Option<String>, message_id: Option<i32>| {
        let id = format!("cq{update_id}");
        app.tg.open_callback(&id);
        let mut q = json!({ "id": id, "from": user(uid), "chat_instance": "fuzz" });
        match message_id {
            Some(mid) => {
                q["message"] = json!({ "message_id": mid, "date": 1_700_000_000, "chat": chat(uid), "from": { "id": 1, "is_bot": true, "first_name": "bot" }, "text": "x" });
            }
            None => q["inline_message_id"] = json!("inline-1"),
        }
        if let Some(d) = data {
            q["data"] = json!(d);
        } else {
            q["game_short_name"] = json!("game");
        }
        (
            json!({ "update_id": update_id, "callback_query": q }),
            Some(id),
        )
    };
    match act {
        Act::Text(t) => (
            json!({ "update_id": update_id, "message": message(uid, json!({ "text": t })) }),
            None,
        ),
        Act::Command(c, arg) => {
            let text = match arg {
                Some(a) => format!("{c} {a}"),
                None => (*c).to_owned(),
            };
            let len = c.split(' ').next().unwrap_or(c).encode_utf16().count();
            (
                json!({ "update_id": update_id, "message": message(uid, json!({
                    "text": text,
                    "entities": [{ "type": "bot_command", "offset": 0, "length": len }],
                })) }),
                None,
            )
        }
        Act::Press { pick, mutate: m } => {
            let shown = app.tg.last_keyboard(uid).and_then(|(mid, kb)| {
                let datas: Vec<String> = kb["inline_keyboard"]
                    .as_array()?
                    .iter()
                    .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                    .filter_map(|b| b["callback_data"].as_str().map(str::to_owned))
                    .collect();
                (!datas.is_empty()).then(|| (mid, datas[pick % datas.len()].clone()))
            });
            match shown {
                Some((mid, data)) => {
                    let data = m.as_ref().map_or(data.clone(), |m| mutate(&data, m));
                    cq(Some(data), Some(mid))
                }
                None => cq(Some("m".to_owned()), Some(1)),
            }
        }
        Act::PressRaw(d) => cq(Some(d.clone()), Some(1 + (update_id % 7) as i32)),
        Act::PressOdd { no_message } => {
            if *no_message {
                cq(Some("m".to_owned()), None)
            } else {
                cq(None, Some(1))
            }
        }
        Act::Photo(size) => (
            json!({ "update_id": update_id, "message": message(uid, json!({ "photo": [
                { "file_id": file(update_id), "file_unique_id": file(update_id), "width": 90, "height": 90, "file_size": size / 10 },
                { "file_id": file(update_id), "file_unique_id": file(update_id), "width": 1280, "height": 1280, "file_size": size },
            ] })) }),
            None,
        ),
        Act::Document { size, mime, name } => (
            json!({ "update_id": update_id, "message": message(uid, json!({ "document": {
                "file_id": file(update_id), "file_unique_id": file(update_id),
                "file_name": name, "mime_type": mime, "file_size": size,
            } })) }),
            None,
        ),
        Act::Voice(size) => (
            json!({ "update_id": update_id, "message": message(uid, json!({ "voice": {
                "file_id": file(update_id), "file_unique_id": file(update_id),
                "duration": 3, "mime_type": "audio/ogg", "file_size": size,
            } })) }),
            None,
        ),
        Act::PreCheckout { payload, amount } => (
            json!({ "update_id": update_id, "pre_checkout_query": {
                "id": format!("pcq{update_id}"), "from": user(uid), "currency": "XTR",
                "total_amount": amount, "invoice_payload": payload,
            } }),
            None,
        ),
        Act::Payment { payload, amount } => (
            json!({ "update_id": update_id, "message": message(uid, json!({ "successful_payment": {
                "currency": "XTR", "total_amount": amount, "invoice_payload": payload,
                "telegram_payment_charge_id": format!("fuzz-charge-{update_id}"),
                "provider_payment_charge_id": "",
            } })) }),
            None,
        ),
        Act::Other(k) => {
            let v = match k {
                0 => {
                    json!({ "update_id": update_id, "edited_message": message(uid, json!({ "text": "edited", "edit_date": 1 })) })
                }
                1 => {
                    json!({ "update_id": update_id, "channel_post": { "message_id": 1, "date": 1, "chat": { "id": -100, "type": "channel", "title": "c" }, "text": "post" } })
                }
                2 => {
                    json!({ "update_id": update_id, "inline_query": { "id": "iq", "from": user(uid), "query": "q", "offset": "" } })
                }
                3 => {
                    json!({ "update_id": update_id, "message": { "message_id": 1, "date": 1, "chat": { "id": -5, "type": "group", "title": "g" }, "from": user(uid), "text": "/start" } })
                }
                // Shapes that are not updates at all: a webhook would ignore them.
                4 => json!({ "update_id": update_id, "message": { "text": "no chat" } }),
                _ => json!({ "update_id": update_id, "callback_query": { "id": 5 } }),
            };
            (v, None)
        }
    }
}

/// Runs `n` generated updates from `seed` through `handle_update`, across
/// `lanes` concurrent lanes of `users_per_lane` users each, and checks that
/// every callback query was answered.
pub async fn run(n: usize, seed: u64, lanes: usize, users_per_lane: i64) -> Report {
    let app = Arc::new(
        App::with(Options {
            // The scripted users press faster than any person.
            flood: kiebot_bot::FloodConfig::off(),
            ..Options::default()
        })
        .await,
    );
    let mut events = app.tg.call_events();
    let next = Arc::new(AtomicI64::new(1));
    let started = Instant::now();
    let per_lane = n.div_ceil(lanes);
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let app = Arc::clone(&app);
        let next = Arc::clone(&next);
        let todo = per_lane.min(n.saturating_sub(lane * per_lane));
        tasks.push(tokio::spawn(async move {
            // Generated before the first await: proptest's strategies are
            // not `Send`.
            let acts: Vec<(i64, Act)> = {
                let mut seed_bytes = [0u8; 32];
                seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
                seed_bytes[8..16].copy_from_slice(&(lane as u64).to_le_bytes());
                let mut runner = TestRunner::new_with_rng(
                    Config::default(),
                    TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
                );
                let strategy = (0..users_per_lane, act());
                (0..todo)
                    .map(|_| strategy.new_tree(&mut runner).unwrap().current())
                    .collect()
            };
            let base = 10_000 + lane as i64 * 1000;
            let mut report = Report::default();
            let mut pressed = Vec::new();
            for (u, act) in acts {
                let uid = base + u;
                let (json, cq) = build(&app, uid, &act, &next);
                report.updates += 1;
                // Parsed from text, as teloxide reads updates off the wire
                // (from a `Value` some kinds come out as errors).
                match serde_json::from_str::<Update>(&json.to_string()) {
                    Ok(update) => {
                        kiebot_bot::handle_update(&app.deps, update).await;
                        if let Some(id) = cq {
                            pressed.push((id, format!("{act:?}")));
                        }
                    }
                    Err(_) => report.unparsed += 1,
                }
            }
            report.presses = pressed.len();
            (report, pressed)
        }));
    }
    let mut report = Report::default();
    let mut pressed: HashMap<String, String> = HashMap::new();
    for t in tasks {
        // A panic in a handler surfaces here.
        let (r, p) = t.await.expect("a lane panicked");
        report.updates += r.updates;
        report.presses += r.presses;
        report.unparsed += r.unparsed;
        pressed.extend(p);
    }
    report.elapsed = started.elapsed();
    // Every press was answered (the answers are in before handle_update
    // returns; the events are read with a deadline all the same).
    let mut answered: HashMap<String, usize> = HashMap::new();
    let mut refused_answers = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while let Ok(e) = events.try_recv() {
            match (e.callback_query_id, e.ok) {
                (Some(id), true) => *answered.entry(id).or_default() += 1,
                // Telegram refuses a second answer to the same press.
                (Some(_), false) => refused_answers += 1,
                _ => {}
            }
        }
        if pressed.keys().all(|id| answered.contains_key(id)) {
            assert_eq!(refused_answers, 0, "a press was answered twice");
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<_> = pressed
                .iter()
                .filter(|(id, _)| !answered.contains_key(*id))
                .collect();
            panic!(
                "calls {:?}: {} of {} callback queries never answered ({} answers seen), e.g. {:?}",
                app.tg.call_counts(),
                missing.len(),
                pressed.len(),
                answered.len(),
                &missing[..missing.len().min(8)]
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report
}
