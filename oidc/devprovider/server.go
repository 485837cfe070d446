package devprovider

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// server is zitadel's LegacyServer, which drives storage through the
// op.Provider, with the methods this provider does differently:
//
//   - VerifyAuthRequest matches redirect URIs itself, host included.
//   - Authorize requires PKCE with S256 and answers prompt=none.
//   - CodeExchange and RefreshToken sign access tokens themselves: zitadel
//     gives access and ID tokens one audience and the "typ" JWT, while
//     smtpgate wants RFC 9068 access tokens (typ "at+jwt", aud
//     Config.Audience) next to standard ID tokens (aud = client ID).
//   - Discovery lists only what is offered.
//   - JWTProfile is refused.
type server struct {
	*op.LegacyServer
	p *Provider
}

var _ op.ExtendedLegacyServer = (*server)(nil)

// VerifyAuthRequest finds the client and checks the redirect URI before
// anything can redirect to it: an unknown client or an unregistered
// redirect URI gets an error page, never a redirect (RFC 6749 section
// 4.1.2.1).
func (s *server) VerifyAuthRequest(ctx context.Context, r *op.Request[oidc.AuthRequest]) (*op.ClientRequest[oidc.AuthRequest], error) {
	cr, err := s.LegacyServer.VerifyAuthRequest(ctx, r)
	if err != nil {
		return nil, err
	}
	c, ok := cr.Client.(*client)
	if !ok || !c.redirectAllowed(r.Data.RedirectURI) {
		s.p.log.Info("devprovider: redirect_uri refused", "client_id", r.Data.ClientID, "redirect_uri", r.Data.RedirectURI)
		return nil, oidc.ErrInvalidRequestRedirectURI().WithDescription("redirect_uri is not registered for this client")
	}
	return cr, nil
}

// Authorize runs once zitadel has validated the redirect URI, so its
// errors go back to the client with the state.
func (s *server) Authorize(ctx context.Context, r *op.ClientRequest[oidc.AuthRequest]) (*op.Redirect, error) {
	req := r.Data
	switch {
	case slices.Contains(req.Prompt, oidc.PromptNone):
		// No session outlives a login here, so there is never one to reuse.
		return nil, oidc.ErrLoginRequired().WithDescription("the dev provider keeps no login session")
	case req.CodeChallenge == "" && r.Client.AuthMethod() == oidc.AuthMethodNone:
		return nil, oidc.ErrInvalidRequest().WithDescription("public clients must use PKCE (code_challenge with code_challenge_method S256)")
	case req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256:
		// RFC 7636 section 4.2: plain is for clients that cannot do S256.
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	return s.LegacyServer.Authorize(ctx, r)
}

// CodeExchange redeems an authorization code. Any attempt burns the code,
// failed or not, so a stolen code gets one guess at the PKCE verifier.
func (s *server) CodeExchange(ctx context.Context, r *op.ClientRequest[oidc.AccessTokenRequest]) (*op.Response, error) {
	authReq, err := s.p.st.redeemCode(r.Data.Code)
	if err != nil {
		return nil, oidc.ErrInvalidGrant().WithDescription("invalid code").WithParent(err)
	}
	// Unlike LegacyServer, check PKCE for confidential clients too: once a
	// challenge was sent, a verifier is required (RFC 7636 section 4.6).
	if err := op.AuthorizeCodeChallenge(r.Data.CodeVerifier, authReq.GetCodeChallenge()); err != nil {
		return nil, err
	}
	if r.Client.GetID() != authReq.GetClientID() {
		return nil, oidc.ErrInvalidGrant().WithDescription("code was issued to another client")
	}
	if r.Data.RedirectURI != authReq.GetRedirectURI() {
		return nil, oidc.ErrInvalidGrant().WithDescription("redirect_uri does not correspond")
	}
	if err := s.p.st.checkActive(authReq.GetSubject()); err != nil {
		return nil, oidc.ErrInvalidGrant().WithDescription("user is disabled").WithParent(err)
	}
	resp, err := s.tokenResponse(ctx, authReq, r.Client, r.Data.Code, "")
	if err != nil {
		return nil, err
	}
	return op.NewResponse(resp), nil
}

// RefreshToken redeems and rotates a refresh token.
func (s *server) RefreshToken(ctx context.Context, r *op.ClientRequest[oidc.RefreshTokenRequest]) (*op.Response, error) {
	req, err := op.RefreshTokenRequestByRefreshToken(ctx, s.p.st, r.Data.RefreshToken)
	if err != nil {
		return nil, err
	}
	if r.Client.GetID() != req.GetClientID() {
		return nil, oidc.ErrInvalidGrant().WithDescription("refresh token was issued to another client")
	}
	if err := op.ValidateRefreshTokenScopes(r.Data.Scopes, req); err != nil {
		return nil, err
	}
	resp, err := s.tokenResponse(ctx, req.(*refreshTokenRequest), r.Client, "", r.Data.RefreshToken)
	if err != nil {
		return nil, err
	}
	return op.NewResponse(resp), nil
}

// tokenRequest is what both grants hand to tokenResponse.
type tokenRequest interface {
	op.IDTokenRequest
	op.TokenRequest
}

// tokenResponse follows op.CreateTokenResponse, but signs the access token
// itself. The ID token, made by op.CreateIDToken, carries its at_hash.
func (s *server) tokenResponse(ctx context.Context, req tokenRequest, client op.Client, code, refreshToken string) (*oidc.AccessTokenResponse, error) {
	var (
		tokenID, newRefresh string
		exp                 time.Time
		err                 error
	)
	_, refreshing := req.(*refreshTokenRequest)
	if refreshing || slices.Contains(req.GetScopes(), oidc.ScopeOfflineAccess) {
		tokenID, newRefresh, exp, err = s.p.st.CreateAccessAndRefreshTokens(ctx, req, refreshToken)
	} else {
		tokenID, exp, err = s.p.st.CreateAccessToken(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	claims, err := s.p.st.accessTokenClaims(tokenID)
	if err != nil {
		return nil, oidc.ErrInvalidGrant().WithParent(err)
	}
	accessToken, err := s.p.st.key.sign(claims, accessTokenType)
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(err)
	}
	var idToken string
	if slices.Contains(req.GetScopes(), oidc.ScopeOpenID) {
		idToken, err = op.CreateIDToken(ctx, s.p.issuer, req, client.IDTokenLifetime(), accessToken, code, s.p.st, client)
		if err != nil {
			return nil, oidc.ErrServerError().WithParent(err)
		}
	}
	s.p.log.Info("devprovider: tokens issued", "client_id", client.GetID(), "sub", req.GetSubject(),
		"scope", req.GetScopes(), "refresh", newRefresh != "", "rotated", refreshing)
	return &oidc.AccessTokenResponse{
		AccessToken:  accessToken,
		IDToken:      idToken,
		RefreshToken: newRefresh,
		TokenType:    oidc.BearerToken,
		ExpiresIn:    uint64(max(time.Until(exp).Round(time.Second), 0) / time.Second),
		Scope:        req.GetScopes(),
	}, nil
}

// Discovery trims zitadel's metadata to what this provider offers.
func (s *server) Discovery(ctx context.Context, r *op.Request[struct{}]) (*op.Response, error) {
	resp, err := s.LegacyServer.Discovery(ctx, r)
	if err != nil {
		return nil, err
	}
	d, ok := resp.Data.(*oidc.DiscoveryConfiguration)
	if !ok {
		return nil, errors.New("devprovider: unexpected discovery document type")
	}
	d.ResponseTypesSupported = []string{string(oidc.ResponseTypeCode)}
	d.GrantTypesSupported = []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
	d.TokenEndpointAuthMethodsSupported = []oidc.AuthMethod{oidc.AuthMethodBasic, oidc.AuthMethodPost, oidc.AuthMethodNone}
	d.CodeChallengeMethodsSupported = []oidc.CodeChallengeMethod{oidc.CodeChallengeMethodS256}
	return resp, nil
}

// JWTProfile refuses the JWT bearer grant (RFC 7523): there are no client
// keys to check assertions with.
func (s *server) JWTProfile(ctx context.Context, r *op.Request[oidc.JWTProfileGrantRequest]) (*op.Response, error) {
	return s.LegacyServer.UnimplementedServer.JWTProfile(ctx, r)
}
