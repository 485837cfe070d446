package gateway

import (
	"net"
	"testing"
)

// TestClientPrefix counts IPv4 clients by address and IPv6 clients by
// /64, where one host may hold the whole prefix.
func TestClientPrefix(t *testing.T) {
	p := func(s string) string {
		return clientPrefix(&net.TCPAddr{IP: net.ParseIP(s), Port: 587}).String()
	}
	for _, tc := range []struct{ a, b string }{
		{"127.0.0.1", "127.0.0.1"},
		{"::ffff:127.0.0.1", "127.0.0.1"}, // IPv4-mapped counts as IPv4
		{"::1", "::2"},                    // one /64
		{"::1", "::ffff:ffff:ffff:ffff"},  // still ::/64
	} {
		if p(tc.a) != p(tc.b) {
			t.Errorf("clientPrefix(%s) = %s, clientPrefix(%s) = %s: want the same", tc.a, p(tc.a), tc.b, p(tc.b))
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"127.0.0.1", "127.0.0.2"},
		{"::1", "0:0:0:1::1"}, // another /64
	} {
		if p(tc.a) == p(tc.b) {
			t.Errorf("clientPrefix(%s) = clientPrefix(%s) = %s: want them apart", tc.a, tc.b, p(tc.a))
		}
	}
}
