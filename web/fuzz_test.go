package web

import (
	"net"
	"net/http/httptest"
	"net/netip"
	"testing"
)

// FuzzRemoteIP feeds X-Forwarded-For values, which anyone can send, to
// the client-address rule: it never panics, and the answer is always an
// IP address that is the peer itself or one the header named.
func FuzzRemoteIP(f *testing.F) {
	for _, s := range []string{"198.51.100.7", "203.0.113.9, 198.51.100.7, 10.9.9.9", "", ",,,", "garbage", "::ffff:10.0.0.1", "2001:db8::1%eth0"} {
		f.Add("10.1.2.3:5000", s)
	}
	f.Add("192.0.2.1:5000", "198.51.100.7")
	a := &app{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		got := a.remoteIP(r)
		if ip, err := netip.ParseAddr(got); err == nil && a.trusted(ip) && got != peerHost(remote) {
			t.Fatalf("remote %q, X-Forwarded-For %q: client %s is a trusted proxy", remote, xff, got)
		}
	})
}

func peerHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}
