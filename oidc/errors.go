package oidc

// Error codes, as in RFC 6750 section 3.1; RFC 7628 section 3.2.2 sends them
// to the client as "status".
const (
	CodeInvalidToken      = "invalid_token"
	CodeInsufficientScope = "insufficient_scope"
	CodeInvalidRequest    = "invalid_request"
)

// Error is every verification failure Verify returns.
type Error struct {
	Code      string // "invalid_token" | "insufficient_scope" | "invalid_request" (RFC 6750 / RFC 7628 status values)
	Scope     string // for insufficient_scope: the space-separated required scopes
	Temporary bool   // true ONLY when the IdP/JWKS is unreachable AND no usable cached keys exist → SMTP 454
	Reason    string // short human/log text, e.g. "token expired", "unknown issuer", "audience not accepted"; never contains the token
	Err       error  // cause, may be nil; Unwrap returns it
}

func (e *Error) Error() string {
	msg := "oidc: " + e.Code + ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func invalidToken(reason string, err error) *Error {
	return &Error{Code: CodeInvalidToken, Reason: reason, Err: err}
}
