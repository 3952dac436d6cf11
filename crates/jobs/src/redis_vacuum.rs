//! Removing finished jobs' bookkeeping from Redis a chunk at a time.
//!
//! apalis-redis's own `vacuum_before` reads the whole job hash and checks
//! every job in one Lua call. Redis runs nothing else meanwhile, and with a
//! few hundred thousand jobs in the retention window that call takes
//! seconds: long enough for workers' fetches to time out and for the front
//! bot's pushes to stall. Here the hash is walked with `HSCAN`, and each
//! chunk of job ids is checked and removed by a short script (the same
//! checks as apalis's: a terminal status, finished before the cutoff), so
//! Redis serves other clients between chunks.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// Job ids looked at per script call. With 100,000 jobs in flight a call
/// of 500 took up to 22 ms; 200 should take about 9 ms.
const CHUNK: usize = 200;

/// KEYS[1]: the job data hash, KEYS[2]: the metadata key prefix;
/// ARGV[1]: the cutoff (unix seconds), ARGV[2..]: job ids.
const REMOVE_FINISHED: &str = r"
local result_hash = KEYS[2] .. ':result'
local cutoff = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local meta_key = KEYS[2] .. ':' .. id
  local status = redis.call('hget', meta_key, 'status')
  local done_at = redis.call('hget', meta_key, 'done_at')
  if (status == 'Done' or status == 'Failed' or status == 'Killed')
      and done_at and tonumber(done_at) <= cutoff then
    redis.call('hdel', KEYS[1], id)
    redis.call('hdel', result_hash, id)
    redis.call('del', meta_key)
    removed = removed + 1
  end
end
return removed
";

/// Removes the jobs of one queue (its data hash and metadata prefix, as
/// apalis-redis names them) that finished at least `older_than` ago, by
/// Redis's clock. Returns how many were removed.
pub(crate) async fn remove_finished(
    conn: &ConnectionManager,
    data_hash: &str,
    meta_prefix: &str,
    older_than: Duration,
) -> redis::RedisResult<usize> {
    let mut c = conn.clone();
    let (now, _micros): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await?;
    let cutoff = now.saturating_sub(i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX));
    let script = redis::Script::new(REMOVE_FINISHED);
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, pairs): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
            .arg(data_hash)
            .arg(cursor)
            .arg("COUNT")
            .arg(CHUNK)
            .query_async(&mut c)
            .await?;
        // Field, value, field, value, ...: the fields are the job ids.
        let mut ids = pairs.iter().step_by(2).peekable();
        if ids.peek().is_some() {
            let mut call = script.prepare_invoke();
            call.key(data_hash).key(meta_prefix).arg(cutoff);
            for id in ids {
                call.arg(id.as_slice());
            }
            removed += call.invoke_async::<usize>(&mut c).await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}
