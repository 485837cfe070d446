package devprovider

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Lifetimes of the short-lived records.
const (
	authRequestTTL = 30 * time.Minute // from /authorize to the code exchange
	codeTTL        = 5 * time.Minute  // RFC 6749 section 4.1.2: "maximum of 10 minutes"
	ssoTTL         = 24 * time.Hour   // a login session with Config.SSO
)

var (
	errUnknownAuthRequest = errors.New("devprovider: unknown or expired auth request")
	errBadCredentials     = errors.New("devprovider: invalid username or password")
	errUserDisabled       = errors.New("devprovider: user is disabled")
	errUnknownUser        = errors.New("devprovider: unknown user")
	errAlreadyLoggedIn    = errors.New("devprovider: auth request already completed")
)

// storage is the op.Storage that zitadel's op drives: users, clients,
// auth requests, codes and tokens, all in memory.
type storage struct {
	issuer    string
	audience  string
	accessTTL time.Duration
	key       *signingKey
	log       *slog.Logger
	clients   map[string]*client // read-only after New

	mu            sync.Mutex
	users         map[string]*user // by username
	subjects      map[string]*user // by subject
	authRequests  map[string]*authRequest
	ssoSessions   map[string]ssoSession // cookie value → login session
	acr           string
	omitAuthTime  bool
	codes         map[string]string // code → auth request ID
	accessTokens  map[string]*accessToken
	refreshTokens map[string]*refreshToken
}

var _ op.Storage = (*storage)(nil)
var _ op.CanSetUserinfoFromRequest = (*storage)(nil)

type user struct {
	User
	disabled bool
}

// authRequest is one pass through /authorize, the login form and the code
// exchange. Storage methods hand out clones, so zitadel never reads a value
// the login handler is writing.
type authRequest struct {
	id           string
	created      time.Time
	clientID     string
	redirectURI  string
	state        string
	nonce        string
	scopes       []string
	responseType oidc.ResponseType
	responseMode oidc.ResponseMode
	challenge    *oidc.CodeChallenge
	loginHint    string

	prompt []string
	maxAge *uint // seconds; nil when not asked

	omitAuthTime bool // Config.OmitAuthTime

	// Set by the login form.
	done     bool
	subject  string
	authTime time.Time
	acr      string

	// Set by the callback.
	code     string
	codeTime time.Time
}

var _ op.AuthRequest = (*authRequest)(nil)
var _ op.LogAuthRequest = (*authRequest)(nil)

func (a *authRequest) clone() *authRequest {
	c := *a
	c.scopes = slices.Clone(a.scopes)
	c.prompt = slices.Clone(a.prompt)
	if a.maxAge != nil {
		m := *a.maxAge
		c.maxAge = &m
	}
	if a.challenge != nil {
		ch := *a.challenge
		c.challenge = &ch
	}
	return &c
}

func (a *authRequest) GetID() string  { return a.id }
func (a *authRequest) GetACR() string { return a.acr }

// GetAMR says "pwd": the user typed a password (RFC 8176 section 2).
func (a *authRequest) GetAMR() []string {
	if a.done {
		return []string{"pwd"}
	}
	return nil
}

// GetAudience is the ID token audience. Access tokens get Config.Audience
// instead: see server.tokenResponse.
func (a *authRequest) GetAudience() []string { return []string{a.clientID} }
func (a *authRequest) GetAuthTime() time.Time {
	if a.omitAuthTime {
		return time.Time{} // zitadel leaves a zero auth_time out
	}
	return a.authTime
}
func (a *authRequest) GetClientID() string                   { return a.clientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.challenge }
func (a *authRequest) GetNonce() string                      { return a.nonce }
func (a *authRequest) GetRedirectURI() string                { return a.redirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return a.responseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return a.responseMode }
func (a *authRequest) GetScopes() []string                   { return slices.Clone(a.scopes) }
func (a *authRequest) GetState() string                      { return a.state }
func (a *authRequest) GetSubject() string                    { return a.subject }
func (a *authRequest) Done() bool                            { return a.done }

// LogValue leaves out state, nonce and code.
func (a *authRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", a.id),
		slog.String("client_id", a.clientID),
		slog.String("redirect_uri", a.redirectURI),
		slog.String("scope", strings.Join(a.scopes, " ")),
		slog.Bool("done", a.done),
	)
}

// refreshToken is one link of a rotating chain (RFC 6749 section 6,
// RFC 9700 section 4.14.2). Every token of a chain, access tokens
// included, shares the grant ID, so revoking one revokes the grant.
type refreshToken struct {
	token    string
	grant    string
	subject  string
	clientID string
	scopes   []string // as granted at authorization
	authTime time.Time
	amr      []string
}

// refreshTokenRequest is a refresh_token grant in progress.
type refreshTokenRequest struct {
	rt      refreshToken
	current []string // the scopes asked for now: a subset of rt.scopes
}

var _ op.RefreshTokenRequest = (*refreshTokenRequest)(nil)

func (r *refreshTokenRequest) GetAMR() []string            { return slices.Clone(r.rt.amr) }
func (r *refreshTokenRequest) GetAudience() []string       { return []string{r.rt.clientID} }
func (r *refreshTokenRequest) GetAuthTime() time.Time      { return r.rt.authTime }
func (r *refreshTokenRequest) GetClientID() string         { return r.rt.clientID }
func (r *refreshTokenRequest) GetScopes() []string         { return slices.Clone(r.current) }
func (r *refreshTokenRequest) GetSubject() string          { return r.rt.subject }
func (r *refreshTokenRequest) SetCurrentScopes(s []string) { r.current = slices.Clone(s) }

// accessToken records an issued access token. The token itself is a
// self-contained JWT; the record serves UserInfo, introspection and
// revocation.
type accessToken struct {
	id       string // "jti"
	grant    string // "" for tokens minted outside a refresh chain
	subject  string
	clientID string
	scopes   []string
	issued   time.Time
	expiry   time.Time
}

func newStorage(cfg Config, key *signingKey, loginURL func(string) string) *storage {
	s := &storage{
		issuer:        cfg.Issuer,
		audience:      cfg.Audience,
		accessTTL:     cfg.AccessTTL,
		key:           key,
		log:           cfg.Logger,
		clients:       make(map[string]*client, len(cfg.Clients)),
		users:         make(map[string]*user, len(cfg.Users)),
		subjects:      make(map[string]*user, len(cfg.Users)),
		authRequests:  make(map[string]*authRequest),
		ssoSessions:   make(map[string]ssoSession),
		acr:           cfg.ACR,
		omitAuthTime:  cfg.OmitAuthTime,
		codes:         make(map[string]string),
		accessTokens:  make(map[string]*accessToken),
		refreshTokens: make(map[string]*refreshToken),
	}
	for _, c := range cfg.Clients {
		s.clients[c.ID] = newClient(c, loginURL, cfg.AccessTTL)
	}
	for _, u := range cfg.Users {
		u.Subject = u.subject()
		u.Aliases = slices.Clone(u.Aliases)
		u.Groups = slices.Clone(u.Groups)
		us := &user{User: u}
		s.users[u.Username] = us
		s.subjects[u.Subject] = us
	}
	return s
}

// sweepLocked drops expired auth requests and access token records.
func (s *storage) sweepLocked(now time.Time) {
	for id, a := range s.authRequests {
		if now.Sub(a.created) > authRequestTTL {
			delete(s.codes, a.code)
			delete(s.authRequests, id)
		}
	}
	for id, at := range s.accessTokens {
		if now.After(at.expiry) {
			delete(s.accessTokens, id)
		}
	}
}

// CreateAuthRequest stores a validated authorization request. zitadel has
// checked the client, redirect URI and response type; Server.Authorize
// has checked PKCE.
func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	cl, ok := s.clients[req.ClientID]
	if !ok {
		return nil, oidc.ErrInvalidClient().WithDescription("unknown client")
	}
	scopes := cl.grantScopes(req.Scopes)
	if len(scopes) == 0 {
		return nil, oidc.ErrInvalidScope().WithDescription("none of the requested scopes is allowed for this client")
	}
	if len(scopes) < len(req.Scopes) {
		s.log.Info("devprovider: scopes not granted", "client_id", cl.id,
			"requested", strings.Join(req.Scopes, " "), "granted", strings.Join(scopes, " "))
	}
	now := time.Now()
	a := &authRequest{
		id:           rand.Text(),
		created:      now,
		clientID:     req.ClientID,
		redirectURI:  req.RedirectURI,
		state:        req.State,
		nonce:        req.Nonce,
		scopes:       scopes,
		responseType: req.ResponseType,
		responseMode: req.ResponseMode,
		loginHint:    req.LoginHint,
		prompt:       slices.Clone(req.Prompt),
		omitAuthTime: s.omitAuthTime,
	}
	if req.MaxAge != nil {
		m := *req.MaxAge
		a.maxAge = &m
	}
	if req.CodeChallenge != "" {
		a.challenge = &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.subjects[userID]; a.loginHint == "" && u != nil {
		a.loginHint = u.Username // from a valid id_token_hint
	}
	s.sweepLocked(now)
	s.authRequests[a.id] = a
	return a.clone(), nil
}

func (s *storage) authRequestLocked(id string, now time.Time) (*authRequest, error) {
	a, ok := s.authRequests[id]
	if !ok || now.Sub(a.created) > authRequestTTL {
		return nil, errUnknownAuthRequest
	}
	return a, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.authRequestLocked(id, time.Now())
	if err != nil {
		return nil, err
	}
	return a.clone(), nil
}

func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	a, err := s.authRequestLocked(s.codes[code], now)
	if err != nil || a.code != code || now.Sub(a.codeTime) > codeTTL {
		return nil, errors.New("devprovider: unknown, used or expired code")
	}
	return a.clone(), nil
}

// redeemCode returns the auth request of a code and ends it, in one step,
// so that of two concurrent exchanges of one code only one succeeds.
func (s *storage) redeemCode(code string) (*authRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	a, err := s.authRequestLocked(s.codes[code], now)
	if err != nil || a.code != code || now.Sub(a.codeTime) > codeTTL {
		return nil, errors.New("devprovider: unknown, used or expired code")
	}
	delete(s.codes, a.code)
	delete(s.authRequests, a.id)
	return a, nil
}

// SaveAuthCode binds a code to a completed auth request. A second callback
// for the same request replaces the code.
func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.authRequestLocked(id, time.Now())
	if err != nil {
		return err
	}
	if !a.done {
		return errors.New("devprovider: auth request not completed")
	}
	delete(s.codes, a.code)
	a.code, a.codeTime = code, time.Now()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest ends an auth request and so invalidates its code:
// codes are single-use (RFC 6749 section 4.1.2).
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.authRequests[id]; ok {
		delete(s.codes, a.code)
		delete(s.authRequests, id)
	}
	return nil
}

// pendingAuthRequest returns the auth request a login form is for.
func (s *storage) pendingAuthRequest(id string) (*authRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.authRequestLocked(id, time.Now())
	if err != nil {
		return nil, err
	}
	if a.done {
		return nil, errAlreadyLoggedIn
	}
	return a.clone(), nil
}

// ssoSession is a browser's login at the provider.
type ssoSession struct {
	subject  string
	authTime time.Time
}

// newSSOSession records a login session and returns its cookie value.
func (s *storage) newSSOSession(subject string, authTime time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, o := range s.ssoSessions {
		if time.Since(o.authTime) > ssoTTL {
			delete(s.ssoSessions, k)
		}
	}
	v := rand.Text()
	s.ssoSessions[v] = ssoSession{subject, authTime}
	return v
}

// loginBySSO completes auth request id with the login session named by
// cookie, if there is one and the request lets it answer: no
// prompt=login, and max_age not exceeded, unless ignoreReauth.
func (s *storage) loginBySSO(id, cookie string, ignoreReauth bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	sso, ok := s.ssoSessions[cookie]
	if !ok {
		return false
	}
	a, err := s.authRequestLocked(id, now)
	if err != nil || a.done {
		return false
	}
	if _, err := s.activeUserLocked(sso.subject); err != nil {
		return false
	}
	if !ignoreReauth {
		if slices.Contains(a.prompt, oidc.PromptLogin) {
			return false
		}
		if a.maxAge != nil && now.Sub(sso.authTime) > time.Duration(*a.maxAge)*time.Second {
			return false
		}
	}
	a.done, a.subject, a.authTime, a.acr = true, sso.subject, sso.authTime, s.acr
	return true
}

// login checks a username and password for auth request id and, if they
// are right, marks the request authenticated.
func (s *storage) login(id, username, password string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	a, err := s.authRequestLocked(id, now)
	if err != nil {
		return err
	}
	if a.done {
		return errAlreadyLoggedIn
	}
	u, ok := s.users[username]
	want := ""
	if ok {
		want = u.Password
	}
	// Hashing first makes the comparison independent of the lengths.
	got, exp := sha256.Sum256([]byte(password)), sha256.Sum256([]byte(want))
	if subtle.ConstantTimeCompare(got[:], exp[:]) != 1 || !ok {
		return errBadCredentials
	}
	if u.disabled {
		return errUserDisabled
	}
	a.done, a.subject, a.authTime, a.acr = true, u.Subject, now, s.acr
	return nil
}

// activeUserLocked returns the enabled user with the given subject.
func (s *storage) activeUserLocked(subject string) (*user, error) {
	u, ok := s.subjects[subject]
	switch {
	case !ok:
		return nil, errUnknownUser
	case u.disabled:
		return nil, errUserDisabled
	}
	return u, nil
}

func (s *storage) checkActive(subject string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.activeUserLocked(subject)
	return err
}

func (s *storage) setDisabled(username string, disabled bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	if ok {
		u.disabled = disabled
	}
	return ok
}

// newAccessTokenLocked records a new access token.
func (s *storage) newAccessTokenLocked(subject, clientID string, scopes []string, grant string) *accessToken {
	now := time.Now()
	s.sweepLocked(now)
	at := &accessToken{
		id:       rand.Text(),
		grant:    grant,
		subject:  subject,
		clientID: clientID,
		scopes:   slices.Clone(scopes),
		issued:   now,
		expiry:   now.Add(s.accessTTL),
	}
	s.accessTokens[at.id] = at
	return at
}

// mintRecord records an access token for Provider.AccessToken.
func (s *storage) mintRecord(username, clientID string, scopes []string) (*accessToken, *user, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	switch {
	case !ok:
		return nil, nil, fmt.Errorf("%w %q", errUnknownUser, username)
	case u.disabled:
		return nil, nil, fmt.Errorf("%w: %q", errUserDisabled, username)
	}
	at := s.newAccessTokenLocked(u.Subject, clientID, scopes, "")
	cu := *u
	return at, &cu, nil
}

// accessTokenClaims returns the claims of the recorded access token id,
// RFC 9068 section 2.2 plus the user's mail claims.
func (s *storage) accessTokenClaims(id string) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.accessTokens[id]
	if !ok {
		return nil, fmt.Errorf("devprovider: no access token %q", id)
	}
	u, err := s.activeUserLocked(at.subject)
	if err != nil {
		return nil, err
	}
	return s.accessTokenClaimsOf(at, u), nil
}

func (s *storage) accessTokenClaimsOf(at *accessToken, u *user) map[string]any {
	c := map[string]any{
		"iss":       s.issuer,
		"sub":       at.subject,
		"aud":       s.audience,
		"exp":       at.expiry.Unix(),
		"iat":       at.issued.Unix(),
		"jti":       at.id,
		"client_id": at.clientID,
		"scope":     strings.Join(at.scopes, " "),
	}
	for k, v := range userClaims(u) {
		c[k] = v
	}
	return c
}

// userClaims are the claims every access token of u carries, whatever
// its scopes: smtpgate reads the mailbox from them.
func userClaims(u *user) map[string]any {
	c := map[string]any{"email_verified": u.EmailVerified}
	if u.Email != "" {
		c["email"] = u.Email
	}
	if len(u.Aliases) > 0 {
		c["aliases"] = slices.Clone(u.Aliases)
	}
	if len(u.Groups) > 0 {
		c["groups"] = slices.Clone(u.Groups)
	}
	return c
}

func clientIDOf(req op.TokenRequest) (string, error) {
	r, ok := req.(interface{ GetClientID() string })
	if !ok {
		return "", fmt.Errorf("devprovider: unsupported token request %T", req)
	}
	return r.GetClientID(), nil
}

// CreateAccessToken records an access token without a refresh token.
func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	clientID, err := clientIDOf(req)
	if err != nil {
		return "", time.Time{}, err
	}
	var grant string
	if r, ok := req.(*refreshTokenRequest); ok {
		grant = r.rt.grant
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.newAccessTokenLocked(req.GetSubject(), clientID, req.GetScopes(), grant)
	return at.id, at.expiry, nil
}

// CreateAccessAndRefreshTokens records an access token and a refresh
// token. For a refresh_token grant it rotates: currentRefreshToken stops
// working, atomically, so of two uses of one token only one succeeds.
func (s *storage) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, currentRefreshToken string) (string, string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rt *refreshToken
	switch r := req.(type) {
	case *refreshTokenRequest:
		old, ok := s.refreshTokens[currentRefreshToken]
		if !ok || old.grant != r.rt.grant {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token already used or revoked")
		}
		delete(s.refreshTokens, currentRefreshToken)
		rt = &refreshToken{
			grant:    old.grant,
			subject:  old.subject,
			clientID: old.clientID,
			scopes:   old.scopes, // RFC 6749 section 6: same scope as the old one
			authTime: old.authTime,
			amr:      old.amr,
		}
	case *authRequest:
		rt = &refreshToken{
			grant:    rand.Text(),
			subject:  r.subject,
			clientID: r.clientID,
			scopes:   slices.Clone(r.scopes),
			authTime: r.authTime,
			amr:      r.GetAMR(),
		}
	default:
		return "", "", time.Time{}, fmt.Errorf("devprovider: unsupported token request %T", req)
	}
	rt.token = rand.Text()
	s.refreshTokens[rt.token] = rt
	at := s.newAccessTokenLocked(rt.subject, rt.clientID, req.GetScopes(), rt.grant)
	return at.id, rt.token, at.expiry, nil
}

// TokenRequestByRefreshToken refuses the refresh tokens of disabled users.
func (s *storage) TokenRequestByRefreshToken(_ context.Context, token string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refreshTokens[token]
	if !ok {
		return nil, errors.New("devprovider: unknown refresh token")
	}
	if _, err := s.activeUserLocked(rt.subject); err != nil {
		return nil, err
	}
	c := *rt
	c.scopes = slices.Clone(rt.scopes)
	c.amr = slices.Clone(rt.amr)
	return &refreshTokenRequest{rt: c, current: slices.Clone(rt.scopes)}, nil
}

// revokeGrantLocked deletes every token of a grant.
func (s *storage) revokeGrantLocked(grant string) {
	for k, rt := range s.refreshTokens {
		if rt.grant == grant {
			delete(s.refreshTokens, k)
		}
	}
	for k, at := range s.accessTokens {
		if at.grant == grant {
			delete(s.accessTokens, k)
		}
	}
}

// TerminateSession ends what a logout can end here: the user's grants to
// the client (all clients when clientID is empty). There is no browser
// session: every authorization shows the login form.
func (s *storage) TerminateSession(_ context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, sso := range s.ssoSessions {
		if sso.subject == userID {
			delete(s.ssoSessions, k)
		}
	}
	for _, rt := range s.refreshTokens {
		if rt.subject == userID && (clientID == "" || rt.clientID == clientID) {
			s.revokeGrantLocked(rt.grant)
		}
	}
	for k, at := range s.accessTokens {
		if at.subject == userID && (clientID == "" || at.clientID == clientID) {
			delete(s.accessTokens, k)
		}
	}
	return nil
}

// RevokeToken implements RFC 7009. Revoking a refresh token revokes its
// whole grant (section 2.1); unknown tokens are not an error (section 2.2).
func (s *storage) RevokeToken(_ context.Context, tokenOrTokenID, _, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt, ok := s.refreshTokens[tokenOrTokenID]; ok {
		if rt.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was issued to another client")
		}
		s.revokeGrantLocked(rt.grant)
		return nil
	}
	if at, ok := s.accessTokens[tokenOrTokenID]; ok {
		if at.clientID != clientID {
			return oidc.ErrInvalidClient().WithDescription("token was issued to another client")
		}
		delete(s.accessTokens, tokenOrTokenID)
	}
	return nil
}

// GetRefreshTokenInfo returns the refresh token itself as its ID.
func (s *storage) GetRefreshTokenInfo(_ context.Context, _, token string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refreshTokens[token]
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.subject, rt.token, nil
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return s.key, nil }

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{s.key.public()}, nil
}

// GetClientByClientID returns invalid_client for unknown clients, so that
// /authorize answers 400 rather than 500, and never redirects.
func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	c, ok := s.clients[clientID]
	if !ok {
		return nil, oidc.ErrInvalidClient().WithDescription("unknown client").
			WithParent(fmt.Errorf("devprovider: unknown client %q", clientID))
	}
	return c, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, clientID, clientSecret string) error {
	c, ok := s.clients[clientID]
	switch {
	case !ok:
		return fmt.Errorf("devprovider: unknown client %q", clientID)
	case c.public():
		return fmt.Errorf("devprovider: client %q is public and has no secret", clientID)
	}
	got, want := sha256.Sum256([]byte(clientSecret)), sha256.Sum256([]byte(c.secret))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return fmt.Errorf("devprovider: wrong secret for client %q", clientID)
	}
	return nil
}

// SetUserinfoFromScopes does nothing: zitadel deprecates it in favour of
// SetUserinfoFromRequest, which it calls right after it and which does
// the work.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest fills the claims of an ID token.
func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.activeUserLocked(req.GetSubject())
	if err != nil {
		return err
	}
	setUserinfo(info, u, scopes)
	return nil
}

// setUserinfo fills info from u as the scopes allow (OpenID Connect Core
// 1.0 section 5.4).
func setUserinfo(info *oidc.UserInfo, u *user, scopes []string) {
	info.Subject = u.Subject
	if slices.Contains(scopes, oidc.ScopeProfile) {
		info.Name = u.Name
		info.PreferredUsername = u.Username
	}
	if slices.Contains(scopes, oidc.ScopeEmail) && u.Email != "" {
		info.Email = u.Email
		// A claim, not the struct field: the field omits false.
		info.AppendClaims("email_verified", u.EmailVerified)
	}
	if len(u.Aliases) > 0 {
		info.AppendClaims("aliases", slices.Clone(u.Aliases))
	}
	if len(u.Groups) > 0 {
		info.AppendClaims("groups", slices.Clone(u.Groups))
	}
}

// liveAccessTokenLocked returns the record of a current access token of
// an enabled user.
func (s *storage) liveAccessTokenLocked(tokenID, subject string) (*accessToken, *user, error) {
	at, ok := s.accessTokens[tokenID]
	if !ok || at.subject != subject || time.Now().After(at.expiry) {
		return nil, nil, errors.New("devprovider: access token unknown, revoked or expired")
	}
	u, err := s.activeUserLocked(subject)
	if err != nil {
		return nil, nil, err
	}
	return at, u, nil
}

// SetUserinfoFromToken serves the UserInfo endpoint.
func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, u, err := s.liveAccessTokenLocked(tokenID, subject)
	if err != nil {
		// zitadel answers 403 with this error's type.
		return oidc.ErrAccessDenied().WithDescription("access token revoked or expired, or user disabled").WithParent(err)
	}
	setUserinfo(info, u, at.scopes)
	return nil
}

// SetIntrospectionFromToken serves RFC 7662 introspection to any
// confidential client; an error makes the token inactive.
func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, u, err := s.liveAccessTokenLocked(tokenID, subject)
	if err != nil {
		return err
	}
	info := new(oidc.UserInfo)
	setUserinfo(info, u, at.scopes)
	resp.SetUserInfo(info)
	resp.Scope = slices.Clone(at.scopes)
	resp.ClientID = at.clientID
	resp.TokenType = oidc.BearerToken
	resp.Expiration = oidc.FromTime(at.expiry)
	resp.IssuedAt = oidc.FromTime(at.issued)
	resp.Audience = oidc.Audience{s.audience}
	resp.Issuer = s.issuer
	resp.JWTID = at.id
	return nil
}

// GetPrivateClaimsFromScopes returns the claims zitadel adds to access
// tokens it builds itself. It builds none here (Server.CodeExchange and
// Server.RefreshToken sign them), but the answer is the same one.
func (s *storage) GetPrivateClaimsFromScopes(_ context.Context, userID, _ string, _ []string) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.activeUserLocked(userID)
	if err != nil {
		return nil, err
	}
	return userClaims(u), nil
}

// GetKeyByIDAndClientID serves private_key_jwt client authentication and
// the JWT profile grant (RFC 7523), which the provider does not offer:
// op.Config.AuthMethodPrivateKeyJWT is off and Server.JWTProfile refuses.
func (s *storage) GetKeyByIDAndClientID(_ context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	return nil, fmt.Errorf("devprovider: no key %q for client %q: private_key_jwt is not supported", keyID, clientID)
}

// ValidateJWTProfileScopes serves the JWT profile grant, which the
// provider does not offer.
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("devprovider: the JWT profile grant is not supported")
}

func (s *storage) Health(context.Context) error { return nil }
