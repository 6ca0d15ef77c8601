-- Large recorded attributes as blobs, and retention (issue 6). Keep in
-- step with ../postgres/.

-- When an event's attributes exceed the blob threshold they are kept in the
-- blob store (content-addressed) and the row holds the blob's address (hex
-- SHA-256 of the attributes text) here, with attributes_json left empty.
-- The store puts the verbatim text back whenever it reads the event.
ALTER TABLE audit_events ADD COLUMN attributes_blob TEXT;
CREATE INDEX audit_events_blob ON audit_events (attributes_blob) WHERE attributes_blob IS NOT NULL;

-- What the event occupies in bytes (text and hash columns, attributes
-- whether inline or in a blob, plus 56 for the integer columns); summed by
-- size-based retention. Computed on insertion; here for older rows.
ALTER TABLE audit_events ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE audit_events SET stored_bytes = 56
    + LENGTH(CAST(id AS BLOB)) + LENGTH(CAST(agent AS BLOB)) + LENGTH(CAST(kind AS BLOB))
    + LENGTH(CAST(session_id AS BLOB)) + LENGTH(CAST(subject AS BLOB))
    + LENGTH(CAST(groups_json AS BLOB)) + LENGTH(CAST(resource AS BLOB))
    + LENGTH(CAST(decision AS BLOB)) + LENGTH(CAST(rule AS BLOB))
    + LENGTH(CAST(statement AS BLOB)) + LENGTH(CAST(parameters_json AS BLOB))
    + LENGTH(CAST(error AS BLOB)) + LENGTH(CAST(client_addr AS BLOB))
    + LENGTH(CAST(attributes_json AS BLOB))
    + COALESCE(LENGTH(prev_hash), 0) + COALESCE(LENGTH(hash), 0);
