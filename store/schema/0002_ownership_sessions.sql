-- Who created and who revoked each token, the fingerprint of the token key
-- the database is used with, and the web app's sign-in sessions.
-- creator is "iss#sub" for the web app, "cli" or "cli:<os user>" for the CLI.
-- revoked_by says who revoked: "owner:iss#sub", "admin:cli:<os user>".
ALTER TABLE app_tokens ADD COLUMN creator TEXT NOT NULL DEFAULT '';
ALTER TABLE app_tokens ADD COLUMN revoked_by TEXT NOT NULL DEFAULT '';

CREATE TABLE store_meta (
	name  TEXT NOT NULL PRIMARY KEY,
	value TEXT NOT NULL
);

-- id_hash is the hex SHA-256 of the session id in the cookie, never the id.
-- data is the web app's JSON: what it needs about the sign-in.
CREATE TABLE web_sessions (
	id_hash    TEXT   NOT NULL PRIMARY KEY,
	subject    TEXT   NOT NULL,
	mailbox    TEXT   NOT NULL,
	data       TEXT   NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_subject ON web_sessions (subject);
CREATE INDEX web_sessions_mailbox ON web_sessions (mailbox);

-- One-time nonces of the consent step: confirming deletes the row.
CREATE TABLE consent_nonces (
	nonce_hash   TEXT   NOT NULL PRIMARY KEY,
	session_hash TEXT   NOT NULL,
	expires_at   BIGINT NOT NULL
);
