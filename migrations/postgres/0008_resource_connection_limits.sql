-- Most client sessions an agent holds on a resource's target, over all
-- subjects and per subject; 0 = no limit of the resource's own. Keep in step
-- with the other engine's copy.
ALTER TABLE resources ADD COLUMN max_connections BIGINT NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN max_connections_per_subject BIGINT NOT NULL DEFAULT 0;
