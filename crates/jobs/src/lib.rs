//! Jobs: tiny versioned contracts between the front bot, the workers and the
//! reconciler.
//!
//! A job carries ids only; everything else is re-read from the database when
//! it runs, so a job that runs late, twice, or after a restart still does the
//! right thing. Queue names are explicit constants with a version suffix
//! ([`names`]), never a Rust type name, so renaming a type never strands jobs
//! and a payload change ships as a new queue.
//!
//! The queue is not the source of truth: the database is. A job lost with a
//! Redis restart or a killed process is found again by the reconciler, which
//! re-enqueues work from database state (pending rows, due polls, observed
//! results, undelivered results). That is why pushing a job is fire-and-forget
//! for callers that have already committed the state the job acts on.
//!
//! [`Queues`] is the enqueue side over the two backends: apalis-redis for the
//! fleet and apalis-sqlite (in the embedded database file) for one process.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_core::backend::TaskSink;
use kiebot_domain::{GenerationId, NextJob};
use serde::{Deserialize, Serialize};

pub mod names;
mod redis_vacuum;

pub use apalis_redis::RedisStorage;
pub use apalis_sqlite::SqliteStorage;

/// Create the KIE task for a pending generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// The generation.
    pub generation: GenerationId,
}

/// Ask KIE for a submitted generation's state once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    /// The generation.
    pub generation: GenerationId,
}

/// Apply an observed KIE outcome: capture on success, release otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalize {
    /// The generation.
    pub generation: GenerationId,
}

/// Send a finished generation (result or failure notice) to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// The generation.
    pub generation: GenerationId,
}

/// One job of any kind, for code that routes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// See [`Submit`].
    Submit(GenerationId),
    /// See [`Poll`].
    Poll(GenerationId),
    /// See [`Finalize`].
    Finalize(GenerationId),
    /// See [`Deliver`].
    Deliver(GenerationId),
}

impl Job {
    /// The job of kind `next` for generation `id` (see
    /// [`kiebot_domain::Lifecycle::next_job`]); `None` for [`NextJob::Nothing`].
    pub fn next(id: GenerationId, next: NextJob) -> Option<Job> {
        match next {
            NextJob::Submit => Some(Job::Submit(id)),
            NextJob::Poll => Some(Job::Poll(id)),
            NextJob::Finalize => Some(Job::Finalize(id)),
            NextJob::Deliver => Some(Job::Deliver(id)),
            NextJob::Nothing => None,
        }
    }

    /// The queue's short name, for logs and metrics labels.
    pub fn kind(self) -> &'static str {
        match self {
            Job::Submit(_) => "submit",
            Job::Poll(_) => "poll",
            Job::Finalize(_) => "finalize",
            Job::Deliver(_) => "deliver",
        }
    }

    /// The generation the job is about.
    pub fn generation(self) -> GenerationId {
        match self {
            Job::Submit(g) | Job::Poll(g) | Job::Finalize(g) | Job::Deliver(g) => g,
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.kind(), self.generation())
    }
}

/// Pushing to the queue failed (the backend is unreachable or refused).
#[derive(Debug, thiserror::Error)]
#[error("queue {queue}: {message}")]
pub struct QueueError {
    /// Which queue.
    pub queue: String,
    /// The backend's message.
    pub message: String,
}

/// The storages of one backend, one per job kind.
#[derive(Clone)]
pub struct Storages<S, P, F, D> {
    /// Submit jobs.
    pub submit: S,
    /// Poll jobs.
    pub poll: P,
    /// Finalize jobs.
    pub finalize: F,
    /// Deliver jobs.
    pub deliver: D,
}

/// Redis storages (fleet).
pub type RedisStorages = Storages<
    RedisStorage<Submit>,
    RedisStorage<Poll>,
    RedisStorage<Finalize>,
    RedisStorage<Deliver>,
>;

/// SQLite storages (embedded).
pub type SqliteStorages = Storages<
    SqliteStorage<Submit>,
    SqliteStorage<Poll>,
    SqliteStorage<Finalize>,
    SqliteStorage<Deliver>,
>;

/// Pushes each kind's jobs to its storage; the same code for both backends,
/// whose storages differ in type.
macro_rules! push_storages {
    ($st:expr, $names:expr, $submit:expr, $poll:expr, $finalize:expr, $deliver:expr) => {{
        push_all(&mut $st.submit.clone(), $submit, &$names.submit).await?;
        push_all(&mut $st.poll.clone(), $poll, &$names.poll).await?;
        push_all(&mut $st.finalize.clone(), $finalize, &$names.finalize).await?;
        push_all(&mut $st.deliver.clone(), $deliver, &$names.deliver).await
    }};
}

/// The enqueue side, over either backend.
#[derive(Clone)]
pub enum Queues {
    /// apalis-redis: shared by every process of a fleet.
    Redis {
        /// One storage per job kind.
        storages: RedisStorages,
        /// A plain connection for health checks and queue depth.
        conn: redis::aio::ConnectionManager,
        /// The queue names in use.
        names: names::QueueNames,
        /// Recently read queue depths, so a busy producer does not ask Redis
        /// before every push.
        depths: Arc<DepthCache>,
    },
    /// apalis-sqlite in the embedded database file.
    Sqlite {
        /// One storage per job kind.
        storages: SqliteStorages,
        /// The queue's pool (same file as the application's data).
        pool: sqlx::SqlitePool,
        /// The queue names in use.
        names: names::QueueNames,
        /// Wakes this process's workers when it pushes a job.
        wake: Arc<QueueWake>,
    },
}

/// Wake-ups for the embedded queue's workers, one per job kind. SQLite
/// cannot tell a worker that a job arrived, so without them a worker must
/// look every few milliseconds, which keeps an idle process busy; with
/// them, a push in this process wakes the worker of its kind at once and
/// the workers look by themselves only rarely (for jobs another process
/// wrote into the file).
#[derive(Debug, Default)]
pub struct QueueWake {
    /// The submit worker's.
    pub submit: Arc<tokio::sync::Notify>,
    /// The poll worker's.
    pub poll: Arc<tokio::sync::Notify>,
    /// The finalize worker's.
    pub finalize: Arc<tokio::sync::Notify>,
    /// The deliver worker's.
    pub deliver: Arc<tokio::sync::Notify>,
}

impl QueueWake {
    fn after_push(&self, pushed: [usize; 4]) {
        let all = [&self.submit, &self.poll, &self.finalize, &self.deliver];
        for (n, notify) in pushed.into_iter().zip(all) {
            if n > 0 {
                notify.notify_waiters();
            }
        }
    }
}

/// A Redis client whose connections send each command at once
/// (`TCP_NODELAY`). redis-rs leaves Nagle's algorithm on, which holds a
/// command back while an earlier one on the same multiplexed connection
/// waits for its acknowledgement: with many tasks pushing at once, that is
/// most commands.
fn redis_client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo as _;
    let info = url
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
}

/// How the queue's Redis connection waits. redis-rs gives up on a reply
/// after 500 ms by default; apalis-redis's fetch and acknowledgement scripts
/// take longer than that on a loaded machine, and a push that times out after
/// Redis applied it is a duplicate job on retry. Seconds are what a queue
/// needs; a Redis that is really gone still fails fast (connection refused).
pub fn redis_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(3)))
}

/// Most jobs one Redis queue may hold waiting. apalis-redis 1.0 stops
/// fetching when about 8,000 scheduled jobs fall due at once; pushes beyond
/// this bound are skipped and the reconciler enqueues the work later from the
/// database.
pub const REDIS_BACKLOG: u64 = 2_000;

/// Jobs per push when a caller enqueues many at once: large enough to
/// amortise round trips, small enough that one push never blocks for long.
pub const PUSH_CHUNK: usize = 500;

impl Queues {
    /// Connects to Redis. `names` carries the namespace (tests use a random
    /// one so they never see each other's jobs).
    pub async fn redis(url: &str, names: names::QueueNames) -> Result<Queues, QueueError> {
        let err = |e: &dyn fmt::Display| QueueError {
            queue: "redis".into(),
            message: e.to_string(),
        };
        let client = redis_client(url).map_err(|e| err(&e))?;
        let conn = client
            .get_connection_manager_with_config(redis_config())
            .await
            .map_err(|e| err(&e))?;
        let cfg = |queue: &str| {
            apalis_redis::Config::default()
                .queue(queue)
                .batch_size(names::FETCH_BATCH)
                // In apalis-redis 1.0 this is also what acknowledges a job
                // (takes it out of the worker's in-flight set); without it
                // finished jobs would look orphaned forever. `Queues::vacuum`
                // removes finished jobs' bookkeeping.
                .persist_results(true)
                .emit_events(false)
                .heartbeat_interval(names::HEARTBEAT)
        };
        let storages = Storages {
            submit: RedisStorage::new(conn.clone()).with_config(cfg(&names.submit)),
            poll: RedisStorage::new(conn.clone()).with_config(cfg(&names.poll)),
            finalize: RedisStorage::new(conn.clone()).with_config(cfg(&names.finalize)),
            deliver: RedisStorage::new(conn.clone()).with_config(cfg(&names.deliver)),
        };
        Ok(Queues::Redis {
            storages,
            conn,
            names,
            depths: Arc::new(DepthCache::default()),
        })
    }

    /// Opens the embedded queue in the SQLite file at `url` and creates its
    /// tables. The application's own migrations share the file's migration
    /// table, so both sides ignore each other's entries.
    pub async fn sqlite(url: &str, names: names::QueueNames) -> Result<Queues, QueueError> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        use std::str::FromStr;
        let err = |e: &dyn fmt::Display| QueueError {
            queue: "sqlite".into(),
            message: e.to_string(),
        };
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| err(&e))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|e| err(&e))?;
        let mut migrator = SqliteStorage::<()>::migrations();
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await.map_err(|e| err(&e))?;
        let cfg = |queue: &str| {
            apalis_sqlite::Config::default()
                .queue(queue)
                .batch_size(names::FETCH_BATCH)
                .heartbeat_interval(names::HEARTBEAT)
        };
        let storages = Storages {
            submit: SqliteStorage::new(&pool).with_config(cfg(&names.submit)),
            poll: SqliteStorage::new(&pool).with_config(cfg(&names.poll)),
            finalize: SqliteStorage::new(&pool).with_config(cfg(&names.finalize)),
            deliver: SqliteStorage::new(&pool).with_config(cfg(&names.deliver)),
        };
        Ok(Queues::Sqlite {
            storages,
            pool,
            names,
            wake: Arc::default(),
        })
    }

    /// The queue names in use.
    pub fn names(&self) -> &names::QueueNames {
        match self {
            Queues::Redis { names, .. } | Queues::Sqlite { names, .. } => names,
        }
    }

    /// Enqueues one job. `Ok(false)`: left out because its Redis queue is at
    /// [`REDIS_BACKLOG`]; the reconciler finds the row again from its due
    /// time, so a caller whose row is not due yet should make it due.
    #[tracing::instrument(name = "queue.push", skip(self), fields(job = %job))]
    pub async fn push(&self, job: Job) -> Result<bool, QueueError> {
        Ok(self.push_many(&[job]).await?.is_empty())
    }

    /// Enqueues many jobs, grouped by kind and pushed in chunks of
    /// [`PUSH_CHUNK`]. Returns the jobs left out because their Redis queue
    /// is at [`REDIS_BACKLOG`] (never any on SQLite), so that a caller that
    /// claimed their rows can make them due again.
    pub async fn push_many(&self, jobs: &[Job]) -> Result<Vec<Job>, QueueError> {
        let mut submit = vec![];
        let mut poll = vec![];
        let mut finalize = vec![];
        let mut deliver = vec![];
        for j in jobs {
            match *j {
                Job::Submit(generation) => submit.push(Submit { generation }),
                Job::Poll(generation) => poll.push(Poll { generation }),
                Job::Finalize(generation) => finalize.push(Finalize { generation }),
                Job::Deliver(generation) => deliver.push(Deliver { generation }),
            }
        }
        match self {
            Queues::Redis {
                storages,
                names,
                conn,
                depths: cache,
            } => {
                // apalis-redis moves due jobs from its scheduled set to the
                // active list in one Lua call, which fails once several
                // thousand are due together. The queue is only a hint (the
                // database holds every generation's state), so jobs beyond
                // the backlog bound are left to the reconciler, which finds
                // the rows again.
                let depths = match cache.fresh() {
                    Some(d) => d,
                    None => {
                        let read = redis_depths(
                            conn,
                            &[&names.submit, &names.poll, &names.finalize, &names.deliver],
                        )
                        .await?;
                        let d = [read[0], read[1], read[2], read[3]];
                        cache.store(d);
                        d
                    }
                };
                let mut left_out = vec![];
                left_out.extend(cap(&mut submit, depths[0]).map(|j| Job::Submit(j.generation)));
                left_out.extend(cap(&mut poll, depths[1]).map(|j| Job::Poll(j.generation)));
                left_out.extend(cap(&mut finalize, depths[2]).map(|j| Job::Finalize(j.generation)));
                left_out.extend(cap(&mut deliver, depths[3]).map(|j| Job::Deliver(j.generation)));
                cache.add([submit.len(), poll.len(), finalize.len(), deliver.len()]);
                if !left_out.is_empty() {
                    tracing::debug!(
                        left_out = left_out.len(),
                        "queue backlog full; jobs left to the reconciler"
                    );
                }
                push_storages!(storages, names, submit, poll, finalize, deliver)?;
                Ok(left_out)
            }
            Queues::Sqlite {
                storages,
                names,
                wake,
                ..
            } => {
                let pushed = [submit.len(), poll.len(), finalize.len(), deliver.len()];
                push_storages!(storages, names, submit, poll, finalize, deliver)?;
                wake.after_push(pushed);
                Ok(vec![])
            }
        }
    }

    /// Deletes finished jobs' bookkeeping older than `older_than`. apalis
    /// keeps every finished job's data and status in the backend; our
    /// database already records what happened, so the queue keeps only
    /// recent history for the dashboard. Returns how many jobs were removed.
    pub async fn vacuum(&self, older_than: std::time::Duration) -> Result<usize, QueueError> {
        let err = |queue: &str, e: &dyn fmt::Display| QueueError {
            queue: queue.to_owned(),
            message: e.to_string(),
        };
        let mut removed = 0;
        match self {
            Queues::Redis {
                storages,
                conn,
                names,
                ..
            } => {
                for storage in [
                    storages.submit.get_config(),
                    storages.poll.get_config(),
                    storages.finalize.get_config(),
                    storages.deliver.get_config(),
                ] {
                    let data = storage.job_data_hash();
                    removed += redis_vacuum::remove_finished(
                        conn,
                        &data,
                        &storage.job_meta_hash(),
                        older_than,
                    )
                    .await
                    .map_err(|e| err(&data, &e))?;
                }
                // The done set only feeds the board's counters and would
                // otherwise hold the id of every job ever run. UNLINK frees
                // it off Redis's main thread (a DEL of 100,000 ids took
                // 54 ms).
                let mut pipe = redis::pipe();
                for name in names.all() {
                    pipe.cmd("UNLINK").arg(format!("{name}:done")).ignore();
                }
                pipe.query_async::<()>(&mut conn.clone())
                    .await
                    .map_err(|e| err("redis", &e))?;
            }
            Queues::Sqlite { pool, .. } => {
                // Not apalis-sqlite's `vacuum_before`: it compares the
                // integer `run_at` with a text datetime, which SQLite always
                // finds smaller, so it removes every finished job whatever
                // its age; and it then VACUUMs the whole file, which is also
                // the application's database. Here the retention holds, and
                // freed pages are simply reused.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let cutoff =
                    i64::try_from(now.saturating_sub(older_than.as_secs())).unwrap_or(i64::MAX);
                let done = sqlx::query(
                    "DELETE FROM Jobs WHERE (status = 'Done' OR status = 'Killed' \
                         OR (status = 'Failed' AND max_attempts <= attempts)) \
                     AND COALESCE(done_at, run_at) <= ?1",
                )
                .bind(cutoff)
                .execute(pool)
                .await
                .map_err(|e| err("sqlite", &e))?;
                removed += usize::try_from(done.rows_affected()).unwrap_or(usize::MAX);
            }
        }
        Ok(removed)
    }

    /// Takes this deployment's vacuum turn for `ttl`: `true` for the one
    /// process (of a fleet) that should vacuum now; always `true` on SQLite,
    /// which one process serves. Every worker's reconciler asks each
    /// minute, and a fleet need not walk the queues more than once.
    pub async fn take_vacuum_turn(&self, ttl: Duration) -> Result<bool, QueueError> {
        match self {
            Queues::Redis { conn, names, .. } => {
                let taken: Option<String> = redis::cmd("SET")
                    .arg(format!("{}:vacuum-turn", names.submit))
                    .arg(std::process::id())
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(redis_error)?;
                Ok(taken.is_some())
            }
            Queues::Sqlite { .. } => Ok(true),
        }
    }

    /// Whether the backend answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Queues::Redis { conn, .. } => {
                let mut c = conn.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .map(|_| ())
                    .map_err(|e| QueueError {
                        queue: "redis".into(),
                        message: e.to_string(),
                    })
            }
            Queues::Sqlite { pool, .. } => sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(|e| QueueError {
                    queue: "sqlite".into(),
                    message: e.to_string(),
                }),
        }
    }

    /// Jobs waiting to be fetched, per queue name (for metrics, the
    /// dashboard, and back-pressure in the reconciler).
    pub async fn depths(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let names = self.names().all();
        let mut out = Vec::with_capacity(names.len());
        match self {
            Queues::Redis { conn, .. } => {
                let refs: Vec<&String> = names.iter().collect();
                let depths = redis_depths(conn, &refs).await?;
                out.extend(names.iter().cloned().zip(depths));
            }
            Queues::Sqlite { pool, .. } => {
                for name in names {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND status IN ('Pending', 'Queued')",
                    )
                    .bind(&name)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| QueueError { queue: name.clone(), message: e.to_string() })?;
                    out.push((name, n.max(0) as u64));
                }
            }
        }
        Ok(out)
    }
}

/// How long a read of the queue depths stands in for Redis. The bound it
/// guards ([`REDIS_BACKLOG`]) sits far below where apalis-redis breaks, so a
/// quarter-second-old figure (plus what this process pushed since) is safe,
/// and a producer pushing hundreds of jobs a second saves a round trip on
/// almost every push.
const DEPTH_CACHE_TTL: Duration = Duration::from_millis(250);

/// The last depths read from Redis (submit, poll, finalize, deliver), with
/// this process's pushes since added.
#[derive(Debug, Default)]
pub struct DepthCache {
    inner: Mutex<Option<(Instant, [u64; 4])>>,
}

impl DepthCache {
    fn fresh(&self) -> Option<[u64; 4]> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < DEPTH_CACHE_TTL)
            .map(|(_, d)| *d)
    }

    fn store(&self, depths: [u64; 4]) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), depths));
    }

    fn add(&self, pushed: [usize; 4]) {
        if let Some((_, d)) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            for (depth, n) in d.iter_mut().zip(pushed) {
                *depth += n as u64;
            }
        }
    }
}

/// Trims `jobs` to the room left under [`REDIS_BACKLOG`]; returns those
/// left out.
fn cap<T>(jobs: &mut Vec<T>, depth: u64) -> std::vec::IntoIter<T> {
    let room = usize::try_from(REDIS_BACKLOG.saturating_sub(depth)).unwrap_or(0);
    let keep = room.min(jobs.len());
    jobs.split_off(keep).into_iter()
}

/// Waiting jobs of each named Redis queue (active list plus scheduled set:
/// apalis-redis parks every pushed job in the scheduled set until a worker
/// moves it).
async fn redis_depths(
    conn: &redis::aio::ConnectionManager,
    names: &[&String],
) -> Result<Vec<u64>, QueueError> {
    let mut pipe = redis::pipe();
    for name in names {
        pipe.cmd("LLEN")
            .arg(format!("{name}:active"))
            .cmd("ZCARD")
            .arg(format!("{name}:scheduled"));
    }
    let counts: Vec<u64> = pipe
        .query_async(&mut conn.clone())
        .await
        .map_err(redis_error)?;
    Ok(counts.chunks(2).map(|c| c.iter().sum()).collect())
}

/// A Redis error not tied to one queue.
fn redis_error(e: redis::RedisError) -> QueueError {
    QueueError {
        queue: "redis".into(),
        message: e.to_string(),
    }
}

async fn push_all<S, A>(storage: &mut S, jobs: Vec<A>, queue: &str) -> Result<(), QueueError>
where
    S: TaskSink<A, apalis_core::backend::finalize::Durable> + Send,
    S::Error: fmt::Display,
    A: Send,
{
    if jobs.is_empty() {
        return Ok(());
    }
    let mut jobs = jobs;
    while !jobs.is_empty() {
        let rest = jobs.split_off(jobs.len().min(PUSH_CHUNK));
        storage.push_bulk(jobs).await.map_err(|e| QueueError {
            queue: queue.to_owned(),
            message: sink_error(e),
        })?;
        jobs = rest;
    }
    Ok(())
}

fn sink_error<E: fmt::Display>(e: apalis_core::backend::TaskSinkError<E>) -> String {
    match e {
        apalis_core::backend::TaskSinkError::PushError(e) => e.to_string(),
        other => other.to_string(),
    }
}
