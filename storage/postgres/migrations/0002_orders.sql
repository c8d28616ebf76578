-- Orders, their outbox, per-consumer delivery state, effect de-duplication and checkout
-- idempotency keys. Same tables as the SQLite adapter (storage/sqlite/orders.py).
-- Run by storage/postgres/migrate.py inside one transaction: no BEGIN/COMMIT here.

-- The document (actors.domain.orders.Order.to_json) is the truth; the other columns are
-- derived from it on every write, for queries. COLLATE "C": ids sort in byte order, as in
-- SQLite, so listing cursors mean the same on both.
CREATE TABLE orders (
    id TEXT COLLATE "C" PRIMARY KEY,
    customer_ref TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN (
        'pending_payment', 'authorized', 'paid', 'fulfilling', 'shipped', 'delivered',
        'cancelled', 'payment_failed', 'expired', 'refunded')),
    version BIGINT NOT NULL CHECK (version >= 1),
    expires_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    doc JSONB NOT NULL,
    -- The shipment's carrier (doc.shipment.carrier); NULL until the order has a shipment.
    carrier TEXT
);

CREATE INDEX orders_customer ON orders (customer_ref, created_at DESC, id DESC);
-- A carrier's shipments, newest first; orders without a shipment are left out.
CREATE INDEX orders_carrier ON orders (carrier, created_at DESC, id DESC)
    WHERE carrier IS NOT NULL;
-- Only unpaid orders can expire; the partial index stays as small as they are few.
CREATE INDEX orders_expiring ON orders (expires_at, id)
    WHERE status IN ('pending_payment', 'authorized') AND expires_at IS NOT NULL;

-- One row per merchant with at least one line in the order (lines never change).
-- created_at is copied so a merchant's listing pages without touching orders.
CREATE TABLE order_merchants (
    merchant_id TEXT NOT NULL,
    order_id TEXT COLLATE "C" NOT NULL REFERENCES orders (id),
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (merchant_id, order_id)
);

CREATE INDEX order_merchants_listing ON order_merchants (merchant_id, created_at DESC, order_id DESC);

-- Events are written in the transaction of the order change they describe.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    order_id TEXT COLLATE "C" NOT NULL REFERENCES orders (id),
    kind TEXT NOT NULL CHECK (kind <> ''),
    payload JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX outbox_order ON outbox (order_id, id);

-- Delivery state per (consumer, event): leased until lease_until, or done. An event with
-- no row here has never been claimed by that consumer.
CREATE TABLE outbox_claims (
    consumer TEXT NOT NULL,
    event_id BIGINT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    lease_until DOUBLE PRECISION NOT NULL,
    done BOOLEAN NOT NULL DEFAULT false,
    attempts INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (consumer, event_id)
);

-- Effects (capture, stock commit, shipment...) a consumer has carried out, by key.
CREATE TABLE outbox_effects (
    consumer TEXT NOT NULL,
    effect_key TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, effect_key)
);

CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response JSONB NOT NULL,
    status_code INTEGER NOT NULL CHECK (status_code BETWEEN 100 AND 599),
    order_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
