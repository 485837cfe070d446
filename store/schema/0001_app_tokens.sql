-- App tokens: passwords for mail clients that cannot do OAuth 2.0.
-- Portable SQL: it must run unchanged on SQLite and PostgreSQL.
-- Timestamps are unix microseconds (UTC); 0 means "never" / "not set".
-- secret_hash is the hex HMAC-SHA256 of the secret, never the secret.
-- senders is a JSON array of lower-case addresses.
CREATE TABLE app_tokens (
	id             TEXT    NOT NULL PRIMARY KEY,
	owner          TEXT    NOT NULL,
	label          TEXT    NOT NULL,
	senders        TEXT    NOT NULL,
	secret_hash    TEXT    NOT NULL,
	created_at     BIGINT  NOT NULL,
	created_from   TEXT    NOT NULL,
	expires_at     BIGINT  NOT NULL,
	last_used_at   BIGINT  NOT NULL DEFAULT 0,
	last_used_from TEXT    NOT NULL DEFAULT '',
	use_count      BIGINT  NOT NULL DEFAULT 0,
	revoked_at     BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX app_tokens_owner ON app_tokens (owner);
