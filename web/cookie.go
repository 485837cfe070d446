package web

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

var errBadCookie = errors.New("web: cookie missing, expired or tampered with")

// A cookieCodec seals values into cookies with AES-256-GCM, so they can be
// neither read nor changed by the browser. The cookie's name is bound in as
// additional data, so one cookie cannot stand in for another.
type cookieCodec struct{ aead cipher.AEAD }

func newCookieCodec(key []byte) cookieCodec {
	block, err := aes.NewCipher(key[:32])
	if err != nil {
		panic("web: " + err.Error()) // key length is checked by New
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("web: " + err.Error())
	}
	return cookieCodec{aead}
}

type sealed struct {
	Value json.RawMessage `json:"v"`
	Exp   int64           `json:"e"`
}

func (c cookieCodec) seal(name string, v any, exp time.Time) (string, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	plain, err := json.Marshal(sealed{raw, exp.Unix()})
	if err != nil {
		return "", err
	}
	nonce := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(plain)+c.aead.Overhead())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(c.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

func (c cookieCodec) open(name, value string, v any, now time.Time) error {
	b, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(b) < c.aead.NonceSize() {
		return errBadCookie
	}
	plain, err := c.aead.Open(nil, b[:c.aead.NonceSize()], b[c.aead.NonceSize():], []byte(name))
	if err != nil {
		return errBadCookie
	}
	var s sealed
	if err := json.Unmarshal(plain, &s); err != nil || now.Unix() >= s.Exp {
		return errBadCookie
	}
	if err := json.Unmarshal(s.Value, v); err != nil {
		return errBadCookie
	}
	return nil
}

// setCookie seals v into an HttpOnly, SameSite=Lax cookie that expires at
// exp; Secure when the app is served over https.
func (a *app) setCookie(w http.ResponseWriter, name string, v any, exp time.Time) error {
	value, err := a.sessions.seal(name, v, exp)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		Expires:  exp,
		HttpOnly: true,
		Secure:   a.secure,
		SameSite: http.SameSiteLaxMode,
	})
	return nil
}

func (a *app) readCookie(r *http.Request, name string, v any) error {
	ck, err := r.Cookie(name)
	if err != nil {
		return errBadCookie
	}
	return a.sessions.open(name, ck.Value, v, a.cfg.Now())
}

func (a *app) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: a.secure, SameSite: http.SameSiteLaxMode})
}

// Cookie names. With https the session cookie gets the __Host- prefix,
// which browsers only accept from this host, over https, for path /.
func (a *app) sessionCookie() string {
	if a.secure {
		return "__Host-smtpgate-session"
	}
	return "smtpgate-session"
}

// loginCookie names the cookie of the sign-in with the state: one per
// sign-in, so several tabs can sign in at once.
func (a *app) loginCookie(state string) string {
	if a.secure {
		return "__Host-smtpgate-login-" + state
	}
	return "smtpgate-login-" + state
}
