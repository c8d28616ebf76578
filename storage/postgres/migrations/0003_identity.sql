-- Identity (issue 6): customer accounts, API keys and refresh-token families.
-- Same tables and constraints as the SQLite adapter (storage/sqlite/identity.py).
-- Run by storage/postgres/migrate.py inside one transaction: no BEGIN/COMMIT here.
-- IF NOT EXISTS everywhere, so running the file again by hand changes nothing.
-- Secrets are never stored: password hashes (argon2id), and SHA-256 hex digests of
-- API-key secrets and refresh tokens.

-- email_key is computed by the adapter (storage.identity.email_key), not with lower(),
-- whose Unicode behaviour depends on the collation: both backends agree on collisions.
CREATE TABLE IF NOT EXISTS accounts (
    customer_id TEXT COLLATE "C" PRIMARY KEY,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    name TEXT,
    cart_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

-- role NULL: an application key that only selects a rate plan; it can get no tokens.
-- COLLATE "C": keys list in byte order, as in SQLite.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT COLLATE "C" PRIMARY KEY CHECK (key_id <> ''),
    secret_hash TEXT NOT NULL CHECK (char_length(secret_hash) = 64),
    role TEXT CHECK (role IS NULL OR role IN ('merchant', 'logistics', 'admin')),
    subject TEXT,
    scopes TEXT[] NOT NULL,
    plan TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    created_by TEXT,
    CHECK (role IS NULL OR subject IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS api_keys_subject ON api_keys (subject, created_at);

-- One family per sign-in (session). Revoking it kills every token rotated within it.
CREATE TABLE IF NOT EXISTS refresh_families (
    family_id TEXT PRIMARY KEY,
    customer_id TEXT COLLATE "C" NOT NULL REFERENCES accounts (customer_id),
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    revoked_reason TEXT
);

CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY CHECK (char_length(token_hash) = 64),
    family_id TEXT NOT NULL REFERENCES refresh_families (family_id) ON DELETE CASCADE,
    customer_id TEXT NOT NULL,
    issued_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION
);

CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_expiry ON refresh_tokens (expires_at);
