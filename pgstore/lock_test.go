package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/testserver"
	"github.com/gopandadoc/pandadocauth/internal/testutil"
)

// advisoryLocks counts the advisory locks on key's lock number in the
// test database, granted or waiting.
func advisoryLocks(t *testing.T, pool *pgxpool.Pool, key string, granted bool) int {
	t.Helper()
	id := uint64(lockID(key))
	var n int
	err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1 AND granted = $3`,
		int64(id>>32), int64(id&0xffffffff), granted).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// holderPID returns the backend process ID holding key's lock.
func holderPID(t *testing.T, pool *pgxpool.Pool, key string) int32 {
	t.Helper()
	id := uint64(lockID(key))
	var pid int32
	err := pool.QueryRow(context.Background(), `SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1 AND granted`,
		int64(id>>32), int64(id&0xffffffff)).Scan(&pid)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitFor polls cond until it holds, failing the test after 10 s. It
// is for the one thing PostgreSQL sends no signal about: a backend's
// wait for a lock shows in pg_locks, and nothing tells a client when one
// starts or ends (LISTEN/NOTIFY carries what sessions say, and a waiting
// session says nothing). Everything else these tests wait for
// has a signal: a channel, a connection that closes, or the pool's own
// semaphore (waitConnsBack).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitConnsBack returns once every connection of pool is back, none held
// and none still being closed: it acquires MaxConns connections, which
// waits on the pool's own semaphore (a closed connection gives its slot
// back once the pool has destroyed it, in the background), and releases
// them.
func waitConnsBack(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := testContext(t)
	var conns []*pgxpool.Conn
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatalf("waiting for the pool's connections to be back: %d still acquired: %v", pool.Stat().AcquiredConns()-int32(len(conns)), err)
		}
		conns = append(conns, c)
	}
}

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

func receive(t *testing.T, ch <-chan lockResult) lockResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Lock did not return")
		return lockResult{}
	}
}

func TestLockExcludes(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	ctx := testContext(t)
	key := randomName("lock-")
	first := &Store{Pool: pool, Key: key}
	// Another Store value, as in another process.
	second := &Store{Pool: pool, Key: key}

	unlock1, err := first.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := lockAsync(ctx, second)
	// Once PostgreSQL shows the second Lock waiting, it cannot have
	// returned.
	waitFor(t, "the second Lock to wait", func() bool { return advisoryLocks(t, pool, key, false) == 1 })
	select {
	case r := <-got:
		t.Fatalf("second Lock returned (err %v) while the first held the lock", r.err)
	default:
	}

	// Another key is not blocked.
	other := &Store{Pool: pool, Key: key + "-other"}
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	unlockOther, err := other.Lock(octx)
	if err != nil {
		t.Fatalf("Lock of another key: %v", err)
	}
	unlockOther()

	unlock1()
	r := receive(t, got)
	if r.err != nil {
		t.Fatalf("second Lock after unlock: %v", r.err)
	}
	if n := advisoryLocks(t, pool, key, true); n != 1 {
		t.Errorf("granted locks = %d; want 1", n)
	}
	r.unlock()
	if n := advisoryLocks(t, pool, key, true); n != 0 {
		t.Errorf("granted locks after unlock = %d; want 0", n)
	}
}

func TestUnlockReleases(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	ctx := testContext(t)
	key := randomName("lock-")
	s := &Store{Pool: pool, Key: key}
	for i := range 3 {
		unlock, err := s.Lock(ctx)
		if err != nil {
			t.Fatalf("Lock %d: %v", i, err)
		}
		if n := advisoryLocks(t, pool, key, true); n != 1 {
			t.Fatalf("granted locks while held = %d; want 1", n)
		}
		unlock()
		unlock() // a second call does nothing
		if n := advisoryLocks(t, pool, key, true); n != 0 {
			t.Fatalf("granted locks after unlock = %d; want 0", n)
		}
		if n := pool.Stat().AcquiredConns(); n != 0 {
			t.Fatalf("connections still acquired after unlock: %d", n)
		}
	}
}

func TestLockContext(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	ctx := testContext(t)
	key := randomName("lock-")
	holder := &Store{Pool: pool, Key: key}
	waiter := &Store{Pool: pool, Key: key}
	unlock, err := holder.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	t.Run("deadline", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		u, err := waiter.Lock(dctx)
		if err == nil {
			u()
			t.Fatal("Lock of a held lock succeeded")
		}
		if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "pgstore: ") {
			t.Errorf("err = %v; want a pgstore error wrapping context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Lock returned %v after its deadline", d)
		}
		// The abandoned wait is cancelled in PostgreSQL too, rather than
		// queueing until the holder lets go.
		waitFor(t, "the abandoned wait to end", func() bool { return advisoryLocks(t, pool, key, false) == 0 })
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		got := lockAsync(cctx, waiter)
		waitFor(t, "Lock to wait", func() bool { return advisoryLocks(t, pool, key, false) == 1 })
		cancel()
		r := receive(t, got)
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", r.err)
		}
		waitFor(t, "the abandoned wait to end", func() bool { return advisoryLocks(t, pool, key, false) == 0 })
	})
	t.Run("cancelled before", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := (&Store{Pool: pool, Key: randomName("lock-")}).Lock(cctx); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
	})

	// The holder still holds, and the lock passes on when it lets go.
	if n := advisoryLocks(t, pool, key, true); n != 1 {
		t.Fatalf("granted locks = %d; want 1", n)
	}
	got := lockAsync(ctx, waiter)
	waitFor(t, "Lock to wait", func() bool { return advisoryLocks(t, pool, key, false) == 1 })
	unlock()
	r := receive(t, got)
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.unlock()
}

func TestLockDiesWithConnection(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	ctx := testContext(t)
	key := randomName("lock-")
	holder := &Store{Pool: pool, Table: testTable(t, pool), Key: key}
	unlock, err := holder.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := lockAsync(ctx, &Store{Pool: pool, Key: key})
	waitFor(t, "Lock to wait", func() bool { return advisoryLocks(t, pool, key, false) == 1 })

	// The holder's connection dies, as when its process crashes.
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, holderPID(t, pool, key)).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend = %v, %v", ok, err)
	}
	r := receive(t, got)
	if r.err != nil {
		t.Fatalf("Lock after the holder died: %v", r.err)
	}

	// The dead holder's Save and Load fail: the lock is lost and another
	// process holds it now, so they must not run on the pool instead.
	if err := holder.Save(ctx, &oauth2.Token{AccessToken: "at"}); !errors.Is(err, ErrLockLost) {
		t.Errorf("Save after the lock connection died: %v; want ErrLockLost", err)
	}
	if tok, err := holder.Load(ctx); !errors.Is(err, ErrLockLost) {
		t.Errorf("Load after the lock connection died = %v, %v; want ErrLockLost", tok, err)
	}
	unlock()
	if n := advisoryLocks(t, pool, key, true); n != 1 {
		t.Errorf("granted locks after the dead holder's unlock = %d; want 1 (the new holder's)", n)
	}
	r.unlock()
	if n := advisoryLocks(t, pool, key, true); n != 0 {
		t.Errorf("granted locks = %d; want 0", n)
	}
	waitConnsBack(t, pool)
	// Once unlocked, the Store works on the pool again.
	if err := holder.Save(ctx, &oauth2.Token{AccessToken: "at"}); err != nil {
		t.Errorf("Save after unlock: %v", err)
	}
}

// terminate kills PostgreSQL backend pid, through a pool of its own, as
// an administrator or a failover would.
func terminate(t *testing.T, pid int32) {
	t.Helper()
	admin := testPool(t, 1)
	var ok bool
	if err := admin.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend = %v, %v", ok, err)
	}
}

// With a pool of one connection, held by the lock, a lost lock
// connection makes Load and Save fail at once with ErrLockLost, instead
// of waiting for a pool connection that the lock still holds; unlock
// gives the connection back, and the next Lock works.
func TestLockLostSmallPool(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 1)
	table := testTable(t, pool)
	ctx := testContext(t) // without the fix, Load waits until this ends
	key := randomName("lock-")
	s := &Store{Pool: pool, Table: table, Key: key}
	if err := s.Save(ctx, &oauth2.Token{AccessToken: "at-1", RefreshToken: "rt-1"}); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	terminate(t, holderPID(t, testPool(t, 1), key))

	_, lerr := s.Load(ctx)
	serr := s.Save(ctx, &oauth2.Token{AccessToken: "at-2", RefreshToken: "rt-2"})
	for _, err := range []error{lerr, serr} {
		if !errors.Is(err, ErrLockLost) || errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "pgstore: ") {
			t.Errorf("err = %v; want a pgstore error wrapping ErrLockLost, at once", err)
		}
	}
	unlock()
	// The pool drops the dead connection in the background.
	waitConnsBack(t, pool)
	// Nothing was saved without the lock; the pool recovers.
	unlock, err = s.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after a lost lock: %v", err)
	}
	defer unlock()
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "at-1" {
		t.Errorf("stored %q; want at-1: a Save ran without the lock", got.AccessToken)
	}
}

// The refresh engine on a one-connection pool whose lock connection is
// killed in the middle of the refresh: Token returns (the refresh does
// not hang until the caller's deadline), and the lock's connection is
// back in the pool afterwards.
func TestTokenSourceLockLostSmallPool(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 1)
	table := testTable(t, pool)
	ctx := testContext(t)
	key := randomName("lock-")
	store := &Store{Pool: pool, Table: table, Key: key}
	if err := store.Save(ctx, &oauth2.Token{AccessToken: "at-1", TokenType: "Bearer", RefreshToken: "rt-1", Expiry: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	admin := testPool(t, 1)
	var posts atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if posts.Add(1) == 1 {
			// The lock is held now: kill its connection.
			var pid int32
			id := uint64(lockID(key))
			if err := admin.QueryRow(r.Context(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory'
				AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1 AND granted`,
				int64(id>>32), int64(id&0xffffffff)).Scan(&pid); err != nil {
				t.Errorf("finding the lock holder: %v", err)
			} else if _, err := admin.Exec(r.Context(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Errorf("pg_terminate_backend: %v", err)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"Bearer","refresh_token":"rt-%d","expires_in":3600}`, posts.Load()+1, posts.Load()+1)
	}))
	defer ts.Close()
	src := &pandadocauth.TokenSource{
		Config: &pandadocauth.Config{ClientID: "id", ClientSecret: "secret", TokenURL: ts.URL, HTTPClient: ts.Client()},
		Store:  store,
	}
	_, err := src.TokenContext(ctx)
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		t.Fatalf("TokenContext = %v: it waited for the pool instead of failing fast", err)
	}
	t.Logf("TokenContext after the lock was lost: %v", err)
	src.Wait()
	waitConnsBack(t, pool)
}

// A refresh runs Load and Save while holding the lock: they must not
// need a second connection, or a small pool would deadlock.
func TestLoadSaveWhileLockedSmallPool(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 1)
	table := testTable(t, pool)
	ctx := testContext(t)
	s := &Store{Pool: pool, Table: table, Key: "k"}
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if tok, err := s.Load(lctx); tok != nil || err != nil {
		t.Fatalf("Load while locked = %v, %v; want nil, nil", tok, err)
	}
	want := &oauth2.Token{AccessToken: "at", RefreshToken: "rt", Expiry: time.Now().Add(time.Hour)}
	if err := s.Save(lctx, want); err != nil {
		t.Fatalf("Save while locked: %v", err)
	}
	got, err := s.Load(lctx)
	if err != nil {
		t.Fatalf("Load while locked: %v", err)
	}
	assertToken(t, got, want)
	unlock()
	// Saved for good, not only inside the lock.
	got, err = (&Store{Pool: pool, Table: table, Key: "k"}).Load(lctx)
	if err != nil {
		t.Fatal(err)
	}
	assertToken(t, got, want)
}

// A lock's session is idle while the token endpoint is called, longer
// than an idle_session_timeout set for the role or the database: the
// lock does not end with it. Once unlocked, the connection goes back to
// the pool with the timeouts it had.
func TestLockOutlivesIdleSessionTimeout(t *testing.T) {
	t.Parallel()
	admin := testPool(t, 1)
	ctx := testContext(t)
	var have int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_settings WHERE name = 'idle_session_timeout'`).Scan(&have); err != nil {
		t.Fatal(err)
	}
	if have == 0 {
		t.Skip("idle_session_timeout is PostgreSQL 14's")
	}
	timeouts := map[string]string{"idle_session_timeout": "300ms", "idle_in_transaction_session_timeout": "400ms"}
	pool := testPoolWith(t, 1, timeouts)
	table := testTable(t, admin)
	key := randomName("lock-")
	s := &Store{Pool: pool, Table: table, Key: key}
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	holder := holderPID(t, admin, key)

	// A session with the same timeout, idle from after the lock's
	// session last ran a statement, is ended by the timeout: by then the
	// lock's session has been idle longer than the timeout too.
	waitIdleSessionTimeout(t, timeouts)

	if err := s.Save(ctx, &oauth2.Token{AccessToken: "at", RefreshToken: "rt"}); err != nil {
		t.Fatalf("Save under the lock, after the idle timeout: %v", err)
	}
	if got := holderPID(t, admin, key); got != holder {
		t.Errorf("the lock is held by backend %d; want %d, the lock's session", got, holder)
	}
	unlock()
	var idle, idleInTx string
	if err := pool.QueryRow(ctx, `SELECT current_setting('idle_session_timeout'), current_setting('idle_in_transaction_session_timeout')`).Scan(&idle, &idleInTx); err != nil {
		t.Fatal(err)
	}
	if idle != "300ms" || idleInTx != "400ms" {
		t.Errorf("after unlock, the pool's connection has idle_session_timeout %s, idle_in_transaction_session_timeout %s; want 300ms, 400ms", idle, idleInTx)
	}
}

// waitIdleSessionTimeout opens a session with settings, and returns once
// PostgreSQL has ended it for being idle: the signal that the timeout has
// passed for every session idle since before. (PostgreSQL tells a session
// why it ends it, and closes it: the raw connection's read returns.)
func waitIdleSessionTimeout(t *testing.T, settings map[string]string) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(testserver.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range settings {
		cfg.RuntimeParams[k] = v
	}
	ctx := testContext(t)
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	hc.Conn.SetReadDeadline(time.Now().Add(testutil.Watchdog))
	said, err := io.ReadAll(hc.Conn)
	if err != nil {
		t.Fatalf("waiting for the idle session to be ended: %v", err)
	}
	if !strings.Contains(string(said), "idle-session timeout") {
		t.Fatalf("the idle session ended with %q; want PostgreSQL's idle-session timeout", said)
	}
}

// TestErrLockLostIsTheCores: a TokenSource recognises the lost lock and
// takes the lock again before it writes.
func TestErrLockLostIsTheCores(t *testing.T) {
	if !errors.Is(ErrLockLost, pandadocauth.ErrLockLost) {
		t.Fatal("ErrLockLost does not wrap pandadocauth.ErrLockLost")
	}
}

// TestLockLostDuringWrite: a write whose statement reached PostgreSQL
// before the lock's connection closed fails with errWriteUnknown, not
// ErrLockLost, which promises that nothing was stored (a fenced write);
// a read that fails so is ErrLockLost, and so is any write after it,
// which is refused unsent. The statement ends its own backend, so the
// connection closes while it runs.
func TestLockLostDuringWrite(t *testing.T) {
	t.Parallel()
	for _, write := range []bool{true, false} {
		t.Run(fmt.Sprintf("write=%v", write), func(t *testing.T) {
			pool := testPool(t, 0)
			ctx := testContext(t)
			s := &Store{Pool: pool, Table: testTable(t, pool), Key: randomName("lock-")}
			unlock, err := s.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer unlock()
			r := s.rows()
			err = r.do(s.Key, write, func(q querier) error {
				_, err := q.Exec(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
				return err
			})
			switch {
			case write && (!errors.Is(err, errWriteUnknown) || errors.Is(err, ErrLockLost)):
				t.Errorf("write sent before the connection closed: %v; want errWriteUnknown, not ErrLockLost", err)
			case !write && !errors.Is(err, ErrLockLost):
				t.Errorf("read sent before the connection closed: %v; want ErrLockLost", err)
			}
			err = r.do(s.Key, true, func(q querier) error {
				t.Error("a write ran on a closed lock connection")
				return nil
			})
			if !errors.Is(err, ErrLockLost) {
				t.Errorf("write after the connection closed: %v; want ErrLockLost", err)
			}
		})
	}
}
