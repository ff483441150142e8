-- The registry node's PostgreSQL schema, version 1: the same tables as the SQLite backend
-- (store/sqlite.rs), plus the two feed counters that hand out feed cursors in commit order.

-- One row per feed ('ops', 'consents'). A writer takes the row's lock (UPDATE … RETURNING)
-- just before it inserts feed rows and holds it until commit, so cursors become visible in
-- the order they were handed out: a replicator that saw cursor N never misses a later commit.
CREATE TABLE feed_counters (
    feed TEXT PRIMARY KEY,
    last BIGINT NOT NULL
);
INSERT INTO feed_counters (feed, last) VALUES ('ops', 0), ('consents', 0);

CREATE TABLE ops (
    cursor      BIGINT PRIMARY KEY,
    device      BYTEA NOT NULL,
    seq         BIGINT NOT NULL,
    op_id       BYTEA NOT NULL,
    bytes       BYTEA NOT NULL,
    accepted_ms BIGINT NOT NULL,
    UNIQUE (device, op_id)
);
CREATE INDEX ops_by_device ON ops (device, cursor);
CREATE INDEX ops_genesis ON ops (device) WHERE seq = 0;

-- A device's chain version; no row means 0 (nothing stored).
CREATE TABLE chain_versions (
    device  BYTEA PRIMARY KEY,
    version BIGINT NOT NULL
);

CREATE TABLE forks (
    id        BIGSERIAL PRIMARY KEY,
    device    BYTEA NOT NULL,
    seq       BIGINT NOT NULL,
    theirs_id BYTEA NOT NULL,
    ours      BYTEA NOT NULL,
    theirs    BYTEA NOT NULL,
    found_ms  BIGINT NOT NULL,
    UNIQUE (device, seq, theirs_id)
);

CREATE TABLE peer_cursors (
    peer   TEXT PRIMARY KEY,
    cursor BIGINT NOT NULL
);

-- Ids come from one sequence, taken while the poster holds its mailbox's lock, so within a
-- mailbox they grow in commit order (a reader's `after` never skips a later message), and
-- a purge never lets an id come back.
CREATE SEQUENCE mailbox_ids;
CREATE TABLE mailbox_messages (
    id         BIGINT PRIMARY KEY,
    mailbox    BYTEA NOT NULL,
    body       BYTEA NOT NULL,
    expires_ms BIGINT NOT NULL,
    sender     BYTEA NOT NULL,
    address    BYTEA NOT NULL
);
CREATE INDEX mailbox_by_box ON mailbox_messages (mailbox, id);
CREATE INDEX mailbox_by_expiry ON mailbox_messages (expires_ms);
CREATE INDEX mailbox_by_sender ON mailbox_messages (mailbox, sender, expires_ms);
CREATE INDEX mailbox_by_address ON mailbox_messages (address, expires_ms);

CREATE TABLE invites (
    id         BYTEA PRIMARY KEY,
    body       BYTEA NOT NULL,
    expires_ms BIGINT NOT NULL,
    address    BYTEA NOT NULL
);
CREATE INDEX invites_by_expiry ON invites (expires_ms);
CREATE INDEX invites_by_address ON invites (address, expires_ms);

CREATE TABLE consents (
    cursor      BIGINT PRIMARY KEY,
    device      BYTEA NOT NULL,
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL,
    bytes       BYTEA NOT NULL,
    accepted_ms BIGINT NOT NULL,
    UNIQUE (device, seq)
);
CREATE TABLE consent_forks (
    id          BIGSERIAL PRIMARY KEY,
    device      BYTEA NOT NULL,
    seq         BIGINT NOT NULL,
    theirs_hash BYTEA NOT NULL,
    ours        BYTEA NOT NULL,
    theirs      BYTEA NOT NULL,
    found_ms    BIGINT NOT NULL,
    UNIQUE (device, seq, theirs_hash)
);
