package gateway

import (
	"testing"
	"time"
)

func TestSlowdown(t *testing.T) {
	now := time.Unix(1000, 0)
	sd := newSlowdown(time.Second)
	sd.now = func() time.Time { return now }
	var got []time.Duration
	for range 7 {
		got = append(got, sd.fail("192.0.2.1"))
	}
	want := []time.Duration{0, 0, 0, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays = %v, want %v", got, want)
		}
	}
	if d := sd.fail("192.0.2.2"); d != 0 {
		t.Errorf("another address: fail = %v, want 0", d)
	}
	for range 20 {
		sd.fail("192.0.2.1")
	}
	if d := sd.fail("192.0.2.1"); d != sd.max {
		t.Errorf("after many failures: fail = %v, want the cap %v", d, sd.max)
	}
	now = now.Add(11 * time.Minute)
	if d := sd.fail("192.0.2.1"); d != 0 {
		t.Errorf("after the window: fail = %v, want 0", d)
	}

	// Memory is bounded: old addresses are swept, and when every slot is
	// recent, new addresses are not tracked rather than growing the map.
	sd = newSlowdown(time.Second)
	sd.now = func() time.Time { return now }
	sd.limit = 2
	sd.fail("a")
	sd.fail("b")
	for range 5 {
		if d := sd.fail("c"); d != 0 {
			t.Errorf("untracked address delayed by %v", d)
		}
	}
	if len(sd.seen) != 2 {
		t.Errorf("tracking %d addresses, limit 2", len(sd.seen))
	}
	now = now.Add(11 * time.Minute)
	sd.fail("c")
	if _, ok := sd.seen["c"]; !ok || len(sd.seen) != 1 {
		t.Errorf("after the window, seen = %v, want only c", sd.seen)
	}
	var off *slowdown
	if d := off.fail("x"); d != 0 {
		t.Errorf("disabled slowdown delays by %v", d)
	}
}
