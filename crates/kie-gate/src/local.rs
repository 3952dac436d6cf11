//! The gate of one process (the embedded mode).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::{Admission, GateConfig, GateError, Grant, KieGate};

/// A [`KieGate`] in memory. Clones of an `Arc` of it share one count.
#[derive(Debug)]
pub struct LocalGate {
    config: GateConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When each create in the window was counted, oldest first.
    creates: VecDeque<Instant>,
    paused_until: Option<Instant>,
    line_until: Option<Instant>,
    tokens: f64,
    refilled_at: Instant,
}

impl LocalGate {
    /// A gate keeping `config`.
    pub fn new(config: GateConfig) -> Self {
        LocalGate {
            config,
            state: Mutex::new(State {
                creates: VecDeque::new(),
                paused_until: None,
                line_until: None,
                tokens: f64::from(config.poll_burst.max(1)),
                refilled_at: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The creates counted in the window now.
    pub fn creates_in_window(&self) -> usize {
        let mut s = self.lock();
        self.expire(&mut s, Instant::now());
        s.creates.len()
    }

    fn expire(&self, s: &mut State, now: Instant) {
        let window = self.config.counted_window();
        while s
            .creates
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            s.creates.pop_front();
        }
    }

    fn take(&self, n: u32, fresh: bool) -> Grant {
        let now = Instant::now();
        let mut s = self.lock();
        if let Some(until) = s.paused_until.filter(|u| *u > now) {
            return Grant {
                granted: 0,
                next_in: until - now,
            };
        }
        if fresh && let Some(until) = s.line_until.filter(|u| *u > now) {
            return Grant {
                granted: 0,
                next_in: (until - now).min(Duration::from_secs(1)),
            };
        }
        let (room, _) = self.room(&mut s, now);
        let granted = room.min(n as usize);
        for _ in 0..granted {
            s.creates.push_back(now);
        }
        let next_in = if granted < n as usize {
            self.room(&mut s, now).1
        } else {
            Duration::ZERO
        };
        Grant {
            granted: u32::try_from(granted).unwrap_or(u32::MAX),
            next_in,
        }
    }

    /// Free slots now, and how long until the oldest counted create leaves
    /// the window (the next slot frees then).
    fn room(&self, s: &mut State, now: Instant) -> (usize, Duration) {
        self.expire(s, now);
        let limit = self.config.creates_per_window as usize;
        let room = limit.saturating_sub(s.creates.len());
        let next_in = s.creates.front().map_or(Duration::ZERO, |oldest| {
            self.config
                .counted_window()
                .saturating_sub(now.duration_since(*oldest))
        });
        (room, next_in)
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let rate = f64::from(self.config.polls_per_second.max(1));
        let burst = f64::from(self.config.poll_burst.max(1));
        let elapsed = now.duration_since(s.refilled_at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * rate).min(burst);
        s.refilled_at = now;
    }
}

impl KieGate for LocalGate {
    fn take_creates(&self, n: u32) -> BoxFuture<'_, Result<Grant, GateError>> {
        let grant = self.take(n, false);
        async move { Ok(grant) }.boxed()
    }

    fn creates_available(&self) -> BoxFuture<'_, Result<Grant, GateError>> {
        let grant = {
            let now = Instant::now();
            let mut s = self.lock();
            if let Some(until) = s.paused_until.filter(|u| *u > now) {
                Grant {
                    granted: 0,
                    next_in: until - now,
                }
            } else {
                let (room, next) = self.room(&mut s, now);
                let next_in = if room == 0 { next } else { Duration::ZERO };
                Grant {
                    granted: u32::try_from(room).unwrap_or(u32::MAX),
                    next_in,
                }
            }
        };
        async move { Ok(grant) }.boxed()
    }

    fn admit_fresh(&self) -> BoxFuture<'_, Result<Admission, GateError>> {
        let grant = self.take(1, true);
        async move {
            Ok(if grant.granted == 1 {
                Admission::Go
            } else {
                Admission::Wait(grant.next_in)
            })
        }
        .boxed()
    }

    fn give_back(&self, n: u32) -> BoxFuture<'_, Result<(), GateError>> {
        {
            let mut s = self.lock();
            for _ in 0..n {
                s.creates.pop_back();
            }
        }
        async { Ok(()) }.boxed()
    }

    fn mark_line(&self, for_: Duration) -> BoxFuture<'_, Result<(), GateError>> {
        {
            let until = Instant::now() + for_;
            let mut s = self.lock();
            s.line_until = Some(s.line_until.map_or(until, |u| u.max(until)));
        }
        async { Ok(()) }.boxed()
    }

    fn pause(&self, for_: Duration) -> BoxFuture<'_, Result<(), GateError>> {
        {
            let until = Instant::now() + for_;
            let mut s = self.lock();
            s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
        }
        async { Ok(()) }.boxed()
    }

    fn take_poll(&self) -> BoxFuture<'_, Result<Admission, GateError>> {
        let answer = {
            let now = Instant::now();
            let mut s = self.lock();
            self.refill(&mut s, now);
            if s.tokens >= 1.0 {
                s.tokens -= 1.0;
                Admission::Go
            } else {
                let rate = f64::from(self.config.polls_per_second.max(1));
                Admission::Wait(Duration::from_secs_f64((1.0 - s.tokens) / rate))
            }
        };
        async move { Ok(answer) }.boxed()
    }

    fn polls_available(&self) -> BoxFuture<'_, Result<u32, GateError>> {
        let n = {
            let now = Instant::now();
            let mut s = self.lock();
            self.refill(&mut s, now);
            s.tokens.floor() as u32
        };
        async move { Ok(n) }.boxed()
    }

    fn config(&self) -> GateConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GateConfig {
        GateConfig {
            creates_per_window: 3,
            window: Duration::from_millis(200),
            margin: Duration::from_millis(20),
            polls_per_second: 50,
            poll_burst: 2,
        }
    }

    #[tokio::test]
    async fn a_full_window_grants_what_is_left_and_says_when_more_frees() {
        let g = LocalGate::new(small());
        let first = g.take_creates(2).await.unwrap();
        assert_eq!(first.granted, 2);
        let second = g.take_creates(5).await.unwrap();
        assert_eq!(second.granted, 1);
        assert!(second.next_in > Duration::ZERO && second.next_in <= small().counted_window());
        assert_eq!(g.take_creates(1).await.unwrap().granted, 0);
        tokio::time::sleep(second.next_in + Duration::from_millis(5)).await;
        assert_eq!(g.take_creates(5).await.unwrap().granted, 3);
    }

    #[tokio::test]
    async fn fresh_creates_queue_behind_a_marked_line_and_a_pause_stops_all() {
        let g = LocalGate::new(small());
        g.mark_line(Duration::from_millis(100)).await.unwrap();
        assert!(matches!(g.admit_fresh().await.unwrap(), Admission::Wait(_)));
        assert_eq!(
            g.take_creates(1).await.unwrap().granted,
            1,
            "the dispatcher still goes"
        );
        g.pause(Duration::from_millis(100)).await.unwrap();
        assert_eq!(g.take_creates(1).await.unwrap().granted, 0);
        tokio::time::sleep(Duration::from_millis(110)).await;
        assert_eq!(g.admit_fresh().await.unwrap(), Admission::Go);
    }

    #[tokio::test]
    async fn given_back_slots_are_free_again() {
        let g = LocalGate::new(small());
        assert_eq!(g.take_creates(3).await.unwrap().granted, 3);
        g.give_back(2).await.unwrap();
        assert_eq!(g.creates_in_window(), 1);
        assert_eq!(g.take_creates(3).await.unwrap().granted, 2);
    }

    #[tokio::test]
    async fn polls_come_at_the_rate_after_the_burst() {
        let g = LocalGate::new(small());
        assert_eq!(g.polls_available().await.unwrap(), 2);
        assert_eq!(g.take_poll().await.unwrap(), Admission::Go);
        assert_eq!(g.take_poll().await.unwrap(), Admission::Go);
        let Admission::Wait(wait) = g.take_poll().await.unwrap() else {
            panic!("the burst is spent")
        };
        assert!(wait <= Duration::from_millis(20), "{wait:?}");
        tokio::time::sleep(wait + Duration::from_millis(2)).await;
        assert_eq!(g.take_poll().await.unwrap(), Admission::Go);
    }
}
