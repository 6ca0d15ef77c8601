-- `audit_events_session_seq (session_id, session_seq)` serves every lookup
-- by session, so the single-column index only cost a B-tree insert per
-- event. Keep in step with the other engine's copy.
DROP INDEX audit_events_session;
