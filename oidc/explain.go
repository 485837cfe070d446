package oidc

import (
	"context"
	"fmt"
	"strings"
)

// The checks Explain reports, in the order Verify does them.
const (
	CheckFormat    = "format"    // a JWS in compact serialization
	CheckIssuer    = "issuer"    // "iss" is a configured issuer
	CheckSignature = "signature" // algorithm, typ, key id and signature against the issuer's JWKS
	CheckClaims    = "claims"    // the payload is a JSON object
	CheckExpiry    = "expiry"    // "exp", with the time left
	CheckValidity  = "validity"  // "nbf" and "iat" not in the future
	CheckAudience  = "audience"  // "aud" has a configured audience
	CheckSubject   = "subject"   // "sub"
	CheckClient    = "client"    // "azp" or "client_id" on the allow-list
	CheckIdentity  = "identity"  // the identity claim, and the addresses it may send as
	CheckScope     = "scope"     // the required scopes
)

// A Step is the outcome of one check.
type Step struct {
	Check  string // one of the Check constants
	OK     bool
	Detail string // what was seen; never the token
	Err    *Error // why it failed; nil when OK
}

// A Report is what Explain found.
type Report struct {
	Steps    []Step
	Identity *Identity // nil unless the token would be accepted
	Err      *Error    // what Verify would return; nil if accepted
}

// add records a step and returns err, for the caller to return. A nil
// Report records nothing, which is how Verify runs the same checks.
func (r *Report) add(check, detail string, err *Error) *Error {
	if r != nil {
		r.Steps = append(r.Steps, Step{Check: check, OK: err == nil, Detail: detail, Err: err})
	}
	return err
}

// Accepted reports whether the token would be accepted.
func (r *Report) Accepted() bool { return r.Err == nil && r.Identity != nil }

// String is the report as an admin reads it: one line per check.
func (r *Report) String() string {
	var b strings.Builder
	for _, s := range r.Steps {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s %-9s %s", mark, s.Check, s.Detail)
		if s.Err != nil {
			if s.Detail != "" {
				b.WriteString(": ")
			}
			b.WriteString(s.Err.Reason)
			if s.Err.Err != nil {
				b.WriteString(" (" + s.Err.Err.Error() + ")")
			}
			if s.Err.Temporary {
				b.WriteString(" [temporary: the provider's keys cannot be had; SMTP clients get 454]")
			}
		}
		b.WriteByte('\n')
	}
	if r.Accepted() {
		fmt.Fprintf(&b, "accepted: %s may send as %s\n", r.Identity.Address, strings.Join(r.Identity.Addresses, ", "))
	} else if r.Err != nil {
		fmt.Fprintf(&b, "refused: %s (%s)\n", r.Err.Reason, r.Err.Code)
	}
	return b.String()
}

// Explain runs Verify's checks on token, without the cache, and reports
// each: which passed, which failed and why. A check that fails after the
// signature does not stop the ones after it, so every problem shows at
// once. For the token checker (/debug/token, smtpgate check-token).
func (v *Verifier) Explain(ctx context.Context, token string) *Report {
	r := &Report{}
	switch {
	case token == "":
		r.Err = r.add(CheckFormat, "", &Error{Code: CodeInvalidRequest, Reason: "missing token"})
		return r
	case len(token) > maxTokenBytes:
		r.Err = r.add(CheckFormat, fmt.Sprintf("%d bytes", len(token)), invalidToken("token too large", nil))
		return r
	}
	id, err := v.run(ctx, token, v.now(), r)
	if err != nil {
		r.Err = err
		return r
	}
	r.Identity = id
	return r
}
