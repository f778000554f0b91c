package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/fleettest"
)

// Many keys in one table: each key reads its own token, concurrently,
// and Delete removes one key only. Keyed shares Store's rows: a Store
// with Key k reads what Keyed saved under k.
func TestKeyedManyKeys(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	table := testTable(t, pool)
	ctx := testContext(t)
	k := &Keyed{Pool: pool, Table: table}
	const n = 200
	key := func(i int) string { return fmt.Sprintf("ws-%d", i) }
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- k.Save(ctx, key(i), &oauth2.Token{AccessToken: "at-" + key(i), RefreshToken: "rt-" + key(i), ExpiresIn: int64(i)})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		go func() {
			tok, err := k.Load(ctx, key(i))
			if err == nil && (tok == nil || tok.AccessToken != "at-"+key(i) || tok.RefreshToken != "rt-"+key(i) || tok.ExpiresIn != int64(i)) {
				err = fmt.Errorf("Load(%s) = %+v; want its own token", key(i), tok)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&rows); err != nil || rows != n {
		t.Fatalf("rows = %d, %v; want %d: one per key", rows, err, n)
	}

	if got, err := (&Store{Pool: pool, Table: table, Key: key(7)}).Load(ctx); err != nil || got == nil || got.AccessToken != "at-"+key(7) {
		t.Errorf("Store{Key: %q}.Load = %v, %v; want the token Keyed saved", key(7), got, err)
	}
	if err := k.Delete(ctx, key(7)); err != nil {
		t.Fatal(err)
	}
	if got, err := k.Load(ctx, key(7)); got != nil || err != nil {
		t.Errorf("Load after Delete = %v, %v; want nil, nil", got, err)
	}
	if got, err := k.Load(ctx, key(8)); err != nil || got == nil || got.AccessToken != "at-"+key(8) {
		t.Errorf("Load of another key after Delete = %v, %v; want its token", got, err)
	}
	if got, err := k.Load(ctx, "never-saved"); got != nil || err != nil {
		t.Errorf("Load of a missing key = %v, %v; want nil, nil", got, err)
	}
}

// With encryption, a token is bound to its key: a row moved to another
// key does not open.
func TestKeyedEncryption(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	table := testTable(t, pool)
	ctx := testContext(t)
	k := &Keyed{Pool: pool, Table: table, EncryptionKey: AESKey(strings.Repeat("k", 32))}
	if err := k.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	want := &oauth2.Token{AccessToken: "secret-at-a", RefreshToken: "secret-rt-a"}
	if err := k.Save(ctx, "a", want); err != nil {
		t.Fatal(err)
	}
	var stored string
	if err := pool.QueryRow(ctx, `SELECT access_token FROM `+table+` WHERE key = 'a'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, "secret") {
		t.Fatalf("stored access token %q is not encrypted", stored)
	}
	if got, err := k.Load(ctx, "a"); err != nil || got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken {
		t.Fatalf("Load = %v, %v; want the saved token", got, err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+table+` (key, access_token, refresh_token) SELECT 'b', access_token, refresh_token FROM `+table+` WHERE key = 'a'`); err != nil {
		t.Fatal(err)
	}
	if got, err := k.Load(ctx, "b"); err == nil {
		t.Errorf("Load of a row copied from another key = %v; want an error", got)
	} else if strings.Contains(err.Error(), "secret") {
		t.Errorf("error %q contains a token", err)
	}
	bad := &Keyed{Pool: pool, Table: table, EncryptionKey: AESKey("short")}
	if err := bad.CreateTable(ctx); err == nil {
		t.Error("CreateTable with a 5-byte key = nil; want an error")
	}
}

func TestKeyedErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	k := &Keyed{}
	_, lerr := k.Load(ctx, "a")
	_, kerr := k.Lock(ctx, "a")
	tok := &oauth2.Token{AccessToken: "at"}
	for _, err := range []error{lerr, k.Save(ctx, "a", tok), k.Delete(ctx, "a"), k.CreateTable(ctx), kerr} {
		if err == nil || err.Error() != "pgstore: Keyed.Pool is nil" {
			t.Errorf("err = %v; want pgstore: Keyed.Pool is nil", err)
		}
	}
	bad := &Keyed{Pool: testPool(t, 0), Table: "a..b"}
	if _, err := bad.Load(ctx, "a"); err == nil || !strings.Contains(err.Error(), "pgstore: Keyed.Table") {
		t.Errorf("Load with a bad table = %v; want pgstore: Keyed.Table ...", err)
	}
}

func TestKeyedRedacted(t *testing.T) {
	t.Parallel()
	const secret = "0123456789abcdef0123456789abcdef"
	k := &Keyed{Table: "t", EncryptionKey: AESKey(secret), EncryptionKeys: []AESKey{AESKey(secret)}}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("store", "k", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%#v", k), fmt.Sprintf("%x", k), fmt.Sprintf("%+v", k), fmt.Sprintf("%v", k.EncryptionKeys), b.String()} {
		if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprintf("%x", secret)) {
			t.Errorf("%q shows the key", s)
		}
	}
	if got := k.String(); got != `pgstore.Keyed{Table: "t", encryption keys: 2}` {
		t.Errorf("String = %s", got)
	}
}

// keyedLockAsync calls k.Lock in a goroutine and delivers its result.
func keyedLockAsync(ctx context.Context, k *Keyed, key string) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		unlock, err := k.Lock(ctx, key)
		ch <- lockResult{unlock, err}
	}()
	return ch
}

// One lock per key: a held key blocks Locks of that key, from another
// Keyed and from a Store of that Key, and no Lock of another key.
func TestKeyedLockPerKey(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 8)
	obs := testPool(t, 2) // to watch pg_locks while pool's connections wait
	ctx := testContext(t)
	a, b := randomName("lock-a-"), randomName("lock-b-")
	first := &Keyed{Pool: pool}
	second := &Keyed{Pool: pool} // as in another process

	unlockA, err := first.Lock(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlockA) // so that a failed test does not leave the pool unclosable
	got := keyedLockAsync(ctx, second, a)
	waitFor(t, "the second Lock of a to wait", func() bool { return advisoryLocks(t, obs, a, false) == 1 })
	fromStore := lockAsync(ctx, &Store{Pool: pool, Key: a})
	waitFor(t, "a Store's Lock of a to wait", func() bool { return advisoryLocks(t, obs, a, false) == 2 })

	// b is free, from the same Keyed and from another, while a is held
	// and waited for.
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	unlockB, err := first.Lock(bctx, b)
	if err != nil {
		t.Fatalf("Lock of b while a is held: %v", err)
	}
	if n := advisoryLocks(t, obs, b, true); n != 1 {
		t.Errorf("granted locks of b = %d; want 1", n)
	}
	unlockB()
	unlockB2, err := second.Lock(bctx, b)
	if err != nil {
		t.Fatalf("Lock of b from another Keyed while a is waited for: %v", err)
	}
	unlockB2()

	select {
	case r := <-got:
		t.Fatalf("second Lock of a returned (err %v) while the first held it", r.err)
	case r := <-fromStore:
		t.Fatalf("Store Lock of a returned (err %v) while a Keyed held it", r.err)
	default:
	}
	unlockA()
	unlockA() // a second call does nothing
	// One of the two waiters gets a, then the other.
	var r lockResult
	select {
	case r = <-got:
	case r = <-fromStore:
	case <-time.After(10 * time.Second):
		t.Fatal("no waiter got a after unlock")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if n := advisoryLocks(t, obs, a, true); n != 1 {
		t.Errorf("granted locks of a = %d; want 1", n)
	}
	r.unlock()
	select {
	case r = <-got:
	case r = <-fromStore:
	case <-time.After(10 * time.Second):
		t.Fatal("the last waiter did not get a")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.unlock()
	waitConnsBack(t, pool)
}

// Each locked key's Load and Save run on its own lock's connection: with
// a pool of two, both held by locks, they still run; a lost lock
// connection fails its own key with ErrLockLost and not the other key.
func TestKeyedLockedKeysSmallPool(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 2)
	table := testTable(t, pool)
	ctx := testContext(t)
	k := &Keyed{Pool: pool, Table: table}
	a, b := randomName("lock-a-"), randomName("lock-b-")
	unlockA, err := k.Lock(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlockA) // so that a failed test does not leave the pool unclosable
	unlockB, err := k.Lock(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlockB) // so that a failed test does not leave the pool unclosable
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, key := range []string{a, b} {
		if err := k.Save(lctx, key, &oauth2.Token{AccessToken: "at-" + key}); err != nil {
			t.Fatalf("Save(%s) while locked: %v", key, err)
		}
		if tok, err := k.Load(lctx, key); err != nil || tok.AccessToken != "at-"+key {
			t.Fatalf("Load(%s) while locked = %v, %v", key, tok, err)
		}
	}

	terminate(t, holderPID(t, testPool(t, 1), a))
	// The first Save after the death may have sent its statement before
	// the client saw the connection close: then it cannot know whether
	// it was stored, and says so rather than claim a fenced write. Either
	// way it fails, and the next one is refused unsent.
	if err := k.Save(lctx, a, &oauth2.Token{AccessToken: "late"}); !errors.Is(err, ErrLockLost) && !errors.Is(err, errWriteUnknown) {
		t.Errorf("Save of a after its lock connection died: %v; want ErrLockLost or errWriteUnknown", err)
	}
	if err := k.Save(lctx, a, &oauth2.Token{AccessToken: "late"}); !errors.Is(err, ErrLockLost) {
		t.Errorf("second Save of a after its lock connection died: %v; want ErrLockLost", err)
	}
	if tok, err := k.Load(lctx, a); !errors.Is(err, ErrLockLost) {
		t.Errorf("Load of a after its lock connection died = %v, %v; want ErrLockLost", tok, err)
	}
	if tok, err := k.Load(lctx, b); err != nil || tok.AccessToken != "at-"+b {
		t.Errorf("Load of b, whose lock is alive = %v, %v; want its token", tok, err)
	}
	unlockA()
	unlockB()
	waitConnsBack(t, pool)
	if tok, err := k.Load(lctx, a); err != nil || tok.AccessToken != "at-"+a {
		t.Errorf("Load of a after unlock = %v, %v; want what was saved under the lock", tok, err)
	}
}

// Many grants through two Grants (two replicas, each with a pool and a
// Keyed of its own) on one table, against a token endpoint that rotates
// refresh tokens: when every access token expires together and both
// replicas serve every grant at once, each grant is refreshed exactly
// once fleet-wide, and nothing fails, with pools far smaller than the
// refresh cap.
func TestKeyedGrants(t *testing.T) {
	t.Parallel()
	table := testTable(t, testPool(t, 0))
	prefix := randomName("grant-") + "-"
	fleettest.Grants(t, &Keyed{Pool: testPool(t, 0), Table: table},
		func() pandadocauth.KeyedStore { return &Keyed{Pool: testPool(t, 3), Table: table} },
		func(i int) string { return fmt.Sprint(prefix, i) })
}
