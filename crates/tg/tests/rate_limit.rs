//! The delivery limiters: in process (on a paused clock) and in Redis (real
//! Redis at `TEST_REDIS_URL`, default `redis://127.0.0.1:6379`, under a random
//! key prefix removed afterwards).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiebot_tg::rate_limit::{
    Admission, DeliveryLimiter, InProcessLimiter, LimiterConfig, RedisLimiter,
};
use teloxide::types::ChatId;

fn config(global_per_second: u32, per_chat_burst: u32) -> LimiterConfig {
    LimiterConfig {
        global_per_second,
        per_chat_interval: Duration::from_secs(1),
        per_chat_burst,
    }
}

// ----- in process ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_in_process_limiter_admits_at_most_the_global_rate() {
    let limiter = Arc::new(InProcessLimiter::new(config(5, 100)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for chat in 0..20 {
        let limiter = Arc::clone(&limiter);
        tasks.push(tokio::spawn(async move {
            limiter.acquire(ChatId(chat)).await;
            start.elapsed()
        }));
    }
    let mut times = Vec::new();
    for task in tasks {
        times.push(task.await.expect("join"));
    }
    times.sort();
    // A bucket of 5 refilled at 5/s: by time t at most 5 + 5t admissions.
    for (i, t) in times.iter().enumerate() {
        let allowed = 5.0 + 5.0 * t.as_secs_f64() + 1e-6;
        assert!((i + 1) as f64 <= allowed, "admission #{} at {t:?}", i + 1);
    }
    assert!(times[19] >= Duration::from_secs(3), "{:?}", times[19]);
    assert!(times[19] < Duration::from_secs(4), "{:?}", times[19]);
}

#[tokio::test(start_paused = true)]
async fn the_in_process_limiter_spaces_messages_to_one_chat_after_a_small_burst() {
    let limiter = InProcessLimiter::new(config(25, 3));
    let start = tokio::time::Instant::now();
    let mut times = Vec::new();
    for _ in 0..5 {
        limiter.acquire(ChatId(1)).await;
        times.push(start.elapsed());
    }
    assert!(
        times[2] < Duration::from_millis(10),
        "the burst of 3 goes at once: {times:?}"
    );
    assert!(
        times[3] >= Duration::from_millis(999) && times[4] >= Duration::from_millis(1999),
        "{times:?}"
    );
    assert_eq!(
        limiter.try_acquire(ChatId(2)),
        Admission::Admitted,
        "other chats are not held up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_noted_retry_after_pauses_every_chat_of_the_in_process_limiter() {
    let limiter = InProcessLimiter::default();
    limiter.note_retry_after(None, Duration::from_secs(2)).await;
    limiter
        .note_retry_after(None, Duration::from_millis(500))
        .await;
    assert!(
        matches!(limiter.try_acquire(ChatId(9)), Admission::Wait(w) if w > Duration::from_millis(1900))
    );
    let start = tokio::time::Instant::now();
    limiter.acquire(ChatId(9)).await;
    assert!(start.elapsed() >= Duration::from_secs(2));

    limiter
        .note_retry_after(Some(ChatId(9)), Duration::from_secs(1))
        .await;
    assert!(matches!(limiter.try_acquire(ChatId(9)), Admission::Wait(_)));
    assert_eq!(limiter.try_acquire(ChatId(10)), Admission::Admitted);
}

// ----- Redis -----------------------------------------------------------------

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Two limiters sharing one fresh prefix, as two workers would.
async fn two_workers(config: LimiterConfig) -> (RedisLimiter, RedisLimiter) {
    let prefix = format!("kiebot-test:{:016x}", rand::random::<u64>());
    let a = RedisLimiter::connect(&redis_url(), &prefix, config)
        .await
        .expect("Redis reachable at TEST_REDIS_URL (default redis://127.0.0.1:6379)");
    let b = RedisLimiter::connect(&redis_url(), &prefix, config)
        .await
        .expect("Redis");
    (a, b)
}

/// Deletes every key under the limiter's prefix.
async fn clean_up(limiter: &RedisLimiter) {
    let client = redis::Client::open(redis_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let pattern = format!("{}*", limiter.key_prefix());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
}

/// Sleeps until early in a fresh one-second window, so a handful of calls
/// all land in the same window.
async fn start_of_a_window() {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        % 1000;
    tokio::time::sleep(Duration::from_millis(
        1005 - u64::try_from(ms).expect("small"),
    ))
    .await;
}

#[tokio::test]
async fn the_redis_limiter_admits_at_most_n_per_window_across_two_instances() {
    let (a, b) = two_workers(config(5, 100)).await;
    start_of_a_window().await;
    let mut admitted = 0;
    let mut waits = Vec::new();
    for i in 0..8 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        match limiter.try_acquire(ChatId(i)).await.expect("Redis") {
            Admission::Admitted => admitted += 1,
            Admission::Wait(wait) => waits.push(wait),
        }
    }
    clean_up(&a).await;
    assert_eq!(admitted, 5);
    assert_eq!(waits.len(), 3);
    assert!(
        waits.iter().all(|w| *w <= Duration::from_millis(1030)),
        "until the next window: {waits:?}"
    );
}

#[tokio::test]
async fn concurrent_acquires_through_redis_never_exceed_the_window_budget() {
    let (a, b) = two_workers(config(4, 100)).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for chat in 0..12 {
        let limiter = if chat % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(async move {
            limiter.acquire(ChatId(chat)).await;
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis()
                / 1000
        }));
    }
    let mut per_second = std::collections::BTreeMap::<u128, u32>::new();
    for task in tasks {
        *per_second.entry(task.await.expect("join")).or_default() += 1;
    }
    clean_up(&a).await;
    assert!(per_second.values().all(|n| *n <= 4), "{per_second:?}");
    assert!(per_second.len() >= 3, "{per_second:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_redis_limiter_allows_a_chat_its_burst_per_window() {
    let (a, b) = two_workers(config(100, 2)).await;
    start_of_a_window().await;
    let chat = ChatId(77);
    let first = a.try_acquire(chat).await.expect("Redis");
    let second = b.try_acquire(chat).await.expect("Redis");
    let third = a.try_acquire(chat).await.expect("Redis");
    let other = b.try_acquire(ChatId(78)).await.expect("Redis");
    clean_up(&a).await;
    assert_eq!(
        (first, second, other),
        (
            Admission::Admitted,
            Admission::Admitted,
            Admission::Admitted
        )
    );
    assert!(
        matches!(third, Admission::Wait(w) if w <= Duration::from_millis(2030)),
        "{third:?}"
    );
}

#[tokio::test]
async fn a_retry_after_noted_by_one_worker_pauses_the_other() {
    let (a, b) = two_workers(LimiterConfig::default()).await;
    a.note_retry_after(None, Duration::from_secs(2)).await;
    a.note_retry_after(None, Duration::from_millis(100)).await;
    let paused = b.try_acquire(ChatId(1)).await.expect("Redis");
    b.note_retry_after(Some(ChatId(5)), Duration::from_secs(3))
        .await;
    clean_up(&a).await;
    assert!(
        matches!(paused, Admission::Wait(w) if w > Duration::from_millis(1800) && w <= Duration::from_millis(2030)),
        "a shorter pause does not shorten a longer one: {paused:?}"
    );
}
