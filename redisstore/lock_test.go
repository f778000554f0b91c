package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/testutil"
)

type lockResult struct {
	unlock func()
	err    error
}

// lockAsync calls s.Lock in a goroutine and delivers its result.
func lockAsync(ctx context.Context, s *Store) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		unlock, err := s.Lock(ctx)
		ch <- lockResult{unlock, err}
	}()
	return ch
}

// extensions returns a channel that receives the lock key of every lock
// that the watchdog of a Store or Keyed on rdb extended: a signal, from
// a hook on the client, that a test waits on instead of polling the TTL.
func extensions(t *testing.T, rdb *redis.Client) <-chan string {
	ch := make(chan string, 16)
	rdb.AddHook(extendHook{ch})
	return ch
}

// extendHook sends to ch the key of each extension of a lock that
// succeeded.
type extendHook struct{ ch chan<- string }

func (extendHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (extendHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h extendHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		isExtend := len(args) > 3 && (args[0] == "evalsha" && args[1] == extendScript.Hash() ||
			args[0] == "eval" && args[1] == extendScriptSource)
		if c, ok := cmd.(*redis.Cmd); ok && isExtend && err == nil {
			if n, err := c.Int(); err == nil && n == 1 {
				select {
				case h.ch <- fmt.Sprint(args[3]):
				default:
				}
			}
		}
		return err
	}
}

// waitExtended waits until the watchdog has extended lockKey's lock.
func waitExtended(t *testing.T, ch <-chan string, lockKey string) {
	t.Helper()
	for testutil.Recv(t, ch, "the watchdog to extend "+lockKey) != lockKey {
	}
}

func TestLockExcludes(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	first := testStore(t, rdb)
	second := &Store{Client: rdb, Key: first.Key} // as in another process
	_, lockKey, _ := first.keys()

	unlock, err := first.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, lockKey).Val(); ttl <= time.Minute {
		t.Errorf("lock TTL %v; want more than the refresh timeout, 1 min", ttl)
	}
	// A Lock that cannot be had before its deadline fails with it.
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if u, err := second.Lock(dctx); err == nil {
		u()
		t.Fatal("a second Lock succeeded while the first held the lock")
	} else if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "redisstore: ") {
		t.Errorf("err = %v; want a redisstore error wrapping context.DeadlineExceeded", err)
	}
	// Another key is not blocked.
	other := testStore(t, rdb)
	u, err := other.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock of another key: %v", err)
	}
	u()

	got := lockAsync(ctx, second)
	unlock()
	unlock() // a second call does nothing
	r := <-got
	if r.err != nil {
		t.Fatalf("Lock after unlock: %v", r.err)
	}
	r.unlock()
	if n := rdb.Exists(ctx, lockKey).Val(); n != 0 {
		t.Errorf("the lock key exists after unlock")
	}
}

// The lock of a holder that stopped extending it (a crashed process)
// expires, and the next Lock gets it.
func TestLockOfCrashedHolderExpires(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	s := testStore(t, rdb)
	_, lockKey, _ := s.keys()
	// What a crashed holder leaves: a lock nobody extends.
	if err := rdb.Set(ctx, lockKey, "crashed-holder", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after the holder crashed: %v", err)
	}
	unlock()
}

// The watchdog extends the lock's TTL while it is held.
func TestWatchdogExtends(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	extended := extensions(t, rdb)
	s := testStore(t, rdb)
	s.LockTTL = 3 * time.Second
	_, lockKey, _ := s.keys()
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	// Without a watchdog the TTL only falls: it would stay at most at
	// first minus the time since. An extension (after a third of the TTL)
	// puts it well above.
	start := time.Now()
	first := rdb.PTTL(ctx, lockKey).Val()
	waitExtended(t, extended, lockKey)
	if ttl := rdb.PTTL(ctx, lockKey).Val(); ttl <= first-time.Since(start)+200*time.Millisecond {
		t.Errorf("TTL %v after the extension; want more than %v", ttl, first-time.Since(start)+200*time.Millisecond)
	}
	if err := s.Save(ctx, &oauth2.Token{AccessToken: "at"}); err != nil {
		t.Errorf("Save under the extended lock: %v", err)
	}
}

// A lock lost while held (expired, or taken by another process) is
// noticed: Load and Save fail with ErrLockLost and write nothing, unlock
// leaves the other holder's lock alone, and the loss is logged.
func TestLockLost(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	var logs testutil.Buffer
	s := testStore(t, rdb)
	s.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	tokenKey, lockKey, _ := s.keys()
	if err := s.Save(ctx, &oauth2.Token{AccessToken: "at-1", RefreshToken: "rt-1"}); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The lock expired and another process took it.
	if err := rdb.Set(ctx, lockKey, "another-process", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	serr := s.Save(ctx, &oauth2.Token{AccessToken: "at-2", RefreshToken: "rt-2"})
	_, lerr := s.Load(ctx)
	for _, err := range []error{serr, lerr} {
		if !errors.Is(err, ErrLockLost) || !strings.HasPrefix(err.Error(), "redisstore: ") {
			t.Errorf("err = %v; want a redisstore error wrapping ErrLockLost", err)
		}
	}
	unlock()
	if v := rdb.Get(ctx, lockKey).Val(); v != "another-process" {
		t.Errorf("lock = %q after unlock; want the other process's", v)
	}
	if !strings.Contains(logs.String(), "lock was lost") {
		t.Errorf("log %q does not report the lost lock", logs.String())
	}
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "at-1" {
		t.Errorf("stored %q; want at-1: Save wrote without the lock", got.AccessToken)
	}
	if strings.Contains(logs.String(), "rt-") || strings.Contains(logs.String(), rdb.Get(ctx, tokenKey).Val()) {
		t.Errorf("log shows a token: %s", logs.String())
	}
}

// The watchdog notices a lost lock on its own and logs it.
func TestWatchdogNoticesLoss(t *testing.T) {
	t.Parallel()
	rdb := testClient(t)
	ctx := testContext(t)
	var logs testutil.Buffer
	s := testStore(t, rdb)
	s.LockTTL = 300 * time.Millisecond
	s.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	_, lockKey, _ := s.keys()
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	rdb.Del(ctx, lockKey)
	logs.WaitFor(t, "the watchdog to log the lost lock", func(s string) bool { return strings.Contains(s, "noticed_by=watchdog") })
	if err := s.Save(ctx, &oauth2.Token{AccessToken: "at"}); !errors.Is(err, ErrLockLost) {
		t.Errorf("Save after the lock was lost: %v; want ErrLockLost", err)
	}
}

// TestErrLockLostIsTheCores: a TokenSource recognises the lost lock and
// takes the lock again before it writes.
func TestErrLockLostIsTheCores(t *testing.T) {
	if !errors.Is(ErrLockLost, pandadocauth.ErrLockLost) {
		t.Fatal("ErrLockLost does not wrap pandadocauth.ErrLockLost")
	}
}
