//! Long polling: getUpdates in a loop, updates handled concurrently across
//! chats and in order within each chat.
//!
//! Every chat has a lane (a task fed by a channel) while it has updates in
//! hand, so the loop fetches the next batch as soon as the current one is
//! handed out: a slow handler (an upload, a payment) holds up only its own
//! chat, never the whole bot. A bound on updates in hand keeps a flood from
//! growing memory: the loop stops fetching until lanes catch up.
//!
//! A batch's update ids are recorded (the de-duplication write) while the
//! next getUpdates is already waiting, so an update that arrives during the
//! write is fetched at once rather than after it. That fetch acknowledges
//! the batch to Telegram before its record is committed; the record is then
//! retried until it succeeds, and nothing of the batch is handled before.
//! Handling stays at most once: a crash in that moment loses the batch, as a
//! crash loses any update recorded but not yet handled.
//!
//! Payments are the exception, handled at least once: a batch holding a
//! `pre_checkout_query` or a `successful_payment` is not acknowledged (no
//! getUpdates passes its offset) before those are handled, each tried again
//! with backoff until its handler succeeds (a `successful_payment` until it
//! is credited; a pre-checkout only while Telegram still waits for the
//! answer). A stopping bot keeps trying for the drain time; a crash, or a
//! payment still not credited then, leaves the batch with Telegram, which
//! delivers it again to the next process, where the credit, keyed by the
//! charge id, applies at most once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiebot_domain::UserId;
use kiebot_store::now_ms;
use teloxide::prelude::*;
use teloxide::types::{Update, UpdateKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{BotDeps, Prefetched, dispatch, watch_broadcasts};

/// How long Telegram may hold an empty getUpdates. It must stay under the
/// Bot API client's own request timeout (teloxide's default client gives up
/// after 17 s): a longer hold makes every quiet poll end in a client timeout,
/// a warning and a retry pause during which no update is fetched.
const LONG_POLL_SECS: u32 = 10;

/// Updates fetched but not yet handled, across all chats. Telegram keeps the
/// rest for us until we ask again.
const IN_HAND: usize = 2_000;

/// A lane with nothing to do for this long is closed (its task ends).
const LANE_IDLE: Duration = Duration::from_secs(60);

/// How often idle lanes are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long a stopping bot waits for lanes to finish what they hold.
const DRAIN: Duration = Duration::from_secs(20);

/// How long a pre-checkout is tried: Telegram waits 10 s for the answer.
const PRE_CHECKOUT_PATIENCE: Duration = Duration::from_secs(8);

/// The longest pause between two tries of a payment.
const PAYMENT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Long polling until `shutdown` resolves.
pub async fn run_polling(deps: BotDeps, shutdown: impl Future<Output = ()>) {
    let deps = Arc::new(deps);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut offset: i32 = 0;
    // A broadcast interrupted by the last shutdown (or left by a process
    // that died) continues here unless another process holds it.
    let (stop_broadcasts, broadcasts_stopped) = tokio::sync::oneshot::channel::<()>();
    let broadcasts = tokio::spawn(watch_broadcasts((*deps).clone(), async {
        let _ = broadcasts_stopped.await;
    }));
    // A webhook left over from another mode would make getUpdates fail.
    if let Err(e) = deps.bot.delete_webhook().await {
        tracing::warn!(error = %e, "deleteWebhook failed");
    }
    let in_hand = Arc::new(Semaphore::new(IN_HAND));
    let mut lanes = Lanes::default();
    // The batch fetched last, being recorded while the next one is fetched.
    let mut recording: Option<Recording> = None;
    let mut stopping = false;
    while !stopping {
        let fetch = deps
            .bot
            .get_updates()
            .offset(offset)
            .timeout(LONG_POLL_SECS)
            .allowed_updates(vec![])
            .send();
        let mut fetch = std::pin::pin!(fetch);
        let fetched = loop {
            let Some(batch) = recording.as_mut() else {
                break tokio::select! {
                    () = &mut shutdown => {
                        stopping = true;
                        None
                    }
                    r = &mut fetch => Some(r),
                };
            };
            tokio::select! {
                () = &mut shutdown => {
                    stopping = true;
                    break None;
                }
                recorded = batch => {
                    recording = None;
                    stopping = hand_out_batch(&mut lanes, &deps, recorded, &in_hand, Some(&mut shutdown)).await;
                    if stopping {
                        break None;
                    }
                }
                r = &mut fetch => break Some(r),
            }
        };
        // The next batch came first (or the bot is stopping): the one being
        // recorded was acknowledged by that fetch, so it is handed out now.
        if let Some(batch) = recording.take() {
            // Acknowledged already: waited for however long the record
            // takes (it retries until the database answers), unless the
            // bot is stopping.
            let recorded = if stopping {
                let Ok(recorded) = tokio::time::timeout(DRAIN, batch).await else {
                    tracing::error!("stopping while the database is away; a batch is dropped");
                    break;
                };
                recorded
            } else {
                batch.await
            };
            // Once `shutdown` has fired it must not be polled again.
            let watch = (!stopping).then_some(&mut shutdown);
            stopping |= hand_out_batch(&mut lanes, &deps, recorded, &in_hand, watch).await;
        }
        let Some(fetched) = fetched else { break };
        let updates = match fetched {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "getUpdates failed; retrying");
                if pause(&mut shutdown, Duration::from_secs(2)).await {
                    break;
                }
                continue;
            }
        };
        let Some(last) = updates.last() else {
            continue;
        };
        // Payments first, before the offset passes them: until then
        // Telegram keeps the batch and gives it to the next process.
        let mut done = HashSet::new();
        for u in updates.iter().filter(|u| crate::is_payment(u)) {
            match handle_payment(&deps, u, &mut shutdown).await {
                Payment::Handled => {}
                Payment::HandledStopping => stopping = true,
                Payment::Abandoned => {
                    tracing::warn!(
                        update_id = u.id.0,
                        "stopping with a payment not credited; Telegram delivers it again"
                    );
                    stopping = true;
                    break;
                }
            }
            done.insert(i64::from(u.id.0));
        }
        if stopping {
            // Not acknowledged: the whole batch comes again to the next
            // process (its payments credited once, by charge id).
            break;
        }
        offset = i32::try_from(last.id.0)
            .unwrap_or(i32::MAX)
            .saturating_add(1);
        // A flood is dropped here, before it is recorded or joins a lane.
        let updates = deps.flood.admit_batch(&deps, updates);
        // Recorded while the next getUpdates waits, so an update that
        // arrives meanwhile is fetched at once instead of after the write.
        // The readers are chosen now, after the previous batch was handed
        // out to its lanes.
        let readers = lanes.prefetchable(&updates);
        recording = Some(Box::pin(record(Arc::clone(&deps), updates, readers, done)));
        lanes.close_idle();
    }
    // Let the lanes finish what they hold; what is left after the drain
    // time is lost like an update in a crash (recorded, not handled).
    drop(lanes);
    let drained = tokio::time::timeout(
        DRAIN,
        in_hand.acquire_many(u32::try_from(IN_HAND).unwrap_or(u32::MAX)),
    )
    .await;
    if drained.is_err() {
        tracing::warn!("stopping with updates still being handled");
    }
    // A running broadcast stops before its next recipient and gives its
    // lease back, so the next process continues it at once.
    let _ = stop_broadcasts.send(());
    let _ = broadcasts.await;
    tracing::info!("polling stopped");
}

/// A fetched batch on its way to the lanes.
type Recording = std::pin::Pin<Box<dyn Future<Output = Recorded> + Send>>;

/// A batch whose update ids are recorded.
struct Recorded {
    updates: Vec<Update>,
    /// Per update, the sender read ahead for it (see [`Lanes::prefetchable`]).
    readers: Vec<Option<UserId>>,
    /// The ids seen for the first time.
    fresh: HashSet<i64>,
    /// The readers' users and dialogues; `None` when the read failed.
    read: Option<HashMap<UserId, (kiebot_store::User, Option<String>)>>,
    /// Payments handled before the batch was acknowledged.
    done: HashSet<i64>,
}

/// Records a batch's update ids in one write; a redelivered update (this
/// process or another one handled it before a crash) is dropped here. The
/// senders' users and dialogues are read meanwhile, in one query, so their
/// handlers need not read them one by one.
///
/// The batch is already acknowledged to Telegram by the fetch of the next
/// one, so a failed write is tried again until it succeeds: the batch will
/// not be delivered again.
async fn record(
    deps: Arc<BotDeps>,
    updates: Vec<Update>,
    readers: Vec<Option<UserId>>,
    done: HashSet<i64>,
) -> Recorded {
    let ids: Vec<i64> = updates.iter().map(|u| i64::from(u.id.0)).collect();
    let senders: Vec<UserId> = readers.iter().flatten().copied().collect();
    let write = async {
        let mut wait = Duration::from_millis(100);
        loop {
            match deps.store.updates().first_time_many(&ids).await {
                Ok(fresh) => break fresh.into_iter().collect::<HashSet<i64>>(),
                Err(e) => {
                    // Without the record a redelivery cannot be told from a
                    // new update, so nothing is handled before it.
                    tracing::error!(error = %e, "cannot record updates; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    };
    let read = async {
        if senders.is_empty() {
            return Some(HashMap::new());
        }
        // Without the read, each handler reads its own sender.
        deps.store
            .users()
            .get_with_dialogue_many(&senders, now_ms())
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "cannot read the batch's senders"))
            .ok()
    };
    let (fresh, read) = tokio::join!(write, read);
    Recorded {
        updates,
        readers,
        fresh,
        read,
        done,
    }
}

/// Hands a recorded batch's new updates to their lanes; `true` if
/// `shutdown` (when given) fired meanwhile: the rest of the batch is lost,
/// as in a crash.
async fn hand_out_batch<S: Future<Output = ()>>(
    lanes: &mut Lanes,
    deps: &Arc<BotDeps>,
    batch: Recorded,
    in_hand: &Arc<Semaphore>,
    mut shutdown: Option<&mut std::pin::Pin<&mut S>>,
) -> bool {
    let Recorded {
        updates,
        readers,
        fresh,
        mut read,
        done,
    } = batch;
    for (u, reader) in updates.into_iter().zip(readers) {
        if done.contains(&i64::from(u.id.0)) {
            continue;
        }
        if !fresh.contains(&i64::from(u.id.0)) {
            tracing::debug!(update_id = u.id.0, "duplicate update ignored");
            continue;
        }
        let pre = match (reader, read.as_mut()) {
            (Some(uid), Some(read)) => Prefetched::new(uid, read.remove(&uid)),
            _ => Prefetched::default(),
        };
        let permit = match shutdown.as_mut() {
            Some(shutdown) => tokio::select! {
                () = shutdown.as_mut() => None,
                p = Arc::clone(in_hand).acquire_owned() => p.ok(),
            },
            None => Arc::clone(in_hand).acquire_owned().await.ok(),
        };
        let Some(permit) = permit else {
            return true;
        };
        lanes.hand_out(deps, u, pre, permit);
    }
    false
}

/// How [`handle_payment`] ended.
enum Payment {
    Handled,
    /// Handled, and `shutdown` fired meanwhile (it must not be polled again).
    HandledStopping,
    /// `shutdown` fired and the drain time passed before it was handled.
    Abandoned,
}

/// Handles a payment update, trying again with backoff until its handler
/// succeeds; a pre-checkout only while Telegram waits for its answer.
/// After `shutdown`, tries go on for the drain time.
async fn handle_payment<S: Future<Output = ()>>(
    deps: &Arc<BotDeps>,
    u: &Update,
    shutdown: &mut std::pin::Pin<&mut S>,
) -> Payment {
    let started = Instant::now();
    let pre_checkout = matches!(u.kind, UpdateKind::PreCheckoutQuery(_));
    let mut stop_by: Option<Instant> = None;
    let mut wait = Duration::from_millis(100);
    loop {
        if crate::dispatch(Arc::clone(deps), u.clone(), Prefetched::default()).await {
            break;
        }
        if pre_checkout && started.elapsed() >= PRE_CHECKOUT_PATIENCE {
            tracing::error!(
                update_id = u.id.0,
                "pre-checkout not answered in time; given up"
            );
            break;
        }
        tracing::warn!(update_id = u.id.0, "payment not handled; trying again");
        match stop_by {
            None => {
                if pause(shutdown, wait).await {
                    stop_by = Some(Instant::now() + DRAIN);
                }
            }
            Some(t) if Instant::now() >= t => return Payment::Abandoned,
            Some(_) => tokio::time::sleep(wait).await,
        }
        wait = (wait * 2).min(PAYMENT_BACKOFF_MAX);
    }
    if stop_by.is_some() {
        Payment::HandledStopping
    } else {
        Payment::Handled
    }
}

/// Sleeps for `d`; `true` if `shutdown` came first.
async fn pause(shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.as_mut() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// One chat's queue of updates and the task that handles them in order.
struct Lane {
    tx: mpsc::UnboundedSender<(Update, Prefetched, OwnedSemaphorePermit)>,
    /// Updates sent to the lane and not yet handled.
    pending: Arc<AtomicUsize>,
    last_used: Instant,
}

#[derive(Default)]
struct Lanes {
    by_chat: HashMap<i64, Lane>,
    /// When idle lanes were last looked for (`None`: never).
    swept: Option<Instant>,
}

impl Lanes {
    /// Hands `u` to its chat's lane (opening one if needed); an update with
    /// no chat or sender has no order to keep and runs on its own.
    fn hand_out(
        &mut self,
        deps: &Arc<BotDeps>,
        u: Update,
        pre: Prefetched,
        permit: OwnedSemaphorePermit,
    ) {
        let Some(key) = lane_key(&u) else {
            let deps = Arc::clone(deps);
            tokio::spawn(async move {
                dispatch(Arc::clone(&deps), u, pre).await;
                drop(permit);
            });
            return;
        };
        let lane = self
            .by_chat
            .entry(key)
            .or_insert_with(|| open_lane(Arc::clone(deps)));
        lane.pending.fetch_add(1, Ordering::AcqRel);
        lane.last_used = Instant::now();
        if let Err(mpsc::error::SendError((u, pre, permit))) = lane.tx.send((u, pre, permit)) {
            // The lane's task is gone (it panicked): a fresh lane takes over.
            tracing::error!(chat = key, "update lane ended unexpectedly; reopening");
            let lane = open_lane(Arc::clone(deps));
            lane.pending.fetch_add(1, Ordering::AcqRel);
            let _ = lane.tx.send((u, pre, permit));
            self.by_chat.insert(key, lane);
        }
    }

    /// For each update, the sender whose user and dialogue may be read
    /// before it is handed out: a button press or message that is the first
    /// of its chat and of its sender in the batch, in a chat whose lane
    /// holds nothing. Any later update of that chat or sender may see what
    /// the earlier ones change, so it reads for itself when its turn comes.
    fn prefetchable(&self, updates: &[Update]) -> Vec<Option<UserId>> {
        let mut chats = HashSet::new();
        let mut senders = HashSet::new();
        updates
            .iter()
            .map(|u| {
                let gated = matches!(
                    u.kind,
                    UpdateKind::CallbackQuery(_) | UpdateKind::Message(_)
                );
                let key = lane_key(u)?;
                let sender = UserId(i64::try_from(u.from()?.id.0).ok()?);
                // Both sets are filled whatever the outcome, so a later
                // update of the chat or the sender is never read early.
                let first = chats.insert(key) & senders.insert(sender);
                let idle = self
                    .by_chat
                    .get(&key)
                    .is_none_or(|l| l.pending.load(Ordering::Acquire) == 0);
                (gated && first && idle).then_some(sender)
            })
            .collect()
    }

    /// Closes lanes that hold nothing and have been idle a while. A lane
    /// with work is never closed, so a chat's next update can never overtake
    /// its previous one on a second lane.
    fn close_idle(&mut self) {
        // A sweep walks every lane: under a flood of new chats, once per
        // batch would cost more than the batches themselves.
        if self.swept.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        self.swept = Some(Instant::now());
        self.by_chat.retain(|_, l| {
            l.pending.load(Ordering::Acquire) > 0 || l.last_used.elapsed() < LANE_IDLE
        });
    }
}

/// The chat whose order an update keeps (its sender's, for updates without a
/// chat); `None`: no order to keep.
fn lane_key(u: &Update) -> Option<i64> {
    u.chat()
        .map(|c| c.id.0)
        .or_else(|| u.from().map(|f| f.id.0 as i64))
}

fn open_lane(deps: Arc<BotDeps>) -> Lane {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Update, Prefetched, OwnedSemaphorePermit)>();
    let pending = Arc::new(AtomicUsize::new(0));
    let left = Arc::clone(&pending);
    tokio::spawn(async move {
        while let Some((u, pre, permit)) = rx.recv().await {
            dispatch(Arc::clone(&deps), u, pre).await;
            left.fetch_sub(1, Ordering::AcqRel);
            drop(permit);
        }
    });
    Lane {
        tx,
        pending,
        last_used: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn user(id: i64) -> serde_json::Value {
        json!({ "id": id, "is_bot": false, "first_name": "u" })
    }

    fn private(id: i64) -> serde_json::Value {
        json!({ "id": id, "type": "private", "first_name": "u" })
    }

    /// Parsed from text, as teloxide reads updates off the wire.
    fn update(v: serde_json::Value) -> Update {
        serde_json::from_str(&v.to_string()).unwrap()
    }

    fn press(update_id: i64, from: i64) -> Update {
        update(json!({
            "update_id": update_id,
            "callback_query": {
                "id": update_id.to_string(),
                "from": user(from),
                "message": { "message_id": 1, "date": 0, "chat": private(from) },
                "chat_instance": "c",
                "data": "m",
            }
        }))
    }

    fn text(update_id: i64, from: i64, chat: serde_json::Value) -> Update {
        update(json!({
            "update_id": update_id,
            "message": { "message_id": update_id, "date": 0, "chat": chat, "from": user(from), "text": "hi" }
        }))
    }

    #[test]
    fn only_the_first_update_of_an_idle_chat_and_sender_is_read_ahead() {
        let mut lanes = Lanes::default();
        // Chat 40 still has an update in hand from the batch before.
        let (tx, _rx) = mpsc::unbounded_channel();
        lanes.by_chat.insert(
            40,
            Lane {
                tx,
                pending: Arc::new(AtomicUsize::new(1)),
                last_used: Instant::now(),
            },
        );
        let checkout = update(json!({
            "update_id": 4,
            "pre_checkout_query": {
                "id": "p", "from": user(30), "currency": "XTR",
                "total_amount": 5, "invoice_payload": "x",
            }
        }));
        let group = json!({ "id": -100, "type": "group", "title": "g" });
        let batch = vec![
            press(1, 10),
            // The same chat and sender again: must see what update 1 changes.
            text(2, 10, private(10)),
            press(3, 20),
            // Not handled by a gate.
            checkout,
            text(5, 40, private(40)),
            // A sender already in the batch, in another chat.
            text(6, 20, group.clone()),
            // A chat already in the batch, from another sender.
            text(7, 50, group),
        ];
        assert_eq!(
            lanes.prefetchable(&batch),
            vec![
                Some(UserId(10)),
                None,
                Some(UserId(20)),
                None,
                None,
                None,
                None
            ]
        );
    }
}
