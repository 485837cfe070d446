package gateway

import (
	"sync"
	"time"
)

// A slowdown delays the failure replies to an address that keeps failing
// AUTH, across connections, so guessing app tokens or replaying stolen
// bearer tokens gets slow while a person who mistypes once does not
// notice. After free failures within window, each further failure waits
// step more than the last, up to max. Successes do not reset the count:
// many people may share one address behind NAT.
type slowdown struct {
	free   int
	window time.Duration
	step   time.Duration
	max    time.Duration
	limit  int // addresses tracked at most; beyond it new ones are not slowed
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*failures
}

type failures struct {
	n    int
	last time.Time
}

func newSlowdown(step time.Duration) *slowdown {
	return &slowdown{free: 3, window: 10 * time.Minute, step: step, max: 15 * time.Second, limit: 100000, now: time.Now, seen: make(map[string]*failures)}
}

// fail records a failure from addr and returns how long to wait before
// answering it.
func (sd *slowdown) fail(addr string) time.Duration {
	if sd == nil {
		return 0
	}
	now := sd.now()
	sd.mu.Lock()
	defer sd.mu.Unlock()
	f := sd.seen[addr]
	if f != nil && now.Sub(f.last) > sd.window {
		f.n = 0
	}
	if f == nil {
		if len(sd.seen) >= sd.limit {
			sd.sweep(now)
			if len(sd.seen) >= sd.limit {
				return 0
			}
		}
		f = &failures{}
		sd.seen[addr] = f
	}
	f.n++
	f.last = now
	if f.n <= sd.free {
		return 0
	}
	return min(time.Duration(f.n-sd.free)*sd.step, sd.max)
}

// sweep forgets addresses whose last failure is older than the window.
func (sd *slowdown) sweep(now time.Time) {
	for addr, f := range sd.seen {
		if now.Sub(f.last) > sd.window {
			delete(sd.seen, addr)
		}
	}
}
