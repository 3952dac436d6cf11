-- Worker-side bookkeeping of the generation pipeline.
-- claimed_until: a handler's lease on the row (submit, deliver); another
--   worker leaves the row alone until it passes, so a job delivered twice or
--   re-enqueued by the reconciler never runs the same step concurrently.
-- file_ids: Telegram file ids of the delivered result (JSON list), so a
--   re-send from history reuses Telegram's copy instead of KIE's expiring URL.
-- delivery_error: why delivery was given up, for operators.
ALTER TABLE generations ADD COLUMN claimed_until INTEGER;
ALTER TABLE generations ADD COLUMN file_ids TEXT;
ALTER TABLE generations ADD COLUMN delivery_error TEXT;
