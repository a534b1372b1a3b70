-- Outpost licence server schema. Portable SQL: the same file runs on SQLite and
-- PostgreSQL (TEXT and BIGINT only, text ids, no auto-increment).

CREATE TABLE vendors (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE models (
    vendor_id TEXT NOT NULL REFERENCES vendors (id),
    product_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vendor_id, product_id)
);

-- One row per serial. `serial` is the compact 16-symbol form; `models` a JSON array
-- of product ids; `not_after` an optional absolute expiry (Unix seconds).
-- `activated_devices` counts the rows in `activations` for the serial: it is only
-- changed in the transaction that inserts or deletes one.
CREATE TABLE serials (
    serial TEXT PRIMARY KEY,
    vendor_id TEXT NOT NULL REFERENCES vendors (id),
    kind TEXT NOT NULL,
    models TEXT NOT NULL,
    edition TEXT NOT NULL,
    device_cap BIGINT NOT NULL,
    validity_days BIGINT NOT NULL,
    package_name TEXT,
    not_after BIGINT,
    revoked BIGINT NOT NULL DEFAULT 0,
    activated_devices BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    batch_id TEXT NOT NULL,
    CHECK (kind IN ('trial', 'per_device', 'product_line')),
    CHECK (activated_devices >= 0 AND activated_devices <= device_cap)
);

CREATE INDEX serials_vendor ON serials (vendor_id);
CREATE INDEX serials_batch ON serials (batch_id);

-- One row per device a serial is activated on. `device_key` is the SHA-256 (hex) of
-- the device's fingerprint text, or of the package name and nonce for a product-line
-- activation without a fingerprint.
CREATE TABLE activations (
    id TEXT PRIMARY KEY,
    serial TEXT NOT NULL REFERENCES serials (serial),
    device_key TEXT NOT NULL,
    fingerprint TEXT,
    package_name TEXT,
    activation_count BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    nonce TEXT NOT NULL,
    license_json TEXT NOT NULL,
    UNIQUE (serial, device_key)
);

-- Every admin action and activation attempt. `id` sorts by time (zero-padded
-- microseconds, then random); `outcome` is 0 or the error code.
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    outcome BIGINT NOT NULL,
    detail TEXT NOT NULL
);
