//! The fleet's gate against a real Redis (`TEST_REDIS_URL`), several
//! processes' worth of gates sharing one prefix.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiebot_kie_gate::{Admission, GateConfig, KieGate, RedisGate};

fn url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix() -> String {
    format!("test-gate-{:x}", rand::random::<u64>())
}

fn config() -> GateConfig {
    GateConfig {
        creates_per_window: 5,
        window: Duration::from_millis(400),
        margin: Duration::from_millis(50),
        polls_per_second: 20,
        poll_burst: 2,
    }
}

async fn gates(prefix: &str, n: usize) -> Vec<Arc<RedisGate>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(
            RedisGate::connect(&url(), prefix, config())
                .await
                .expect("Redis at TEST_REDIS_URL"),
        ));
    }
    out
}

async fn cleanup(prefix: &str) {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for k in ["creates", "pause", "line", "polls"] {
        let _: () = redis::cmd("DEL")
            .arg(format!("{{{prefix}}}:{k}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn three_processes_never_count_more_than_the_limit_in_any_window() {
    let prefix = prefix();
    let gates = gates(&prefix, 3).await;
    let mut tasks = Vec::new();
    let started = Instant::now();
    for g in &gates {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while started.elapsed() < Duration::from_millis(1500) {
                let grant = g.take_creates(2).await.unwrap();
                for _ in 0..grant.granted {
                    times.push(Instant::now());
                }
                if grant.granted < 2 {
                    tokio::time::sleep(grant.next_in.min(Duration::from_millis(50))).await;
                }
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    // KIE's window (400 ms): never more than 5 creates in it, counted at the
    // moment each process learnt it had a slot.
    for (i, start) in all.iter().enumerate() {
        let inside = all[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < config().window)
            .count();
        assert!(inside <= 5, "{inside} creates within one window");
    }
    // And the slots were used: about 5 per 450 ms over 1.5 s.
    assert!(all.len() >= 10, "only {} creates", all.len());
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_pause_and_the_line_are_seen_by_every_process() {
    let prefix = prefix();
    let gates = gates(&prefix, 2).await;
    gates[0]
        .mark_line(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(matches!(
        gates[1].admit_fresh().await.unwrap(),
        Admission::Wait(_)
    ));
    assert_eq!(gates[1].take_creates(1).await.unwrap().granted, 1);
    gates[1].pause(Duration::from_millis(300)).await.unwrap();
    let grant = gates[0].take_creates(3).await.unwrap();
    assert_eq!(grant.granted, 0);
    assert!(
        grant.next_in > Duration::from_millis(100),
        "{:?}",
        grant.next_in
    );
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(gates[0].admit_fresh().await.unwrap(), Admission::Go);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn given_back_slots_return_to_the_window() {
    let prefix = prefix();
    let gates = gates(&prefix, 1).await;
    assert_eq!(gates[0].take_creates(5).await.unwrap().granted, 5);
    assert_eq!(gates[0].take_creates(1).await.unwrap().granted, 0);
    assert_eq!(gates[0].creates_available().await.unwrap().granted, 0);
    gates[0].give_back(2).await.unwrap();
    assert_eq!(gates[0].creates_available().await.unwrap().granted, 2);
    assert_eq!(gates[0].take_creates(5).await.unwrap().granted, 2);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn polls_never_exceed_rate_plus_burst_in_a_second() {
    let prefix = prefix();
    let gates = gates(&prefix, 2).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for g in &gates {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while started.elapsed() < Duration::from_millis(1200) {
                match g.take_poll().await.unwrap() {
                    Admission::Go => times.push(Instant::now()),
                    Admission::Wait(d) => tokio::time::sleep(d).await,
                }
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    for (i, start) in all.iter().enumerate() {
        let inside = all[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        // 20 per second plus a burst of 2; one more for the gap between
        // Redis's clock and ours when the results were stamped.
        assert!(inside <= 23, "{inside} polls within one second");
    }
    assert!(all.len() >= 15, "only {} polls", all.len());
    cleanup(&prefix).await;
}
