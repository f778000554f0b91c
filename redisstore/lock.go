package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// lockPollMax is the longest pause between two attempts to take a
	// busy lock.
	lockPollMax = 100 * time.Millisecond

	// unlockTimeout bounds the script that releases the lock. If it
	// fails, the lock expires after its TTL.
	unlockTimeout = 10 * time.Second
)

var (
	// extendScript resets the lock's TTL to ARGV[2] milliseconds and
	// returns 1 if the lock holds ARGV[1], else returns 0.
	extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`)

	// unlockScript deletes the lock and returns 1 if it holds ARGV[1],
	// else returns 0.
	unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1`)
)

// heldLock is a lock a Store holds.
type heldLock struct {
	key   string
	token string // random, this holder's
	ttl   time.Duration

	stop     chan struct{} // closed by unlock: the watchdog returns
	finished chan struct{} // closed when the watchdog has returned

	// lostOnce guards the warning that the lock was lost.
	lostOnce sync.Once
}

// lockTTL is LockTTL, or DefaultLockTTL when it is zero or negative, in
// whole milliseconds (what PX takes), at least 3 ms.
func (s *Store) lockTTL() time.Duration {
	if s.LockTTL <= 0 {
		return DefaultLockTTL
	}
	return max(s.LockTTL.Truncate(time.Millisecond), 3*time.Millisecond)
}

// Lock takes the lock of Key, waiting until it is free or ctx ends, and
// returns the function that releases it. It blocks every other Lock of
// the same Key and Prefix, in this process or another, and no Lock of
// another Key.
//
// If ctx ends first, Lock returns an error satisfying errors.Is(err,
// ctx.Err()). A busy lock is polled, at most every 100 ms. unlock may be
// called more than once; calls after the first do nothing.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	_, lockKey, err := s.keys()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("redisstore: taking the lock: %w", err)
	}
	h := &heldLock{key: lockKey, token: hex.EncodeToString(b), ttl: s.lockTTL(),
		stop: make(chan struct{}), finished: make(chan struct{})}
	pause := 5 * time.Millisecond
	for {
		ok, err := s.Client.SetNX(ctx, lockKey, h.token, h.ttl).Result()
		if err != nil {
			if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
				return nil, fmt.Errorf("redisstore: waiting for the lock: %w (%w)", cerr, err)
			}
			return nil, fmt.Errorf("redisstore: taking the lock: %w", err)
		}
		if ok {
			break
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("redisstore: waiting for the lock: %w", ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, lockPollMax)
	}
	s.mu.Lock()
	s.held = h
	s.mu.Unlock()
	go s.watchdog(h)
	var once sync.Once
	return func() { once.Do(func() { s.unlock(h) }) }, nil
}

// watchdog extends h's TTL every third of it until unlock stops it, or
// until the lock is found lost: taken by another token, gone, or not
// extended for a whole TTL because Redis could not be reached.
func (s *Store) watchdog(h *heldLock) {
	defer close(h.finished)
	every := h.ttl / 3
	extended := time.Now() // the lock's TTL runs from here at least
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		start := time.Now()
		ok, err := extendScript.Run(ctx, s.Client, []string{h.key}, h.token, h.ttl.Milliseconds()).Int()
		cancel()
		switch {
		case err == nil && ok == 1:
			extended = start
		case err == nil:
			h.lost(s, "watchdog")
			return
		case time.Since(extended) >= h.ttl:
			h.lost(s, "watchdog")
			return
		}
	}
}

// lost reports, once, that h was lost.
func (h *heldLock) lost(s *Store, by string) {
	h.lostOnce.Do(func() {
		if s.Logger != nil {
			s.Logger.Warn("redisstore: the lock was lost while held; another process may be refreshing",
				"key", h.key, "noticed_by", by)
		}
	})
}

// unlock stops the watchdog and deletes the lock if it still holds h's
// token.
func (s *Store) unlock(h *heldLock) {
	close(h.stop)
	<-h.finished
	s.mu.Lock()
	if s.held == h {
		s.held = nil
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
	defer cancel()
	ok, err := unlockScript.Run(ctx, s.Client, []string{h.key}, h.token).Int()
	switch {
	case err != nil:
		// The lock expires after its TTL.
		if s.Logger != nil {
			s.Logger.Warn("redisstore: releasing the lock failed; it expires after its TTL",
				"key", h.key, "ttl", h.ttl, "error", err)
		}
	case ok == 0:
		h.lost(s, "unlock")
	}
}
