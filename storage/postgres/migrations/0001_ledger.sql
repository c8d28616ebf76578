-- Ledger schema: prices, promotions, stock, reservations and the stock journal.
-- Same tables and constraints as the SQLite adapters (storage/sqlite/prices.py, stock.py).
-- Money and counts are BIGINT; the adapters refuse non-int values before sending them,
-- because the driver would otherwise truncate a float to fit a BIGINT parameter.
-- Run by storage/postgres/migrate.py inside one transaction: no BEGIN/COMMIT here.

-- The migration runner reads this table to decide what is applied; it is created by the
-- first migration so its definition lives in exactly one place.
CREATE TABLE feira_schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE prices (
    sku TEXT PRIMARY KEY,
    amount BIGINT NOT NULL CHECK (amount >= 0),
    currency TEXT NOT NULL CHECK (char_length(currency) = 3),
    category TEXT NOT NULL
);

CREATE TABLE promotions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('percent', 'fixed')),
    value BIGINT NOT NULL CHECK (value >= 0),
    currency TEXT CHECK (currency IS NULL OR char_length(currency) = 3),
    sku TEXT,
    category TEXT,
    starts_at DOUBLE PRECISION NOT NULL,
    ends_at DOUBLE PRECISION NOT NULL,
    CHECK ((sku IS NULL) <> (category IS NULL)),
    CHECK (kind <> 'fixed' OR currency IS NOT NULL)
);

-- The CHECKs are the last line of defence against an oversell bug in the actor: a write
-- that would break them fails as a whole instead of persisting.
CREATE TABLE stock (
    sku TEXT PRIMARY KEY,
    on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved BIGINT NOT NULL CHECK (reserved >= 0),
    sold BIGINT NOT NULL CHECK (sold >= 0),
    CHECK (on_hand - reserved - sold >= 0)
);

CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    sku TEXT NOT NULL REFERENCES stock (sku),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX reservations_sku ON reservations (sku);

-- seq gives journal_for() the write order; (op_id, sku, kind) de-duplicates replays.
CREATE TABLE stock_journal (
    seq BIGSERIAL PRIMARY KEY,
    op_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    kind TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    reservation_id TEXT,
    at DOUBLE PRECISION NOT NULL,
    UNIQUE (op_id, sku, kind)
);

CREATE INDEX stock_journal_sku ON stock_journal (sku, seq);
