package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
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

	// abandonTimeout bounds the release of a lock that a failed Lock may
	// have taken, so that a Lock failing on an unreachable Redis returns
	// soon.
	abandonTimeout = 2 * time.Second
)

var (
	// lockScript takes the lock for ARGV[1] for ARGV[2] milliseconds and
	// returns 1 if it is free, or if it holds ARGV[1] already (the
	// client retried a request whose reply was lost, and the first one
	// took the lock; then the TTL starts again); it returns 0 if another
	// token holds it.
	lockScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

	// extendScript resets the lock's TTL to ARGV[2] milliseconds and
	// returns 1 if the lock holds ARGV[1], else returns 0.
	extendScript = redis.NewScript(extendScriptSource)

	// unlockScript deletes the lock and returns 1 if it holds ARGV[1],
	// else returns 0.
	unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1`)
)

const extendScriptSource = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`

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
func (r tokens) ttl() time.Duration {
	if r.lockTTL <= 0 {
		return DefaultLockTTL
	}
	return max(r.lockTTL.Truncate(time.Millisecond), 3*time.Millisecond)
}

// lockTable records the locks a Store or Keyed holds, one per grant key,
// so that Load and Save of a locked key are fenced by its lock. The zero
// value is ready to use.
type lockTable struct {
	mu   sync.Mutex           // guards held
	held map[string]*heldLock // the locked grant keys; an entry lives from Lock to unlock
}

// get returns the lock held on key, or nil.
func (lt *lockTable) get(key string) *heldLock {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.held[key]
}

func (r tokens) lock(ctx context.Context, key string) (unlock func(), err error) {
	_, lockKey, err := r.keys(key)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("redisstore: taking the lock: %w", err)
	}
	h := &heldLock{key: lockKey, token: hex.EncodeToString(b), ttl: r.ttl(),
		stop: make(chan struct{}), finished: make(chan struct{})}
	pause := 5 * time.Millisecond
	for {
		// Not SET NX: go-redis retries a command whose reply was lost,
		// and the retry of a SET NX that took the lock would find it
		// taken, by this very Lock, which would then wait for it until
		// it expires. The script recognises the token.
		ok, err := lockScript.Run(ctx, r.client, []string{lockKey}, h.token, h.ttl.Milliseconds()).Bool()
		if err != nil {
			// The request may have taken the lock all the same.
			r.abandon(lockKey, h.token)
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
	lt := r.locks
	lt.mu.Lock()
	if lt.held == nil {
		lt.held = make(map[string]*heldLock)
	}
	lt.held[key] = h
	lt.mu.Unlock()
	go r.watchdog(h)
	var once sync.Once
	return func() { once.Do(func() { r.unlock(key, h) }) }, nil
}

// abandon releases the lock of lockKey if token holds it: the lock that a
// Lock whose request failed may have taken nonetheless, which would
// otherwise block the grant until it expires.
func (r tokens) abandon(lockKey, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), abandonTimeout)
	defer cancel()
	unlockScript.Run(ctx, r.client, []string{lockKey}, token)
}

// watchdog extends h's TTL every third of it until unlock stops it, or
// until the lock is found lost: taken by another token, gone, or not
// extended for a whole TTL because Redis could not be reached.
func (r tokens) watchdog(h *heldLock) {
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
		ok, err := extendScript.Run(ctx, r.client, []string{h.key}, h.token, h.ttl.Milliseconds()).Int()
		cancel()
		switch {
		case err == nil && ok == 1:
			extended = start
		case err == nil:
			h.lost(r.logger, "watchdog")
			return
		case time.Since(extended) >= h.ttl:
			h.lost(r.logger, "watchdog")
			return
		}
	}
}

// lost reports, once, that h was lost.
func (h *heldLock) lost(logger *slog.Logger, by string) {
	h.lostOnce.Do(func() {
		if logger != nil {
			logger.Warn("redisstore: the lock was lost while held; another process may be refreshing",
				"key", h.key, "noticed_by", by)
		}
	})
}

// unlock stops the watchdog of key's lock h and deletes the lock if it still holds h's
// token.
func (r tokens) unlock(key string, h *heldLock) {
	close(h.stop)
	<-h.finished
	lt := r.locks
	lt.mu.Lock()
	if lt.held[key] == h {
		delete(lt.held, key)
	}
	lt.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
	defer cancel()
	ok, err := unlockScript.Run(ctx, r.client, []string{h.key}, h.token).Int()
	switch {
	case err != nil:
		// The lock expires after its TTL.
		if r.logger != nil {
			r.logger.Warn("redisstore: releasing the lock failed; it expires after its TTL",
				"key", h.key, "ttl", h.ttl, "error", err)
		}
	case ok == 0:
		h.lost(r.logger, "unlock")
	}
}
