-- The W3C traceparent of the confirmation that created the generation, so
-- every job span about it links back to the user's request in the traces.
ALTER TABLE generations ADD COLUMN traceparent TEXT;
