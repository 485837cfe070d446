package devprovider

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// signingKey is the provider's one RS256 key.
type signingKey struct {
	id   string
	priv *rsa.PrivateKey
}

var _ op.SigningKey = (*signingKey)(nil)

// newSigningKey returns signer as a signingKey, or a new RSA-2048 key when
// signer is nil. Config.Validate has checked signer's type and size.
func newSigningKey(signer crypto.Signer) (*signingKey, error) {
	priv, _ := signer.(*rsa.PrivateKey)
	if priv == nil {
		var err error
		if priv, err = rsa.GenerateKey(rand.Reader, minRSABits); err != nil {
			return nil, fmt.Errorf("devprovider: generate signing key: %w", err)
		}
	}
	// The kid is the RFC 7638 thumbprint, so a persisted key keeps its kid.
	tp, err := (&jose.JSONWebKey{Key: &priv.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("devprovider: signing key thumbprint: %w", err)
	}
	return &signingKey{id: base64.RawURLEncoding.EncodeToString(tp), priv: priv}, nil
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.priv }
func (k *signingKey) ID() string                                  { return k.id }

func (k *signingKey) public() op.Key { return publicKey{id: k.id, pub: &k.priv.PublicKey} }

// sign serializes claims as a JWS with the given "typ" header.
func (k *signingKey) sign(claims map[string]any, typ jose.ContentType) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.id}},
		(&jose.SignerOptions{}).WithType(typ),
	)
	if err != nil {
		return "", fmt.Errorf("devprovider: signer: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devprovider: marshal claims: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("devprovider: sign: %w", err)
	}
	return jws.CompactSerialize()
}

// publicKey is the JWKS entry of a signingKey.
type publicKey struct {
	id  string
	pub *rsa.PublicKey
}

var _ op.Key = publicKey{}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.pub }
