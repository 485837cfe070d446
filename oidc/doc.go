// Package oidc turns an OAuth 2.0 bearer token into a verified identity for
// SMTP submission.
//
// The tokens are JWT access tokens (RFC 9068, RFC 7519) presented through
// SASL OAUTHBEARER (RFC 7628) or XOAUTH2. A [Verifier] routes each token to a
// configured issuer by its unverified "iss", checks the JWS signature
// (RFC 7515) against the issuer's JWKS (RFC 7517) found through OpenID
// Connect discovery, then checks audience, lifetime, scopes, client and the
// mailbox claim itself. Failures are an [*Error] whose Code is the RFC 6750
// error code that RFC 7628 puts in its failure message.
//
// Signatures go through go-oidc's verifier with a key set of our own: it
// caches keys by "kid", refetches at most once per MinKeyRefresh however many
// unknown kids forged tokens carry, and keeps the last good keys while the
// identity provider is unreachable.
package oidc
