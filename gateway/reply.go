package gateway

import (
	"fmt"

	"github.com/emersion/go-smtp"
)

// The replies smtpgate gives itself. Upstream replies pass through as the
// upstream gave them. Texts stay generic: causes go to the log, not to the
// client (the two audiences of an SMTP error).
var (
	// RFC 4954 section 6: 530 for commands that need AUTH first.
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	// RFC 4954 section 6: 538 for AUTH mechanisms that need TLS.
	errEncryptionRequired = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism"}
	errUnknownMechanism   = &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Unrecognized authentication type"}
	errAuthFailed         = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errAuthUnavailable    = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure, try again later"}
	errTooManyFailures    = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentication attempts, closing connection"}
	errNestedMail         = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Nested MAIL command: finish the message or send RSET first"}
	errNullSender         = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Null sender (MAIL FROM:<>) is not allowed for submission"}
	errUpstreamDown       = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Upstream mail server unavailable, try again later"}
	errUpstreamLost       = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Connection to upstream mail server lost, message not sent, try again later"}
	errLocal              = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error, message not sent, try again later"}
	errHeaderTooLarge     = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message header too large"}
	errShuttingDown       = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	errUpstreamOutOfStep  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Upstream mail server gave an unexpected reply, message not sent, try again later"}
	errDataIncomplete     = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Message not received completely, nothing was sent, try again"}
	errBadBase64          = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Invalid base64 in the SASL response"}
	errNeedSMTPUTF8       = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII address needs the SMTPUTF8 parameter on MAIL"}

	// Limits (section "Limits that hold under abuse" of Config).
	errTooManyConns          = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many connections to this server, try again later"}
	errTooManyClientConns    = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many connections from your address, try again later"}
	errTooManyUnauthCommands = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many commands without authentication, closing connection"}
	errTooManyTransactions   = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many messages under way at once for this account, try again later"}
	errCredentialExpired     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Your credential has expired or was revoked: reconnect and authenticate again"}
	errIdleTimeout           = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timeout waiting for the client, closing connection"}
	errPreAuthTimeout        = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Authentication not completed in time, closing connection"}
	errSessionTooLong        = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Maximum session duration reached, reconnect to go on"}
	errTransactionTooLong    = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Message took too long to arrive, nothing was sent, closing connection"}
)

func malformed(mech, why string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: fmt.Sprintf("Malformed %s response: %s", mech, why)}
}

// senderRefused names the rule that refused a sender address, never a
// credential.
func senderRefused(rule, addr string) *smtp.SMTPError {
	return &smtp.SMTPError{
		Code:         550,
		EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message:      fmt.Sprintf("Sender address <%s> in %s is not one the authenticated user may send as", addr, rule),
	}
}

func badHeader(why string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message header: " + why}
}
