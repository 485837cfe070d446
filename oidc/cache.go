package oidc

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// A tokenCache remembers verified tokens by their SHA-256, so a client that
// sends the same token on every connection costs one signature check. It is
// an LRU list bounded by max; an entry dies at its token's exp.
type tokenCache struct {
	max int

	mu    sync.Mutex
	order *list.List // of *cacheEntry, most recently used first
	items map[[sha256.Size]byte]*list.Element
}

type cacheEntry struct {
	key [sha256.Size]byte
	id  *Identity // never modified once cached
	exp time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, order: list.New(), items: make(map[[sha256.Size]byte]*list.Element)}
}

// get returns the identity cached for key, unless now is at or past its exp.
func (c *tokenCache) get(key [sha256.Size]byte, now time.Time) (*Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.exp) {
		c.order.Remove(el)
		delete(c.items, key)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.id, true
}

// put caches id until exp, evicting the least recently used entry when full.
func (c *tokenCache) put(key [sha256.Size]byte, id *Identity, exp, now time.Time) {
	if !now.Before(exp) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		e.id, e.exp = id, exp
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key: key, id: id, exp: exp})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
