-- Large recorded attributes as blobs, and retention (issue 6). Keep in
-- step with ../sqlite/.

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
    + OCTET_LENGTH(id) + OCTET_LENGTH(agent) + OCTET_LENGTH(kind)
    + OCTET_LENGTH(session_id) + OCTET_LENGTH(subject)
    + OCTET_LENGTH(groups_json) + OCTET_LENGTH(resource)
    + OCTET_LENGTH(decision) + OCTET_LENGTH(rule)
    + OCTET_LENGTH(statement) + OCTET_LENGTH(parameters_json)
    + OCTET_LENGTH(error) + OCTET_LENGTH(client_addr)
    + OCTET_LENGTH(attributes_json)
    + COALESCE(OCTET_LENGTH(prev_hash), 0) + COALESCE(OCTET_LENGTH(hash), 0);
