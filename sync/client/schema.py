"""The local store's tables (see ``sync.client.store`` for what each holds and who writes it).

Only ids, versions, stamps, hashes and field names are plain columns; every ``fields``,
``payload`` and ``value`` column holds a value sealed by the store's cipher.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    grid_id TEXT,
    household_id TEXT,
    version INTEGER NOT NULL,
    hlc TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    fields BLOB NOT NULL,
    PRIMARY KEY (entity, id)
);
CREATE INDEX IF NOT EXISTS records_by_grid ON records (entity, grid_id);
CREATE INDEX IF NOT EXISTS records_by_household ON records (entity, household_id);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    mid TEXT NOT NULL UNIQUE,
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    op TEXT NOT NULL,
    base_version INTEGER NOT NULL,
    hlc TEXT NOT NULL,
    grid_id TEXT,
    household_id TEXT,
    fields BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_record ON outbox (entity, id);
CREATE TABLE IF NOT EXISTS results (
    mid TEXT PRIMARY KEY,
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    op TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    error_code TEXT,
    payload BLOB NOT NULL,
    received_at TEXT NOT NULL,
    dismissed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS results_by_status ON results (status, dismissed);
CREATE TABLE IF NOT EXISTS conflicts (
    cid INTEGER PRIMARY KEY AUTOINCREMENT,
    mid TEXT NOT NULL,
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    field TEXT NOT NULL,
    winner_hlc TEXT NOT NULL,
    payload BLOB NOT NULL,
    seen INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    UNIQUE (mid, field)
);
-- Records a server sent that this app cannot hold (an entity or a value it does not know: a
-- newer server, or data stored before the server's checks tightened), while the rest of their
-- page is applied: the newest version of each, sealed with why it was set aside, applied once
-- the app can read it.
CREATE TABLE IF NOT EXISTS set_aside (
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload BLOB NOT NULL,
    seen INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL,
    PRIMARY KEY (entity, id)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    size INTEGER,
    state TEXT NOT NULL,
    path TEXT,
    created_at TEXT NOT NULL
);
"""
